#include "model/feature_schema.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/limits.h"

namespace masknet {
namespace {

using config::v1::BucketRule;
using config::v1::CategoricalField;
using config::v1::DenseField;
using config::v1::Field;

absl::Status CheckRange(absl::string_view what, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be in [", lo, ", ", hi, "], got ", value));
  }
  return absl::OkStatus();
}

absl::Status ValidateDense(const DenseField& d) {
  if (auto s = CheckRange("dense.width", d.width(), 1, limits::kMaxWidth); !s.ok()) return s;
  if (d.embedding_dim() != 0) {
    if (auto s = CheckRange("dense.embedding_dim", d.embedding_dim(), 1, limits::kMaxWidth); !s.ok()) return s;
    if (d.width() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("dense.embedding_dim embeds a scalar: dense.width must be 1, got ", d.width()));
    }
  }
  if (d.non_finite() != config::v1::REJECT && d.non_finite() != config::v1::REPLACE_WITH_ZERO) {
    return absl::InvalidArgumentError(
        "dense.non_finite must be REJECT or REPLACE_WITH_ZERO (the policy for NaN and Inf "
        "has to be declared)");
  }
  if (!config::v1::Transform_IsValid(d.transform())) {
    return absl::InvalidArgumentError(absl::StrCat("dense.transform: unknown value ", d.transform()));
  }
  if (d.has_batch_norm() && !(d.batch_norm().eps() > 0 && d.batch_norm().eps() <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dense.batch_norm.eps must be in (0, 1], got ", d.batch_norm().eps()));
  }
  if (d.has_clamp_min() && !std::isfinite(d.clamp_min())) {
    return absl::InvalidArgumentError("dense.clamp_min must be finite");
  }
  if (d.has_clamp_max() && !std::isfinite(d.clamp_max())) {
    return absl::InvalidArgumentError("dense.clamp_max must be finite");
  }
  if (d.has_clamp_min() && d.has_clamp_max() && d.clamp_min() > d.clamp_max()) {
    return absl::InvalidArgumentError(absl::StrCat("dense.clamp_min (", d.clamp_min(),
                                                   ") is greater than dense.clamp_max (",
                                                   d.clamp_max(), ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCategorical(const CategoricalField& c) {
  if (c.num_buckets() < 1 || c.num_buckets() > limits::kMaxBuckets) {
    return absl::InvalidArgumentError(absl::StrCat("categorical.num_buckets must be in [1, ",
                                                   limits::kMaxBuckets, "], got ",
                                                   c.num_buckets()));
  }
  if (auto s = CheckRange("categorical.embedding_dim", c.embedding_dim(), 1, limits::kMaxWidth);
      !s.ok()) {
    return s;
  }
  if (c.bucket_rule() != config::v1::MODULO && c.bucket_rule() != config::v1::IDENTITY) {
    return absl::InvalidArgumentError("categorical.bucket_rule must be MODULO or IDENTITY");
  }
  if (c.pooling() != config::v1::SUM && c.pooling() != config::v1::MEAN) {
    return absl::InvalidArgumentError("categorical.pooling must be SUM or MEAN");
  }
  if (c.max_ids() > limits::kMaxIdsPerField) {
    return absl::InvalidArgumentError(absl::StrCat("categorical.max_ids must be at most ",
                                                   limits::kMaxIdsPerField, ", got ",
                                                   c.max_ids()));
  }
  return absl::OkStatus();
}

std::string DescribeDenseFields(const FeatureSchema& schema, Scope scope) {
  std::vector<std::string> parts;
  for (int i : schema.scope(scope).fields) {
    const FieldSpec& f = schema.fields()[i];
    if (f.dense) parts.push_back(absl::StrCat(f.config.name(), ":", f.values));
  }
  return absl::StrJoin(parts, ", ");
}

std::string DescribeCategoricalFields(const FeatureSchema& schema, Scope scope) {
  std::vector<std::string> parts;
  for (int i : schema.scope(scope).categorical_fields) parts.push_back(schema.fields()[i].config.name());
  return absl::StrJoin(parts, ", ");
}

}  // namespace

bool IsValidName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
      return false;
    }
  }
  return true;
}

uint32_t MaxIds(const CategoricalField& field) { return field.max_ids() == 0 ? 1 : field.max_ids(); }

absl::string_view ScopeName(Scope scope) { return scope == Scope::kContext ? "context" : "candidate"; }

absl::StatusOr<FeatureSchema> FeatureSchema::Create(const config::v1::ModelConfig& config) {
  if (config.fields().empty()) return absl::InvalidArgumentError("fields: the model has no input fields");
  if (config.fields_size() > limits::kMaxFields) {
    return absl::InvalidArgumentError(
        absl::StrCat("fields: ", config.fields_size(), " fields, at most ", limits::kMaxFields));
  }
  FeatureSchema schema;
  absl::flat_hash_set<std::string> names;
  for (int i = 0; i < config.fields_size(); ++i) {
    const Field& f = config.fields(i);
    std::string where = absl::StrCat("fields[", i, "] ('", f.name(), "')");
    if (!IsValidName(f.name())) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", kNameRule));
    }
    if (!names.insert(f.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate field name"));
    }
    FieldSpec spec;
    spec.config = f;
    switch (f.scope()) {
      case config::v1::CONTEXT: spec.scope = Scope::kContext; break;
      case config::v1::CANDIDATE: spec.scope = Scope::kCandidate; break;
      default:
        return absl::InvalidArgumentError(absl::StrCat(where, ": scope must be CONTEXT or CANDIDATE"));
    }
    ScopeLayout& layout = schema.scopes_[static_cast<int>(spec.scope)];
    if (f.has_dense()) {
      if (auto s = ValidateDense(f.dense()); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
      }
      spec.dense = true;
      spec.values = f.dense().width();
      spec.width = f.dense().embedding_dim() != 0 ? f.dense().embedding_dim() : f.dense().width();
      spec.scope_index = layout.dense_width;
      layout.dense_width += spec.values;
    } else if (f.has_categorical()) {
      if (auto s = ValidateCategorical(f.categorical()); !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
      }
      spec.dense = false;
      spec.width = f.categorical().embedding_dim();
      spec.scope_index = static_cast<int64_t>(layout.categorical_fields.size());
      layout.categorical_fields.push_back(i);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": set either dense or categorical"));
    }
    spec.offset = schema.instance_width_;
    schema.instance_width_ += spec.width;
    if (schema.instance_width_ > limits::kMaxWidth) {
      return absl::InvalidArgumentError(absl::StrCat(
          "fields: the instance vector is wider than ", limits::kMaxWidth, " at ", where));
    }
    layout.fields.push_back(i);
    schema.fields_.push_back(std::move(spec));
  }
  return schema;
}

