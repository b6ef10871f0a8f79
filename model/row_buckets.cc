#include "model/row_buckets.h"

#include <algorithm>

namespace masknet {

int64_t RowBuckets::RoundUp(int64_t rows) {
  if (rows <= 8) return rows;
  int64_t octave = 8;  // largest power of two < rows
  while (octave * 2 < rows) octave *= 2;
  const int64_t step = octave / 4;
  return (rows + step - 1) / step * step;
}

RowBuckets::RowBuckets(int64_t max_rows) : max_rows_(max_rows) {
  const int64_t last = RoundUp(max_rows);
  for (int64_t b = 1; b <= last; b = RoundUp(b + 1)) sizes_.push_back(b);
}

int RowBuckets::IndexFor(int64_t rows) const {
  const int64_t b = RoundUp(rows);
  return static_cast<int>(std::lower_bound(sizes_.begin(), sizes_.end(), b) - sizes_.begin());
}

}  // namespace masknet
