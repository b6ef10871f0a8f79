#ifndef MASKNET_MODEL_FEATURE_ASSEMBLY_H_
#define MASKNET_MODEL_FEATURE_ASSEMBLY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/feature_schema.h"
#include "model/batch_norm.h"
#include "model/model_spec.h"
#include "model/tensor.h"

namespace masknet {

// What feature assembly counts, per field: values it had to mend, and values
// outside what the model's tables or ranges hold.
enum class InputProblem {
  kNonFiniteReplaced = 0,  // NaN or Inf in a REPLACE_WITH_ZERO dense field, replaced by 0
  kClamped = 1,            // a dense value its field's clamp_min/clamp_max changed
  kOutOfVocabulary = 2,    // an id outside [0, num_buckets) of a MODULO field, wrapped into it
  kEmptyIds = 3,           // an empty id list (allow_empty fields)
};
inline constexpr int kInputProblems = 4;
// "non_finite_replaced", "clamped", "out_of_vocabulary", "empty_ids".
const char* InputProblemName(InputProblem problem);
// Whether field `f` can have `problem` at all (others are refused by
// validation, or cannot happen): a dense field whose non-finite values are
// replaced; a dense field with a clamp; a categorical MODULO field; a
// categorical field with allow_empty.
bool CanHaveProblem(const FieldSpec& f, InputProblem problem);

// Counts of input problems of one model, [field index * kInputProblems +
// problem], field indices as in FeatureSchema::fields().
using InputCounts = std::vector<int64_t>;

// Builds rows of the instance vector V from request values: dense
// transforms, embedding lookups with pooling, and the input LayerNorms.
// Context fields (and input norms over context fields only) are computed
// once per request and batch into a context row; candidate rows copy them.
// Immutable after Create; safe for concurrent use.
class FeatureAssembler {
 public:
  // Takes the field and input-norm tensors out of `weights`.
  // REQUIRES: `weights` holds spec.ExpectedTensors() with the right shapes.
  static absl::StatusOr<FeatureAssembler> Create(const ModelSpec& spec, TensorMap& weights);

  // Writes the context fields' part of a V row into `context_row` (width
  // instance_width(); other positions are left untouched).
  // REQUIRES: schema.Validate(kContext, context) is OK. Adds the values'
  // problems to `counts` (InputCounts of this model's schema) if not null.
  void AssembleContext(const FeatureValues& context, float* context_row, int64_t* counts = nullptr) const;

  // Writes a full V row for one candidate, taking the context part from
  // `context_row` (as filled by AssembleContext).
  // REQUIRES: schema.Validate(kCandidate, candidate) is OK. Counts as
  // AssembleContext.
  void AssembleCandidate(const float* context_row, const FeatureValues& candidate, float* row,
                         int64_t* counts = nullptr) const;

  // For a candidate whose row came out non-finite: an INVALID_ARGUMENT
  // naming the first value whose field transform overflowed float32, as
  // "<where>: field 'f' value j (<input>) overflows float32 in the field's
  // transform", where <where> is "context" or `candidate_where`; OK if none
  // did. Assembles the values again, without the input norms.
  absl::Status FindOverflow(const FeatureValues& context, const FeatureValues& candidate,
                            const std::string& candidate_where) const;

 private:
  struct Field {
    const FieldSpec* spec;
    // Dense: folded normalization (empty when none).
    AffineMap affine;
    // Categorical: the table; embedded dense: the vector.
    std::vector<float> embedding;
  };
  struct Norm {
    const InputNormSpec* spec;
    std::vector<float> gamma, beta;
  };
  struct FieldRun {  // adjacent fields' positions in V
    int64_t offset, width;
  };

  // Adds the values' problems to `counts` if not null (a build of the loop
  // for each: uncounted assembly pays nothing for counting).
  void AssembleScope(Scope scope, const FeatureValues& values, float* row, int64_t* counts) const;
  template <bool kCount>
  void AssembleScope(Scope scope, const FeatureValues& values, float* row, int64_t* counts) const;
  void ApplyNorms(bool context_only, float* row) const;

  std::vector<Field> fields_;
  std::vector<Norm> norms_;
  std::vector<FieldRun> context_runs_;  // maximal runs of context fields in V
  const FeatureSchema* schema_ = nullptr;
};

}  // namespace masknet

#endif  // MASKNET_MODEL_FEATURE_ASSEMBLY_H_
