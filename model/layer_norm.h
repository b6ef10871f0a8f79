#ifndef MASKNET_MODEL_LAYER_NORM_H_
#define MASKNET_MODEL_LAYER_NORM_H_

#include <cstdint>

#include "absl/types/span.h"

namespace masknet {

// The one LayerNorm kernel of the forward pass, with the activation fused:
// for each of `rows` rows,
//   out = LN(in) = (in - mean) / sqrt(var + eps) * gamma + beta   (biased var)
// followed by max(0, .) when `relu`. Two read passes over the row (cache
// resident) for the mean and the centred variance, then one fused
// normalize-scale-shift-activate pass that writes the output. A row whose
// squares overflow float32 is normalized again in double, so any finite
// float32 input is normalized correctly (to float rounding).
// Rows start `in_stride` / `out_stride` floats apart; `in` and `out` may be
// the same buffer with the same stride. Parallel over rows (OpenMP).
// REQUIRES: width >= 1, eps > 0, gamma and beta hold `width` values.
void LayerNormRows(const float* in, int64_t in_stride, float* out, int64_t out_stride,
                   int64_t rows, int64_t width, const float* gamma, const float* beta,
                   float eps, bool relu);

// A slice [offset, offset + width) of a row that is normalized on its own.
struct NormSegment {
  int64_t offset = 0;
  int64_t width = 0;
};

// LayerNorm of each segment of each row on its own (no activation), e.g. one
// per feature field. Segment i's gamma and beta are `width` values starting
// at the sum of the earlier segments' widths. Parallel over rows (OpenMP)
// when the rows hold enough values in all; `in` and `out` may be the same
// buffer with the same stride. REQUIRES: segments' widths >= 1, eps > 0.
void LayerNormSegmentRows(const float* in, int64_t in_stride, float* out, int64_t out_stride, int64_t rows,
                          absl::Span<const NormSegment> segments, const float* gamma, const float* beta,
                          float eps);

}  // namespace masknet

#endif  // MASKNET_MODEL_LAYER_NORM_H_
