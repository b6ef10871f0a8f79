#ifndef MASKNET_SERVER_DEFAULTS_H_
#define MASKNET_SERVER_DEFAULTS_H_

#include <cstdint>

// The server's limits' defaults, in one place: the flags of main.cc and the
// Options structs of server/ take them from here.
namespace masknet::defaults {

inline constexpr int32_t kPort = 50051;
inline constexpr int64_t kMaxCandidates = 8192;
// gRPC's own 4 MiB is too small: 500 twitter-recap candidates are ~4 MB.
inline constexpr int64_t kMaxRequestBytes = int64_t{64} << 20;
inline constexpr int64_t kMaxBatchSize = 256;
inline constexpr int64_t kMaxQueuedCandidates = 65536;
inline constexpr int64_t kMaxWorkspaceBytes = int64_t{2} << 30;
inline constexpr int64_t kShutdownGraceSeconds = 25;

}  // namespace masknet::defaults

#endif  // MASKNET_SERVER_DEFAULTS_H_
