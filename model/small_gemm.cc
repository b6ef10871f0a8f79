#include "model/small_gemm.h"

// GCC 12's AVX-512 intrinsics start their results from _mm512_undefined_*(),
// which -Wmaybe-uninitialized then reports in every caller (GCC bug 105593,
// fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "omp.h"

namespace masknet {
namespace {

constexpr int64_t kPanel = 64;             // output columns per panel
constexpr int kVectors = kPanel / 16;      // zmm registers per panel row
constexpr int64_t kParallelBytes = 128 << 10;  // below this, one thread
// A kernel call computes V <= kVectors vectors (16 columns each) of one
// panel, starting at column col0 (a multiple of 16): the threads split a
// layer's columns 16 at a time, so that they share the work evenly.

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

// Bias, post-op and store of V vectors of accumulators from column n0.
template <int M, int V>
MASKNET_AVX512 inline void StorePanel(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call,
                                      int64_t b, int64_t n0, __m512 (&acc)[M][V]) {
  const float* biases = w.bias != nullptr ? w.bias + b * w.n : nullptr;
  const int64_t dst_offset = b * call.dst_batch_stride;
  for (int j = 0; j < V; ++j) {
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
template <int M, int V>
MASKNET_AVX512 void PanelF32(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call, int64_t b,
                             int64_t col0) {
  const float* weights =
      static_cast<const float*>(w.data) + b * w.batch_stride + col0 / kPanel * w.padded_k * kPanel + col0 % kPanel;
  const float* src = static_cast<const float*>(call.src) + b * call.src_batch_stride;
  __m512 acc[M][V];
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < V; ++j) acc[m][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < w.k; ++k) {
    const float* row = weights + k * kPanel;
    __m512 wv[V];
    for (int j = 0; j < V; ++j) wv[j] = _mm512_loadu_ps(row + 16 * j);
    for (int m = 0; m < M; ++m) {
      const __m512 x = _mm512_set1_ps(src[m * call.src_stride + k]);
      for (int j = 0; j < V; ++j) acc[m][j] = _mm512_fmadd_ps(x, wv[j], acc[m][j]);
    }
  }
  StorePanel<M, V>(w, post, call, b, col0, acc);
}

// bf16: each 32-bit lane of a weight vector holds W[k, c] and W[k+1, c];
// vdpbf16ps adds x[k] W[k, c] + x[k+1] W[k+1, c] to the f32 accumulator.
template <int M, int V>
MASKNET_AVX512_BF16 void PanelBf16(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call,
                                   int64_t b, int64_t col0) {
  const uint16_t* weights = static_cast<const uint16_t*>(w.data) + b * w.batch_stride +
                            col0 / kPanel * w.padded_k * kPanel + col0 % kPanel * 2;
  const uint16_t* src = static_cast<const uint16_t*>(call.src) + b * call.src_batch_stride;
  __m512 acc[M][V];
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < V; ++j) acc[m][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < w.k; k += 2) {
    const uint16_t* row = weights + k * kPanel;  // the pair (k, k+1): 64 columns x 2
    __m512bh wv[V];
    for (int j = 0; j < V; ++j) wv[j] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(row + 32 * j));
    for (int m = 0; m < M; ++m) {
      const uint16_t* x = src + m * call.src_stride + k;
      // An odd K's last pair has no x[k+1]: use zero, not what follows the row.
      const uint32_t pair = k + 1 < w.k ? (static_cast<uint32_t>(x[1]) << 16) | x[0] : x[0];
      const __m512bh xv = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(pair)));
      for (int j = 0; j < V; ++j) acc[m][j] = _mm512_dpbf16_ps(acc[m][j], wv[j], xv);
    }
  }
  StorePanel<M, V>(w, post, call, b, col0, acc);
}

