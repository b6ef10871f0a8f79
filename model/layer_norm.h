#ifndef MASKNET_MODEL_LAYER_NORM_H_
#define MASKNET_MODEL_LAYER_NORM_H_

#include <cstdint>

namespace masknet {

// The one LayerNorm kernel of the forward pass, with the activation fused:
// for each of `rows` rows,
//   out = LN(in) = (in - mean) / sqrt(var + eps) * gamma + beta   (biased var)
// followed by max(0, .) when `relu`. Two read passes over the row (cache
// resident) for the mean and the centred variance, then one fused
// normalize-scale-shift-activate pass that writes the output.
// Rows start `in_stride` / `out_stride` floats apart; `in` and `out` may be
// the same buffer with the same stride. Parallel over rows (OpenMP).
// REQUIRES: width >= 1, eps > 0, gamma and beta hold `width` values.
void LayerNormRows(const float* in, int64_t in_stride, float* out, int64_t out_stride,
                   int64_t rows, int64_t width, const float* gamma, const float* beta,
                   float eps, bool relu);

}  // namespace masknet

#endif  // MASKNET_MODEL_LAYER_NORM_H_
