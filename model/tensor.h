#ifndef MASKNET_MODEL_TENSOR_H_
#define MASKNET_MODEL_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace masknet {

// A dense fp32 tensor in row-major order. Plain value type.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;

  int64_t num_elements() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Weights by tensor name (the names of docs/MODEL_FORMAT.md).
using TensorMap = absl::flat_hash_map<std::string, Tensor>;

// Moves the values of tensor `name` out of `weights`.
// REQUIRES: weights holds `name`.
std::vector<float> TakeValues(TensorMap& weights, const std::string& name);

// "[2, 3]" for error messages.
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace masknet

#endif  // MASKNET_MODEL_TENSOR_H_
