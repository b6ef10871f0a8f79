#ifndef MASKNET_SERVER_DEFAULTS_H_
#define MASKNET_SERVER_DEFAULTS_H_

#include <cstdint>

#include "absl/time/time.h"
#include "model/limits.h"

// The server's limits' defaults, in one place: the flags of main.cc and the
// Options structs of server/ take them from here (the batching queues' from
// BatchScheduler::QueueOptions). README's flag table repeats them for
// readers.
namespace masknet::defaults {

inline constexpr int32_t kPort = 50051;
inline constexpr int32_t kMetricsPort = 8080;
inline constexpr int64_t kMaxCandidates = 8192;
// gRPC's own 4 MiB is too small: 500 twitter-recap candidates are ~4 MB.
inline constexpr int64_t kMaxRequestBytes = int64_t{64} << 20;
inline constexpr int64_t kMaxBatchSize = limits::kDefaultMaxBatchSize;
inline constexpr int64_t kMaxWorkspaceBytes = limits::kDefaultMaxWorkspaceBytes;
// Server-wide: Rank calls held at once (each holds gRPC's call state and its
// request beyond what the queues count).
inline constexpr int64_t kMaxCallsInFlight = 20000;
// Per client connection (HTTP/2 streams); gRPC's own default is unlimited.
inline constexpr int32_t kMaxConcurrentStreams = 1000;
// Free heap memory kept before it is returned to the system (after a flood
// of calls passed, say); checked every kMemoryReleaseInterval.
inline constexpr int64_t kMaxIdleHeapBytes = int64_t{64} << 20;
inline constexpr absl::Duration kMemoryReleaseInterval = absl::Seconds(1);
// OpenMP threads per worker's forward pass.
inline constexpr int kIntraOpThreads = 1;
inline constexpr int64_t kShutdownGraceSeconds = 25;
// A retrained model is picked up within this; scanning a few directories is
// cheap.
inline constexpr absl::Duration kModelPollInterval = absl::Seconds(10);

}  // namespace masknet::defaults

#endif  // MASKNET_SERVER_DEFAULTS_H_
