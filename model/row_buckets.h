#ifndef MASKNET_MODEL_ROW_BUCKETS_H_
#define MASKNET_MODEL_ROW_BUCKETS_H_

#include <cstdint>
#include <vector>

namespace masknet {

// The batch sizes (rows) the forward pass has matmul primitives for.
//
// oneDNN's JIT matmul is fastest when the row count is fixed when the
// primitive is built, but a primitive per possible row count would cost
// ~100 KB of code each. A batch of n rows therefore runs at the smallest
// bucket >= n, the rows above n being padding: every n up to 8, then four
// buckets per power of two (10, 12, 14, 16, 20, 24, ...), so padding is
// under 20% of a batch.
class RowBuckets {
 public:
  // REQUIRES: max_rows >= 1.
  explicit RowBuckets(int64_t max_rows);

  // The smallest bucket >= rows. REQUIRES: 1 <= rows <= max_rows().
  int64_t BucketFor(int64_t rows) const { return RoundUp(rows); }
  // Position of BucketFor(rows) in sizes().
  int IndexFor(int64_t rows) const;
  // All buckets up to BucketFor(max_rows()), ascending.
  const std::vector<int64_t>& sizes() const { return sizes_; }
  int64_t max_rows() const { return max_rows_; }
  // The largest bucket: the rows a workspace must hold.
  int64_t capacity() const { return sizes_.back(); }

  static int64_t RoundUp(int64_t rows);

 private:
  int64_t max_rows_;
  std::vector<int64_t> sizes_;
};

}  // namespace masknet

#endif  // MASKNET_MODEL_ROW_BUCKETS_H_
