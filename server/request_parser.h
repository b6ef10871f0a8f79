#ifndef MASKNET_SERVER_REQUEST_PARSER_H_
#define MASKNET_SERVER_REQUEST_PARSER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "masknet/serving/v1/ranker.pb.h"
#include "model/feature_schema.h"
#include "model/masknet_model.h"

namespace masknet {

// Checks a RankRequest against a model's schema and returns views of its
// feature values. The views point into `request`, which must outlive them.
// Errors are INVALID_ARGUMENT: more than `max_candidates` candidates, or
// values that do not fit the schema, the message naming the candidate index
// (or "context") and the field.
absl::StatusOr<RequestFeatures> ParseRankRequest(const serving::v1::RankRequest& request,
                                                 const FeatureSchema& schema,
                                                 int64_t max_candidates);

}  // namespace masknet

#endif  // MASKNET_SERVER_REQUEST_PARSER_H_
