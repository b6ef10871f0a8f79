#ifndef MASKNET_MODEL_INT8_H_
#define MASKNET_MODEL_INT8_H_

#include <cstdint>

// 8-bit integer matmuls, quantized so that no score depends on the other
// rows of its batch:
//  - weights: int8, one scale per output column, made once at load
//    (QuantizeWeights);
//  - a matmul's input: each row on its own, with its own scale, at run time
//    (QuantizeRows); symmetric int8, or uint8 for rows known to hold no
//    negative value (a ReLU's output), which keeps one more bit;
//  - the products accumulate exactly in int32 (VNNI's vpdpbusd), and
//    Dequantize turns each int32 back into float32 with both scales, fused
//    with the bias and the layer's ReLU or mask-multiply.
// The row kernels use AVX-512 and run only where CpuHasInt8() holds.
namespace masknet {

// Whether this CPU has AVX-512 with VNNI, which int8 matmuls need to be
// faster than bfloat16 ones.
bool CpuHasInt8();

// `weights` is `matrices` [n, k] row-major float32 matrices back to back.
// Writes their int8 values to `quantized` (same layout) and one scale per
// output row to `scales` (matrices x n): weight ≈ quantized x scale, with the
// row's largest |value| at ±127. An all-zero row gets scale 0.
void QuantizeWeights(const float* weights, int64_t matrices, int64_t n, int64_t k, int8_t* quantized,
                     float* scales);

// Rows of float32 (`width` values each, `in_stride` apart) to rows of int8
// (`out_stride` bytes apart), one scale per row into `scales`: value ≈
// quantized x scale. `unsigned_out`: the rows hold no negative value and
// become uint8 (largest value at 255; negative ones, which should not be
// there, become 0); else int8 with the largest |value| at ±127. A row of
// zeros gets scale 0.
void QuantizeRows(const float* in, int64_t in_stride, int64_t rows, int64_t width, bool unsigned_out, void* out,
                  int64_t out_stride, float* scales);

// What Dequantize does after scaling: nothing, ReLU, or multiply by a second
// float32 input (the mask-multiply).
enum class Int8Post { kNone, kRelu, kMultiply };

struct DequantizeCall {
  const int32_t* acc = nullptr;  // [rows, n] dense: the int32 products
  int64_t rows = 0;
  int64_t n = 0;
  const float* row_scales = nullptr;     // rows values: the input's scales
  const float* column_scales = nullptr;  // n values: the weights' scales
  const float* bias = nullptr;           // n values, or null
  Int8Post post = Int8Post::kNone;
  const float* multiplier = nullptr;  // kMultiply: rows of n floats
  int64_t multiplier_stride = 0;
  float* dst = nullptr;  // rows of n floats
  int64_t dst_stride = 0;
};

// dst = post(acc x row_scale x column_scale + bias), row by row.
void Dequantize(const DequantizeCall& call);

}  // namespace masknet

#endif  // MASKNET_MODEL_INT8_H_