// Plain row-major [K][N] weights (f32, or bf16 widened to f32 as loaded):
// a panel is 64 columns of every row, N elements apart.
template <int M, int V, bool kBf16>
MASKNET_AVX512 void PanelRowMajor(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call,
                                  int64_t b, int64_t col0) {
  using T = std::conditional_t<kBf16, uint16_t, float>;
  const int64_t n0 = col0;
  const T* weights = static_cast<const T*>(w.data) + b * w.batch_stride + n0;
  const T* src = static_cast<const T*>(call.src) + b * call.src_batch_stride;
  __mmask16 masks[V];
  for (int j = 0; j < V; ++j) {
    const int64_t valid = w.n - n0 - 16 * j;
    masks[j] = valid >= 16 ? static_cast<__mmask16>(0xffff)
                           : static_cast<__mmask16>(valid <= 0 ? 0 : (1u << valid) - 1);
  }
  __m512 acc[M][V];
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < V; ++j) acc[m][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < w.k; ++k) {
    const T* row = weights + k * w.n;
    __m512 wv[V];
    for (int j = 0; j < V; ++j) {
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
      for (int j = 0; j < V; ++j) acc[m][j] = _mm512_fmadd_ps(xv, wv[j], acc[m][j]);
    }
  }
  StorePanel<M, V>(w, post, call, b, n0, acc);
}

using PanelFn = void (*)(const SmallGemmWeights&, SmallGemmPost, const SmallGemmCall&, int64_t, int64_t);

enum class Layout { kF32, kBf16, kRowMajorF32, kRowMajorBf16 };

template <int M, int V>
PanelFn Panel(Layout layout) {
  switch (layout) {
    case Layout::kF32: return PanelF32<M, V>;
    case Layout::kBf16: return PanelBf16<M, V>;
    case Layout::kRowMajorF32: return PanelRowMajor<M, V, false>;
    default: return PanelRowMajor<M, V, true>;
  }
}

template <int M>
PanelFn Panel(int vectors, Layout layout) {
  switch (vectors) {
    case 1: return Panel<M, 1>(layout);
    case 2: return Panel<M, 2>(layout);
    case 3: return Panel<M, 3>(layout);
    default: return Panel<M, 4>(layout);
  }
}

// Kernels for 1..kVectors vectors of `rows` rows.
struct Kernels {
  PanelFn by_vectors[kVectors + 1];
  Kernels(int64_t rows, Layout layout) {
    for (int v = 1; v <= kVectors; ++v) {
      switch (rows) {
        case 1: by_vectors[v] = Panel<1>(v, layout); break;
        case 2: by_vectors[v] = Panel<2>(v, layout); break;
        case 3: by_vectors[v] = Panel<3>(v, layout); break;
        default: by_vectors[v] = Panel<4>(v, layout); break;
      }
    }
  }
};

// Units [begin, end) of the layer's batch x ceil(N/16) column vectors, in
// pieces that do not cross a panel.
void RunUnits(const Kernels& kernels, const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call,
              int64_t begin, int64_t end) {
  const int64_t per_matrix = (w.n + 15) / 16;
  for (int64_t u = begin; u < end;) {
    const int64_t b = u / per_matrix, c = u % per_matrix;
    const int64_t piece_end = std::min({(c / kVectors + 1) * kVectors, per_matrix, c + (end - u)});
    kernels.by_vectors[piece_end - c](w, post, call, b, c * 16);
    u += piece_end - c;
  }
}

void Run(Layout layout, int64_t element_bytes, const SmallGemmWeights& w, SmallGemmPost post,
         const SmallGemmCall& call) {
  const Kernels kernels(call.rows, layout);
  const int64_t units = w.batch * ((w.n + 15) / 16);
  const int64_t bytes = w.batch * w.k * w.n * element_bytes;
  // Small layers stay out of OpenMP altogether (see LayerNormRows).
  if (units == 1 || bytes < kParallelBytes) {
    RunUnits(kernels, w, post, call, 0, units);
    return;
  }
#pragma omp parallel
  {
    const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
    RunUnits(kernels, w, post, call, units * t / threads, units * (t + 1) / threads);
  }
}

void SmallGemmF32(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call) {
  Run(w.row_major ? Layout::kRowMajorF32 : Layout::kF32, sizeof(float), w, post, call);
}

void SmallGemmBf16(const SmallGemmWeights& w, SmallGemmPost post, const SmallGemmCall& call) {
  Run(w.row_major ? Layout::kRowMajorBf16 : Layout::kBf16, sizeof(uint16_t), w, post, call);
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
