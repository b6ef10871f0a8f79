#include "model/batch_norm.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace masknet {

absl::StatusOr<AffineMap> FoldBatchNorm(const TensorMap& weights, const std::string& prefix,
                                        bool affine, float eps) {
  const std::vector<float>& mean = weights.at(prefix + ".running_mean").values;
  const std::vector<float>& var = weights.at(prefix + ".running_var").values;
  const std::vector<float>* gamma = affine ? &weights.at(prefix + ".weight").values : nullptr;
  const std::vector<float>* beta = affine ? &weights.at(prefix + ".bias").values : nullptr;
  AffineMap map;
  map.center = mean;
  map.scale.resize(mean.size());
  map.shift.resize(mean.size());
  for (size_t i = 0; i < mean.size(); ++i) {
    if (var[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", prefix, ".running_var' value ", i,
                                                     " is negative (", var[i], ")"));
    }
    const double scale = (gamma ? (*gamma)[i] : 1.0) / std::sqrt(static_cast<double>(var[i]) + eps);
    map.scale[i] = static_cast<float>(scale);
    // A tiny eps over a zero variance (or a huge weight) can leave float32.
    if (!std::isfinite(map.scale[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "batch norm '", prefix, "' value ", i, ": weight / sqrt(running_var + eps) = ", scale,
          " overflows float32 (running_var ", var[i], ", eps ", eps, ")"));
    }
    map.shift[i] = beta ? (*beta)[i] : 0.0f;
  }
  return map;
}

}  // namespace masknet
