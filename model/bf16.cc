#include "model/bf16.h"

namespace masknet {

void ConvertRowsToBf16(const float* in, int64_t in_stride, uint16_t* out, int64_t out_stride, int64_t rows,
                       int64_t width) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* from = in + r * in_stride;
    uint16_t* to = out + r * out_stride;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) to[i] = ToBf16(from[i]);
  }
}

bool CpuHasBf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return has;
}

}  // namespace masknet
