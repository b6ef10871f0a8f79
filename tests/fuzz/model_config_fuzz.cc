// libFuzzer target: the model config's text parser and its validation
// (ModelSpec::FromConfig) on arbitrary text. A config that validates must
// give a consistent spec: tensor shapes within the width limit.

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "loader/model_loader.h"
#include "model/limits.h"
#include "model/model_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto config =
      masknet::ParseModelConfig("fuzz.pbtxt", absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!config.ok()) return 0;
  const auto spec = masknet::ModelSpec::FromConfig(*config);
  if (!spec.ok()) return 0;
  for (const masknet::TensorSpec& t : spec->ExpectedTensors()) {
    for (const int64_t dim : t.shape) {
      if (dim < 1) __builtin_trap();
    }
  }
  if (spec->FlopsPerCandidate() < 0 || spec->ParameterCount() < 0) __builtin_trap();
  return 0;
}
