#ifndef MASKNET_LOADER_SAFETENSORS_H_
#define MASKNET_LOADER_SAFETENSORS_H_

#include <string>

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

// Reads the safetensors file `path` as ParseSafetensors would parse its
// bytes, reading each tensor straight into its values: loading holds no copy
// of the whole file. Errors as ParseSafetensors, and NOT_FOUND for a missing
// file, UNAVAILABLE when it cannot be read, INVALID_ARGUMENT when it ends
// early (truncated while being read).
absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path);

}  // namespace masknet

#endif  // MASKNET_LOADER_SAFETENSORS_H_
