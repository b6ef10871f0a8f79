#include "model/layer_norm.h"

#include <cmath>

#include "model/row_loop.h"

namespace masknet {
namespace {

// Normalizes with the statistics in T: float, or double for rows whose
// squares overflow float32.
template <typename T>
void NormalizeRow(const float* in, float* out, int64_t width, const float* gamma, const float* beta, float eps,
                  bool relu, T mean, T sq) {
  const T inv_std = T{1} / std::sqrt(sq / static_cast<T>(width) + static_cast<T>(eps));
  // The normalized value is at most sqrt(width) in magnitude: float again.
  if (relu) {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) {
      const float y = static_cast<float>((in[i] - mean) * inv_std) * gamma[i] + beta[i];
      out[i] = y > 0 ? y : 0;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) out[i] = static_cast<float>((in[i] - mean) * inv_std) * gamma[i] + beta[i];
  }
}

template <typename T>
T Mean(const float* in, int64_t width) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < width; ++i) sum += in[i];
  return sum / static_cast<T>(width);
}

template <typename T>
T SumOfSquares(const float* in, int64_t width, T mean) {
  T sq = 0;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < width; ++i) {
    const T c = in[i] - mean;
    sq += c * c;
  }
  return sq;
}

void LayerNormRow(const float* in, float* out, int64_t width, const float* gamma,
                  const float* beta, float eps, bool relu) {
  // Two-pass statistics: the row is in L1/L2, and this avoids the
  // cancellation of the one-pass E[x^2] - E[x]^2. In float, unless a square
  // (or the sum) overflows float32, which would turn every output into beta:
  // then again in double, where no float32 input can overflow.
  const float mean = Mean<float>(in, width);
  const float sq = SumOfSquares<float>(in, width, mean);
  if (std::isfinite(sq)) {
    NormalizeRow<float>(in, out, width, gamma, beta, eps, relu, mean, sq);
    return;
  }
  const double exact_mean = Mean<double>(in, width);
  NormalizeRow<double>(in, out, width, gamma, beta, eps, relu, exact_mean,
                       SumOfSquares<double>(in, width, exact_mean));
}


}  // namespace

void LayerNormRows(const float* in, int64_t in_stride, float* out, int64_t out_stride,
                   int64_t rows, int64_t width, const float* gamma, const float* beta,
                   float eps, bool relu) {
  ForEachRow(rows, width, [&](int64_t r) {
    LayerNormRow(in + r * in_stride, out + r * out_stride, width, gamma, beta, eps, relu);
  });
}

void LayerNormSegmentRows(const float* in, int64_t in_stride, float* out, int64_t out_stride, int64_t rows,
                          absl::Span<const NormSegment> segments, const float* gamma, const float* beta,
                          float eps) {
  int64_t width = 0;
  for (const NormSegment& s : segments) width += s.width;
  // Row by row, every segment of a row in turn: the row stays in L1, and
  // the work splits over rows however narrow the segments are.
  auto row = [&](int64_t r) {
    int64_t param = 0;
    for (const NormSegment& s : segments) {
      LayerNormRow(in + r * in_stride + s.offset, out + r * out_stride + s.offset, s.width, gamma + param,
                   beta + param, eps, /*relu=*/false);
      param += s.width;
    }
  };
  ForEachRow(rows, width, row);
}

}  // namespace masknet
