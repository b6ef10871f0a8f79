#include "model/int8.h"

// GCC 12's AVX-512 intrinsics start their results from _mm512_undefined_*(),
// which -W(maybe-)uninitialized then reports in every caller (GCC bug
// 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "model/row_loop.h"

namespace masknet {
namespace {

#define MASKNET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

// Mask of the first `count` (0..16) lanes.
MASKNET_AVX512 inline __mmask16 Lanes(int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1);
}

// The row's largest value (unsigned_out) or largest |value|.
MASKNET_AVX512 float RowRange(const float* x, int64_t width, bool unsigned_out) {
  __m512 best = _mm512_setzero_ps();
  const __m512 sign = _mm512_set1_ps(-0.0f);
  for (int64_t i = 0; i < width; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(Lanes(width - i), x + i);
    best = _mm512_max_ps(best, unsigned_out ? v : _mm512_andnot_ps(sign, v));
  }
  return _mm512_reduce_max_ps(best);
}

// One row: q = saturate(round_to_even(x * inverse)).
MASKNET_AVX512 void QuantizeRow(const float* x, int64_t width, float inverse, bool unsigned_out, void* out) {
  const __m512 scale = _mm512_set1_ps(inverse);
  const __m512i zero = _mm512_setzero_si512();
  auto* bytes = static_cast<uint8_t*>(out);
  for (int64_t i = 0; i < width; i += 16) {
    const __mmask16 lanes = Lanes(width - i);
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, x + i), scale));
    if (unsigned_out) {
      q = _mm512_max_epi32(q, zero);
      _mm512_mask_cvtusepi32_storeu_epi8(bytes + i, lanes, q);
    } else {
      _mm512_mask_cvtsepi32_storeu_epi8(bytes + i, lanes, q);
    }
  }
}

MASKNET_AVX512 void DequantizeRow(const DequantizeCall& c, int64_t r) {
  const int32_t* acc = c.acc + r * c.n;
  float* dst = c.dst + r * c.dst_stride;
  const float* mult = c.multiplier == nullptr ? nullptr : c.multiplier + r * c.multiplier_stride;
  const __m512 row_scale = _mm512_set1_ps(c.row_scales[r]);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < c.n; i += 16) {
    const __mmask16 lanes = Lanes(c.n - i);
    const __m512 scale = _mm512_mul_ps(row_scale, _mm512_maskz_loadu_ps(lanes, c.column_scales + i));
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(lanes, acc + i)), scale);
    if (c.bias != nullptr) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(lanes, c.bias + i));
    if (c.post == Int8Post::kRelu) {
      y = _mm512_max_ps(y, zero);
    } else if (c.post == Int8Post::kMultiply) {
      y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(lanes, mult + i));
    }
    _mm512_mask_storeu_ps(dst + i, lanes, y);
  }
}

}  // namespace

bool CpuHasInt8() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni");
  }();
  return has;
}

void QuantizeWeights(const float* weights, int64_t matrices, int64_t n, int64_t k, int8_t* quantized,
                     float* scales) {
  for (int64_t row = 0; row < matrices * n; ++row) {
    const float* w = weights + row * k;
    float largest = 0;
    for (int64_t i = 0; i < k; ++i) largest = std::max(largest, std::fabs(w[i]));
    scales[row] = largest / 127.0f;
    const float inverse = largest > 0 ? 127.0f / largest : 0.0f;
    for (int64_t i = 0; i < k; ++i) {
      quantized[row * k + i] = static_cast<int8_t>(std::clamp(std::nearbyint(w[i] * inverse), -127.0f, 127.0f));
    }
  }
}

void QuantizeRows(const float* in, int64_t in_stride, int64_t rows, int64_t width, bool unsigned_out, void* out,
                  int64_t out_stride, float* scales) {
  const float levels = unsigned_out ? 255.0f : 127.0f;
  ForEachRow(rows, width, [&](int64_t r) {
    const float* x = in + r * in_stride;
    const float range = RowRange(x, width, unsigned_out);
    // A row whose range is 0 (all zero) or not finite cannot be scaled; it
    // becomes zeros. Inputs are finite (the model checks V), so only an
    // overflowing layer could produce one.
    const bool usable = range > 0 && std::isfinite(range);
    scales[r] = usable ? range / levels : 0.0f;
    QuantizeRow(x, width, usable ? levels / range : 0.0f, unsigned_out, static_cast<uint8_t*>(out) + r * out_stride);
  });
}

void Dequantize(const DequantizeCall& call) {
  ForEachRow(call.rows, call.n, [&](int64_t r) { DequantizeRow(call, r); });
}

}  // namespace masknet
