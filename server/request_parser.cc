#include "server/request_parser.h"

#include "absl/strings/str_cat.h"

namespace masknet {
namespace {

FeatureValues View(const serving::v1::Features& f) {
  return FeatureValues{
      absl::MakeConstSpan(f.dense().data(), f.dense().size()),
      absl::MakeConstSpan(f.ids().data(), f.ids().size()),
      absl::MakeConstSpan(f.id_counts().data(), f.id_counts().size())};
}

}  // namespace

absl::StatusOr<RequestFeatures> ParseRankRequest(const serving::v1::RankRequest& request,
                                                 const FeatureSchema& schema,
                                                 int64_t max_candidates) {
  if (request.candidates_size() > max_candidates) {
    return absl::InvalidArgumentError(absl::StrCat(
        "candidates: ", request.candidates_size(), " candidates, more than the server's limit of ",
        max_candidates, " (--max_candidates); split the request"));
  }
  RequestFeatures features;
  features.context = View(request.context());
  if (auto s = schema.Validate(Scope::kContext, features.context, "context"); !s.ok()) return s;
  features.candidates.reserve(request.candidates_size());
  for (int i = 0; i < request.candidates_size(); ++i) {
    FeatureValues values = View(request.candidates(i).features());
    if (auto s = schema.Validate(Scope::kCandidate, values, absl::StrCat("candidates[", i, "].features"));
        !s.ok()) {
      return s;
    }
    features.candidates.push_back(values);
  }
  return features;
}

}  // namespace masknet
