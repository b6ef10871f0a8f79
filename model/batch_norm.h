#ifndef MASKNET_MODEL_BATCH_NORM_H_
#define MASKNET_MODEL_BATCH_NORM_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/tensor.h"

namespace masknet {

// An element-wise affine map y = (x - center) * scale + shift. Centering
// first keeps precision when |mean| >> std (e.g. raw timestamps).
struct AffineMap {
  std::vector<float> center;
  std::vector<float> scale;
  std::vector<float> shift;
};

// Batch norm in eval mode as an affine map: reads
// <prefix>.running_mean / .running_var (and .weight / .bias when `affine`)
// from `weights` and returns center = mean, scale = weight / sqrt(var + eps)
// (computed in double), shift = bias.
// Errors: INVALID_ARGUMENT when a running variance is negative or a scale
// overflows float32.
absl::StatusOr<AffineMap> FoldBatchNorm(const TensorMap& weights, const std::string& prefix,
                                        bool affine, float eps);

}  // namespace masknet

#endif  // MASKNET_MODEL_BATCH_NORM_H_
