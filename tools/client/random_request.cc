#include "tools/client/random_request.h"

namespace masknet {
namespace {

using serving::v1::FeatureField;
using serving::v1::Features;

Features RandomFeatures(const google::protobuf::RepeatedPtrField<FeatureField>& fields, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Features out;
  for (const FeatureField& f : fields) {
    if (f.kind() == FeatureField::DENSE) {
      for (uint32_t i = 0; i < f.width(); ++i) out.add_dense(normal(rng));
    } else {
      out.add_ids(static_cast<int64_t>(rng() % f.num_buckets()));
    }
  }
  return out;
}

}  // namespace

serving::v1::RankRequest RandomRankRequest(const serving::v1::ModelInfo& info, int candidates,
                                           std::mt19937_64& rng) {
  serving::v1::RankRequest request;
  request.set_model_name(info.model_name());
  request.set_model_version(info.model_version());
  *request.mutable_context() = RandomFeatures(info.context_fields(), rng);
  for (int i = 0; i < candidates; ++i) {
    auto* c = request.add_candidates();
    c->set_id(i + 1);
    *c->mutable_features() = RandomFeatures(info.candidate_fields(), rng);
  }
  return request;
}

}  // namespace masknet
