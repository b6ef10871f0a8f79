#include "model/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace masknet {

std::vector<float> TakeValues(TensorMap& weights, const std::string& name) {
  return std::move(weights.at(name).values);
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace masknet
