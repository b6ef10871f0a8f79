#include "model/layer_norm.h"

#include <cmath>

namespace masknet {
namespace {

void LayerNormRow(const float* in, float* out, int64_t width, const float* gamma,
                  const float* beta, float eps, bool relu) {
  // Two-pass statistics: the row is in L1/L2, and this avoids the
  // cancellation of the one-pass E[x^2] - E[x]^2.
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < width; ++i) sum += in[i];
  const float mean = sum / static_cast<float>(width);
  float sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < width; ++i) {
    const float c = in[i] - mean;
    sq += c * c;
  }
  const float inv_std = 1.0f / std::sqrt(sq / static_cast<float>(width) + eps);
  if (relu) {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) {
      const float y = (in[i] - mean) * inv_std * gamma[i] + beta[i];
      out[i] = y > 0 ? y : 0;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) out[i] = (in[i] - mean) * inv_std * gamma[i] + beta[i];
  }
}

}  // namespace

void LayerNormRows(const float* in, int64_t in_stride, float* out, int64_t out_stride,
                   int64_t rows, int64_t width, const float* gamma, const float* beta,
                   float eps, bool relu) {
  // Below ~16K values the fork/join costs more than it saves. Small work
  // stays out of OpenMP altogether: even a one-thread parallel region (an
  // `if` clause that is false) parks the pool's other threads, and waking
  // them again for the next matmul costs a futex call and, on a VM, an IPI.
  if (rows * width < (1 << 14)) {
    for (int64_t r = 0; r < rows; ++r) {
      LayerNormRow(in + r * in_stride, out + r * out_stride, width, gamma, beta, eps, relu);
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    LayerNormRow(in + r * in_stride, out + r * out_stride, width, gamma, beta, eps, relu);
  }
}

}  // namespace masknet
