#ifndef MASKNET_MODEL_LIMITS_H_
#define MASKNET_MODEL_LIMITS_H_

#include <cstdint>

// Bounds a model config must respect (docs/MODEL_FORMAT.md, "Limits checked
// when loading"). They keep a hostile or corrupt config from asking for
// absurd allocations; real models are far inside them.
namespace masknet::limits {

inline constexpr int kMaxFields = 4096;
inline constexpr int kMaxBlocks = 64;
inline constexpr int kMaxTasks = 64;
inline constexpr int kMaxLayers = 64;
// Widths, sizes and layer outputs.
inline constexpr int64_t kMaxWidth = int64_t{1} << 20;
inline constexpr uint64_t kMaxBuckets = uint64_t{1} << 32;
inline constexpr uint32_t kMaxIdsPerField = 4096;
// Largest max_batch_size a model can be built for.
inline constexpr int64_t kMaxBatchSize = 16384;
// Most OpenMP threads one forward pass may use.
inline constexpr int kMaxThreads = 1024;

}  // namespace masknet::limits

#endif  // MASKNET_MODEL_LIMITS_H_
