#ifndef MASKNET_MODEL_BF16_H_
#define MASKNET_MODEL_BF16_H_

#include <cstdint>

// bfloat16: the top half of an IEEE float32 (8 exponent bits, 7 mantissa
// bits), held as uint16_t.
namespace masknet {

// `x` rounded to the nearest bfloat16, ties to even; NaN stays NaN.
inline uint16_t ToBf16(float x);

// Rows of float32 to rows of bfloat16, each `width` values; strides in
// elements.
void ConvertRowsToBf16(const float* in, int64_t in_stride, uint16_t* out, int64_t out_stride, int64_t rows,
                       int64_t width);

// Whether this CPU multiplies bfloat16 natively (AVX512_BF16), which bf16
// matmuls need to be faster than float32 ones.
bool CpuHasBf16();

}  // namespace masknet

#include <cstring>

namespace masknet {

inline uint16_t ToBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace masknet

#endif  // MASKNET_MODEL_BF16_H_
