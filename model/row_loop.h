#ifndef MASKNET_MODEL_ROW_LOOP_H_
#define MASKNET_MODEL_ROW_LOOP_H_

#include <cstdint>

#include "omp.h"

namespace masknet {

// Whether `values` values of row-wise work (a LayerNorm, a quantization)
// should run on the calling thread alone. Below this many, a parallel region
// costs more than it saves. Small work stays out of OpenMP altogether: even
// a one-thread parallel region (an `if` clause that is false) parks the
// pool's other threads, and waking them again for the next matmul costs a
// futex call and, on a VM, an IPI. Inside a parallel region (a caller's) it
// stays serial.
inline bool RunRowsSerially(int64_t values) { return values < (1 << 14) || omp_in_parallel(); }

// Calls fn(r) for r in [0, rows), split over the OpenMP threads when the
// rows hold enough values (`width` each) in all.
template <typename RowFn>
void ForEachRow(int64_t rows, int64_t width, const RowFn& fn) {
  if (RunRowsSerially(rows * width)) {
    for (int64_t r = 0; r < rows; ++r) fn(r);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) fn(r);
}

}  // namespace masknet

#endif  // MASKNET_MODEL_ROW_LOOP_H_
