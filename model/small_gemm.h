#ifndef MASKNET_MODEL_SMALL_GEMM_H_
#define MASKNET_MODEL_SMALL_GEMM_H_

#include <cstdint>

namespace masknet {

// A matmul for a few rows (1 to kSmallGemmMaxRows), where the time goes into
// reading the weights: oneDNN's matmul reads them at about a third of the
// rate the memory gives at one row, and costs microseconds of set-up per
// call. These kernels stream the weights once, in the layout oneDNN's brgemm
// matmul already keeps them in, so both paths share one copy:
//   f32:  BA16a64b   = panels of 64 output columns, [ceil(N/64)][Kp][64]
//   bf16: BA16a64b2a = the same with pairs of k interleaved,
//                      [ceil(N/64)][Kp/2][64][2]
// where Kp is K rounded up to 16 (32 for bf16) and the padding is zero; or,
// for merged layers, plain row-major [K][N] matrices.
//
// They use AVX-512 (and AVX512_BF16 for bf16), chosen when the CPU has it at
// run time, so the binary still runs on any x86-64; where the CPU lacks it,
// FindSmallGemm returns null and the caller keeps using oneDNN.
inline constexpr int64_t kSmallGemmMaxRows = 4;

struct SmallGemmWeights {
  const void* data = nullptr;  // panels as above; float or bfloat16
  int64_t k = 0;               // input width
  int64_t n = 0;               // output width
  int64_t padded_k = 0;        // Kp
  const float* bias = nullptr;  // n values (per matrix), or null
  // A merged layer: `batch` such weight matrices, `batch_stride` elements
  // apart, and as many biases back to back.
  int64_t batch = 1;
  int64_t batch_stride = 0;
  // The weights are plain row-major [K][N] matrices (oneDNN's choice for
  // merged layers) rather than panels; then padded_k is unused.
  bool row_major = false;
};

enum class SmallGemmPost { kNone, kRelu, kMultiply };

struct SmallGemmCall {
  int64_t rows = 0;  // 1..kSmallGemmMaxRows
  const void* src = nullptr;  // rows of k values (float, or bfloat16 for bf16)
  int64_t src_stride = 0;     // in elements
  void* dst = nullptr;        // rows of n values (float, or bfloat16 if dst_bf16)
  int64_t dst_stride = 0;
  bool dst_bf16 = false;
  const float* multiplier = nullptr;  // kMultiply: rows of n floats
  int64_t multiplier_stride = 0;
  // A merged layer: elements between one matrix's src (0: all read the
  // same) and dst and the next one's.
  int64_t src_batch_stride = 0;
  int64_t dst_batch_stride = 0;
};

// dst = post(src · W + bias). Runs the panels on the calling thread's
// OpenMP threads when the weights are large enough to pay for it.
using SmallGemmFn = void (*)(const SmallGemmWeights& weights, SmallGemmPost post, const SmallGemmCall& call);

// The kernel for f32 (src, weights) or bf16 ones on this CPU, or null.
SmallGemmFn FindSmallGemm(bool bf16);

}  // namespace masknet

#endif  // MASKNET_MODEL_SMALL_GEMM_H_
