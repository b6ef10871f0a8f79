#ifndef MASKNET_TOOLS_CLIENT_RANDOM_REQUEST_H_
#define MASKNET_TOOLS_CLIENT_RANDOM_REQUEST_H_

#include <random>

#include "masknet/serving/v1/ranker.pb.h"

namespace masknet {

// A Rank request for the model `info` describes, with `candidates`
// candidates (ids 1, 2, ...) of random valid values: one id per categorical
// field (so id_counts stays empty) and standard-normal dense values. The
// request names info's model and version.
serving::v1::RankRequest RandomRankRequest(const serving::v1::ModelInfo& info, int candidates,
                                           std::mt19937_64& rng);

}  // namespace masknet

#endif  // MASKNET_TOOLS_CLIENT_RANDOM_REQUEST_H_
