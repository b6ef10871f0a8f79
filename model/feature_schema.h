#ifndef MASKNET_MODEL_FEATURE_SCHEMA_H_
#define MASKNET_MODEL_FEATURE_SCHEMA_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "masknet/config/v1/model_config.pb.h"

namespace masknet {

// Which part of a request a field's values come from.
enum class Scope { kContext = 0, kCandidate = 1 };

// The feature values of one scope instance (the request context or one
// candidate), laid out as in ranker.proto's Features. A view: the caller owns
// the data and keeps it alive while the view is used.
struct FeatureValues {
  absl::Span<const float> dense;
  absl::Span<const int64_t> ids;
  // Empty: exactly one id per categorical field of the scope.
  absl::Span<const uint32_t> id_counts;
};

// One input field with its place in the instance vector V and in its scope's
// Features.
struct FieldSpec {
  config::v1::Field config;
  Scope scope;
  bool dense;
  // Numbers the field contributes to V: dense width (embedding_dim for an
  // embedded dense field) or embedding dim.
  int64_t width;
  // Dense: numbers it takes from the scope's Features.dense (dense.width).
  int64_t values = 0;
  // First position of the field in V.
  int64_t offset;
  // Dense: first position in the scope's Features.dense.
  // Categorical: index in the scope's id_counts.
  int64_t scope_index;
};

// The fields of one scope, in schema order.
struct ScopeLayout {
  std::vector<int> fields;              // indices into FeatureSchema::fields()
  std::vector<int> categorical_fields;  // the categorical subset
  int64_t dense_width = 0;              // length of Features.dense
};

// The model's input fields: where each value of a request goes in V, and
// whether a request's values are acceptable. Immutable after Create; safe for
// concurrent use.
class FeatureSchema {
 public:
  // Validates config.fields (names, kinds, widths, options) and lays them
  // out. Errors are INVALID_ARGUMENT naming the field.
  static absl::StatusOr<FeatureSchema> Create(const config::v1::ModelConfig& config);

  const std::vector<FieldSpec>& fields() const { return fields_; }
  const ScopeLayout& scope(Scope s) const { return scopes_[static_cast<int>(s)]; }
  // Width of V.
  int64_t instance_width() const { return instance_width_; }
  // Index of the field called `name`, or -1.
  int FindField(absl::string_view name) const;
  // Index of the field holding position `offset` of V.
  // REQUIRES: 0 <= offset < instance_width().
  int FieldAt(int64_t offset) const;

  // Checks one scope instance's values: counts of dense values, ids and
  // id_counts, ids per field against max_ids/allow_empty, ids against
  // IDENTITY ranges, and non-finite values against each field's policy.
  // Returns OK or INVALID_ARGUMENT whose message starts with `where` (e.g.
  // "candidates[3]") and names the field.
  absl::Status Validate(Scope scope, const FeatureValues& values, absl::string_view where) const;

 private:
  std::vector<FieldSpec> fields_;
  ScopeLayout scopes_[2];
  int64_t instance_width_ = 0;
};

// Whether `name` can name a field, task or input norm: 1-128 letters, digits
// or '_', not starting with a digit (it becomes part of tensor names).
bool IsValidName(absl::string_view name);
// What IsValidName requires, for error messages.
inline constexpr char kNameRule[] = "name must be 1-128 letters, digits or '_', not starting with a digit";

// Most ids one request may send for a categorical field.
uint32_t MaxIds(const config::v1::CategoricalField& field);

// "context" or "candidate".
absl::string_view ScopeName(Scope scope);

}  // namespace masknet

#endif  // MASKNET_MODEL_FEATURE_SCHEMA_H_
