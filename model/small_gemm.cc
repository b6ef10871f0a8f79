#include "model/small_gemm.h"

#include <immintrin.h>

#include <cstring>
#include <type_traits>

namespace masknet {
namespace {

constexpr int64_t kPanel = 64;             // output columns per panel
constexpr int kVectors = kPanel / 16;      // zmm registers per panel row
constexpr int64_t kParallelBytes = 128 << 10;  // below this, one thread
constexpr int64_t kPrefetchFloats = 64 * 32;

#define MASKNET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
#define MASKNET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

// x rounded to bfloat16 (nearest, ties to even; NaN stays a quiet NaN), as
// oneDNN and ToBf16 round, without needing AVX512_BF16.
MASKNET_AVX512 inline __m256i RoundToBf16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  rounded = _mm512_mask_or_epi32(rounded, nan, bits, _mm512_set1_epi32(0x00400000));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
}

// Bias, post-op and store of one panel's accumulators.
template <int M>
MASKNET_AVX512 inline void StorePanel(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call,
                                      int64_t b, int64_t n0, __m512 (&acc)[M][kVectors]) {
  const float* biases = w.bias != nullptr ? w.bias + b * w.n : nullptr;
  const int64_t dst_offset = b * call.dst_batch_stride;
  for (int j = 0; j < kVectors; ++j) {
    const int64_t col = n0 + 16 * j;
    if (col >= w.n) break;
    const int64_t valid = w.n - col;
    const __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xffff)
                                       : static_cast<__mmask16>((1u << valid) - 1);
    const __m512 bias = biases != nullptr ? _mm512_maskz_loadu_ps(mask, biases + col) : _mm512_setzero_ps();
    for (int m = 0; m < M; ++m) {
      __m512 v = _mm512_add_ps(acc[m][j], bias);
      if (post == SmallGemmPost::kRelu) {
        v = _mm512_max_ps(v, _mm512_setzero_ps());
      } else if (post == SmallGemmPost::kMultiply) {
        v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, call.multiplier + m * call.multiplier_stride + col));
      }
      if (call.dst_bf16) {
        _mm256_mask_storeu_epi16(static_cast<uint16_t*>(call.dst) + dst_offset + m * call.dst_stride + col, mask,
                                 RoundToBf16(v));
      } else {
        _mm512_mask_storeu_ps(static_cast<float*>(call.dst) + dst_offset + m * call.dst_stride + col, mask, v);
      }
    }
  }
}

// f32: acc[m] += x[m][k] * W[k, panel] over k; the panel is Kp rows of 64.
template <int M>
MASKNET_AVX512 void PanelF32(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call, int64_t b,
                             int64_t panel) {
  const float* weights = static_cast<const float*>(w.data) + b * w.batch_stride + panel * w.padded_k * kPanel;
  const float* src = static_cast<const float*>(call.src) + b * call.src_batch_stride;
  __m512 acc[M][kVectors];
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < kVectors; ++j) acc[m][j] = _mm512_setzero_ps();
  }
  // With few rows, one set of accumulators would make the FMAs' latency,
  // not the memory, the limit: odd k go to a second set.
  constexpr int kSets = M <= 2 ? 2 : 1;
  __m512 odd[kSets == 2 ? M : 1][kVectors];
  for (int m = 0; m < (kSets == 2 ? M : 1); ++m) {
    for (int j = 0; j < kVectors; ++j) odd[m][j] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  if constexpr (kSets == 2) {
    for (; k + 1 < w.k; k += 2) {
      const float* row = weights + k * kPanel;
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats + 16), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats + 32), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats + 48), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats + 64), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats + 80), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats + 96), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchFloats + 112), _MM_HINT_T0);
      __m512 w0[kVectors], w1[kVectors];
      for (int j = 0; j < kVectors; ++j) {
        w0[j] = _mm512_loadu_ps(row + 16 * j);
        w1[j] = _mm512_loadu_ps(row + kPanel + 16 * j);
      }
      for (int m = 0; m < M; ++m) {
        const __m512 x0 = _mm512_set1_ps(src[m * call.src_stride + k]);
        const __m512 x1 = _mm512_set1_ps(src[m * call.src_stride + k + 1]);
        for (int j = 0; j < kVectors; ++j) {
          acc[m][j] = _mm512_fmadd_ps(x0, w0[j], acc[m][j]);
          odd[m][j] = _mm512_fmadd_ps(x1, w1[j], odd[m][j]);
        }
      }
    }
  }
  for (; k < w.k; ++k) {
    const float* row = weights + k * kPanel;
    __m512 wv[kVectors];
    for (int j = 0; j < kVectors; ++j) wv[j] = _mm512_loadu_ps(row + 16 * j);
    for (int m = 0; m < M; ++m) {
      const __m512 x = _mm512_set1_ps(src[m * call.src_stride + k]);
      for (int j = 0; j < kVectors; ++j) acc[m][j] = _mm512_fmadd_ps(x, wv[j], acc[m][j]);
    }
  }
  if constexpr (kSets == 2) {
    for (int m = 0; m < M; ++m) {
      for (int j = 0; j < kVectors; ++j) acc[m][j] = _mm512_add_ps(acc[m][j], odd[m][j]);
    }
  }
  StorePanel<M>(w, post, call, b, panel * kPanel, acc);
}

