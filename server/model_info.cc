#include "server/model_info.h"

#include <cstdint>

#include "model/feature_schema.h"
#include "model/masknet_model.h"

namespace masknet {
namespace {

using serving::v1::FeatureField;

void DescribeField(const FieldSpec& f, FeatureField* out) {
  out->set_name(f.config.name());
  if (f.dense) {
    out->set_width(static_cast<uint32_t>(f.values));
    out->set_embedding_dim(f.config.dense().embedding_dim());
    out->set_kind(FeatureField::DENSE);
    out->set_accepts_non_finite(f.config.dense().non_finite() == config::v1::REPLACE_WITH_ZERO);
  } else {
    const auto& c = f.config.categorical();
    out->set_width(static_cast<uint32_t>(f.width));
    out->set_kind(FeatureField::CATEGORICAL);
    out->set_num_buckets(c.num_buckets());
    out->set_max_ids(MaxIds(c));
    out->set_allow_empty(c.allow_empty());
  }
}

}  // namespace

serving::v1::ModelInfo DescribeModel(const Servable& servable) {
  const ModelSpec& spec = servable.model->spec();
  serving::v1::ModelInfo info;
  info.set_model_name(servable.name);
  info.set_model_version(servable.version);
  for (const FieldSpec& f : spec.schema.fields()) {
    DescribeField(f, f.scope == Scope::kContext ? info.add_context_fields() : info.add_candidate_fields());
  }
  for (const TaskSpec& t : spec.tasks) info.add_tasks(t.name);
  info.set_parameter_count(spec.ParameterCount());
  info.set_flops_per_candidate(spec.FlopsPerCandidate());
  info.set_description(servable.config.description());
  info.set_precision(PrecisionName(servable.model->precision()));
  info.mutable_metadata()->insert(servable.config.metadata().begin(), servable.config.metadata().end());
  return info;
}

}  // namespace masknet