int FeatureSchema::FindField(absl::string_view name) const {
  for (int i = 0; i < static_cast<int>(fields_.size()); ++i) {
    if (fields_[i].config.name() == name) return i;
  }
  return -1;
}

int FeatureSchema::FieldAt(int64_t offset) const {
  auto it = std::upper_bound(fields_.begin(), fields_.end(), offset,
                             [](int64_t o, const FieldSpec& f) { return o < f.offset; });
  return static_cast<int>(it - fields_.begin()) - 1;
}

absl::Status FeatureSchema::Validate(Scope scope, const FeatureValues& values,
                                     absl::string_view where) const {
  const ScopeLayout& layout = this->scope(scope);
  if (static_cast<int64_t>(values.dense.size()) != layout.dense_width) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": dense has ", values.dense.size(), " values, but the ", ScopeName(scope),
        " fields need ", layout.dense_width, " (", DescribeDenseFields(*this, scope), ")"));
  }
  const size_t num_categorical = layout.categorical_fields.size();
  if (values.id_counts.empty()) {
    if (values.ids.size() != num_categorical) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": ids has ", values.ids.size(), " ids, but id_counts is empty, so exactly one id is ",
          "needed for each of the ", num_categorical, " ", ScopeName(scope),
          " categorical fields (", DescribeCategoricalFields(*this, scope), ")"));
    }
  } else {
    if (values.id_counts.size() != num_categorical) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": id_counts has ", values.id_counts.size(), " entries, but there are ",
          num_categorical, " ", ScopeName(scope), " categorical fields (",
          DescribeCategoricalFields(*this, scope), ")"));
    }
    uint64_t total = 0;
    for (uint32_t c : values.id_counts) total += c;
    if (total != values.ids.size()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ids has ", values.ids.size(),
                                                     " ids, but id_counts add up to ", total));
    }
  }

  size_t id_pos = 0;
  for (size_t k = 0; k < num_categorical; ++k) {
    const FieldSpec& f = fields_[layout.categorical_fields[k]];
    const CategoricalField& c = f.config.categorical();
    const uint32_t count = values.id_counts.empty() ? 1 : values.id_counts[k];
    if (count > MaxIds(c)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": field '", f.config.name(), "' has ",
                                                     count, " ids; at most ", MaxIds(c),
                                                     " are allowed"));
    }
    if (count == 0 && !c.allow_empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": field '", f.config.name(), "' has no ids; it needs at least one"));
    }
    if (c.bucket_rule() == config::v1::IDENTITY) {
      const int64_t buckets = static_cast<int64_t>(c.num_buckets());
      for (uint32_t j = 0; j < count; ++j) {
        const int64_t id = values.ids[id_pos + j];
        if (id < 0 || id >= buckets) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": field '", f.config.name(), "' id ", id, " is outside [0, ", buckets,
              ") (bucket_rule IDENTITY)"));
        }
      }
    }
    id_pos += count;
  }

  for (int i : layout.fields) {
    const FieldSpec& f = fields_[i];
    if (!f.dense || f.config.dense().non_finite() != config::v1::REJECT) continue;
    const float* v = values.dense.data() + f.scope_index;
    for (int64_t j = 0; j < f.values; ++j) {
      if (!std::isfinite(v[j])) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": field '", f.config.name(), "' value ", j, " is ", v[j],
            "; the field rejects NaN and Inf (non_finite: REJECT)"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace masknet
