// libFuzzer target: the safetensors parser on arbitrary bytes. A parse must
// end in tensors whose sizes match their shapes, or in an error.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "loader/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto tensors = masknet::ParseSafetensors(
      "fuzz.safetensors", absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!tensors.ok()) return 0;
  for (const auto& [name, tensor] : *tensors) {
    if (static_cast<int64_t>(tensor.values.size()) != tensor.num_elements()) __builtin_trap();
  }
  return 0;
}
