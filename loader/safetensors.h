#ifndef MASKNET_LOADER_SAFETENSORS_H_
#define MASKNET_LOADER_SAFETENSORS_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "model/tensor.h"

namespace masknet {

// Largest JSON header accepted (safetensors' own limit).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// Parses a safetensors file held in memory into fp32 tensors. F32 tensors
// are copied; BF16 tensors are widened. `file_name` only labels errors.
//
// Errors are INVALID_ARGUMENT with a message starting with `file_name` and
// naming the tensor: a file shorter than its header, malformed header JSON,
// unsupported dtype, negative or absurd shape, data_offsets outside the data
// or not matching the shape, tensors whose bytes overlap.
absl::StatusOr<TensorMap> ParseSafetensors(absl::string_view file_name, absl::string_view bytes);

}  // namespace masknet

#endif  // MASKNET_LOADER_SAFETENSORS_H_