// bf16: each 32-bit lane of a weight vector holds W[k, c] and W[k+1, c];
// vdpbf16ps adds x[k] W[k, c] + x[k+1] W[k+1, c] to the f32 accumulator.
template <int M>
MASKNET_AVX512_BF16 void PanelBf16(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call,
                                   int64_t b, int64_t panel) {
  const uint16_t* weights = static_cast<const uint16_t*>(w.data) + b * w.batch_stride + panel * w.padded_k * kPanel;
  const uint16_t* src = static_cast<const uint16_t*>(call.src) + b * call.src_batch_stride;
  __m512 acc[M][kVectors];
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < kVectors; ++j) acc[m][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < w.k; k += 2) {
    const uint16_t* row = weights + k * kPanel;  // the pair (k, k+1): 64 columns x 2
    __m512bh wv[kVectors];
    for (int j = 0; j < kVectors; ++j) wv[j] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(row + 32 * j));
    for (int m = 0; m < M; ++m) {
      const uint16_t* x = src + m * call.src_stride + k;
      // An odd K's last pair has no x[k+1]: use zero, not what follows the row.
      const uint32_t pair = k + 1 < w.k ? (static_cast<uint32_t>(x[1]) << 16) | x[0] : x[0];
      const __m512bh xv = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair)));
      for (int j = 0; j < kVectors; ++j) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], wv[j], xv);
    }
  }
  StorePanel<M>(w, post, call, b, panel * kPanel, acc);
}

// Plain row-major [K][N] weights (f32, or bf16 widened to f32 as loaded):
// a panel is 64 columns of every row, N elements apart.
template <int M, bool kBf16>
MASKNET_AVX512 void PanelRowMajor(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call,
                                  int64_t b, int64_t panel) {
  using T = std::conditional_t<kBf16, uint16_t, float>;
  const int64_t n0 = panel * kPanel;
  const T* weights = static_cast<const T*>(w.data) + b * w.batch_stride + n0;
  const T* src = static_cast<const T*>(call.src) + b * call.src_batch_stride;
  __mmask16 masks[kVectors];
  for (int j = 0; j < kVectors; ++j) {
    const int64_t valid = w.n - n0 - 16 * j;
    masks[j] = valid >= 16 ? static_cast<__mmask16>(0xffff)
                           : static_cast<__mmask16>(valid <= 0 ? 0 : (1u << valid) - 1);
  }
  __m512 acc[M][kVectors];
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < kVectors; ++j) acc[m][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < w.k; ++k) {
    const T* row = weights + k * w.n;
    __m512 wv[kVectors];
    for (int j = 0; j < kVectors; ++j) {
      if constexpr (kBf16) {
        const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(masks[j], row + 16 * j));
        wv[j] = _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
      } else {
        wv[j] = _mm512_maskz_loadu_ps(masks[j], row + 16 * j);
      }
    }
    for (int m = 0; m < M; ++m) {
      float x;
      if constexpr (kBf16) {
        const uint32_t bits = static_cast<uint32_t>(src[m * call.src_stride + k]) << 16;
        std::memcpy(&x, &bits, sizeof(x));
      } else {
        x = src[m * call.src_stride + k];
      }
      const __m512 xv = _mm512_set1_ps(x);
      for (int j = 0; j < kVectors; ++j) acc[m][j] = _mm512_fmadd_ps(xv, wv[j], acc[m][j]);
    }
  }
  StorePanel<M>(w, post, call, b, n0, acc);
}

using PanelFn = void (*)(const SmallGemmWeights&, SmallGemmPost, const SmallGemmCall&, int64_t, int64_t);

void RunPanels(PanelFn panel_fn, int64_t element_bytes, const SmallGemmWeights& w, SmallGemmPost post,
               const SmallGemmCall& call) {
  const int64_t panels = (w.n + kPanel - 1) / kPanel;
  const int64_t tasks = w.batch * panels;
  const int64_t bytes = w.batch * w.k * w.n * element_bytes;
  // Small layers stay out of OpenMP altogether (see LayerNormRows).
  if (tasks == 1 || bytes < kParallelBytes) {
    for (int64_t t = 0; t < tasks; ++t) panel_fn(w, post, call, t / panels, t % panels);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tasks; ++t) panel_fn(w, post, call, t / panels, t % panels);
}

// The panel kernel for M rows of a layout and type.
template <int M>
PanelFn Panel(bool row_major, bool bf16) {
  if (row_major) return bf16 ? PanelRowMajor<M, true> : PanelRowMajor<M, false>;
  return bf16 ? PanelBf16<M> : PanelF32<M>;
}

PanelFn Panel(int64_t rows, bool row_major, bool bf16) {
  switch (rows) {
    case 1: return Panel<1>(row_major, bf16);
    case 2: return Panel<2>(row_major, bf16);
    case 3: return Panel<3>(row_major, bf16);
    default: return Panel<4>(row_major, bf16);
  }
}

void SmallGemmF32(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call) {
  RunPanels(Panel(call.rows, w.row_major, false), sizeof(float), w, post, call);
}

void SmallGemmBf16(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call) {
  RunPanels(Panel(call.rows, w.row_major, true), sizeof(uint16_t), w, post, call);
}

}  // namespace

SmallGemmFn FindSmallGemm(bool bf16) {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (!avx512) return nullptr;
  if (!bf16) return SmallGemmF32;
  return __builtin_cpu_supports("avx512bf16") ? SmallGemmBf16 : nullptr;
}

}  // namespace masknet
