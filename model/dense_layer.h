#ifndef MASKNET_MODEL_DENSE_LAYER_H_
#define MASKNET_MODEL_DENSE_LAYER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "dnnl.hpp"
#include "model/row_buckets.h"
#include "model/small_gemm.h"

namespace masknet {

// A fully connected layer run by oneDNN matmul with its epilogue fused:
//   dst = post(src · Wᵀ + bias)
// where post is nothing, ReLU, or an element-wise product with a second
// input (the MaskBlock's mask-multiply, as a binary-mul post-op).
//
// Built once per model: weights are reordered once into the layout the
// primitive prefers, and one primitive is created per row bucket. Rows of
// src, dst and the multiplier live in caller buffers at fixed strides, so a
// layer can read or write a column slice of a wider buffer without copies.
// The primitives' scratch memory is the caller's too (oneDNN's own,
// library-managed scratchpad is shared and races when one primitive runs on
// two threads at once). Execute is const and safe to call concurrently on
// distinct buffers.
class DenseLayer {
 public:
  enum class PostOp { kNone, kRelu, kMultiply };

  struct Shape {
    int64_t input_width = 0;   // K
    int64_t output_width = 0;  // N
    // Elements (of each buffer's type) between consecutive rows.
    int64_t src_stride = 0;
    int64_t dst_stride = 0;
    int64_t multiplier_stride = 0;  // kMultiply only; the multiplier is f32
    // bf16: src and weights are bf16 (weights converted once, here), the
    // products accumulate in f32; dst is bf16 if bf16_dst, else f32. Bias
    // and multiplier stay f32.
    bool bf16 = false;
    bool bf16_dst = false;
    // Run 1 to kSmallGemmMaxRows rows with this project's AVX-512 kernels
    // (small_gemm.h) instead of oneDNN, where the CPU has them.
    bool small_gemm = true;
    // A merged layer: `batch` independent layers of the same shape run as
    // one batched matmul. Their weights are `batch` [N, K] matrices back to
    // back, their biases `batch` x N. src is one [rows, K] matrix that every
    // layer reads (broadcast_src) or `batch` of them back to back; dst is
    // `batch` [rows, N] matrices back to back. Rows are dense (strides K and
    // N), and the post-op is not kMultiply.
    int64_t batch = 1;
    bool broadcast_src = false;
    // int8 (model/int8.h): src and dst stay f32 rows; weights are int8 with
    // a scale per output column (made here, once), each src row is
    // quantized on its own when the layer runs (uint8 if unsigned_src: the
    // rows hold no negative value, e.g. a ReLU's output), the products
    // accumulate in int32, and dequantization is fused with the bias and
    // post-op. A row's result never depends on the other rows. Not with
    // bf16; small_gemm is ignored. The CPU must have CpuHasInt8().
    bool int8 = false;
    bool unsigned_src = false;
  };

  // An empty layer, to be assigned from Create.
  DenseLayer() = default;

  // `weights` is [output_width, input_width] row-major (PyTorch nn.Linear);
  // `bias` is empty or holds output_width values (times shape.batch for a
  // merged layer). Errors: INTERNAL when the sizes or the shape disagree or
  // oneDNN fails.
  static absl::StatusOr<DenseLayer> Create(const dnnl::engine& engine, const Shape& shape,
                                           absl::Span<const float> weights,
                                           absl::Span<const float> bias, PostOp post_op,
                                           const RowBuckets& buckets);

  // Computes `rows` rows (of each of a merged layer's matrices). REQUIRES: rows is one of the buckets' sizes();
  // multiplier is non-null iff the post-op is kMultiply; scratchpad holds
  // scratchpad_bytes(), 64-byte aligned, and no other thread uses it now.
  // Returns INTERNAL if oneDNN fails.
  absl::Status Execute(dnnl::stream& stream, int64_t rows, const void* src, void* dst,
                       const float* multiplier, void* scratchpad) const;

  const Shape& shape() const { return shape_; }

  // Scratch memory Execute needs: the largest of its primitives' (and, for
  // int8, the quantized rows, their scales and the int32 products).
  int64_t scratchpad_bytes() const { return scratchpad_bytes_; }

  // oneDNN's implementation name for each bucket's primitive (e.g.
  // "brg:avx512_core"), ascending rows; "small_gemm:avx512" (or
  // "small_gemm:avx512_bf16") for the buckets the small-batch kernels run.
  std::vector<std::string> implementations() const;

 private:
  // Reorders `weights` ([n, k] row-major f32 per matrix; for int8 quantized
  // first, keeping their scales) once into `chosen_weights`, the
  // primitives' layout, copies the bias, and picks the small-batch kernel
  // when that layout suits it. Throws dnnl::error.
  void StoreWeights(const dnnl::memory::desc& chosen_weights, absl::Span<const float> weights,
                    absl::Span<const float> bias, const dnnl::memory::desc& bias_md);
  struct Kernel {
    int64_t rows;
    std::string implementation;
    dnnl::matmul primitive;
    dnnl::memory::desc src, dst, multiplier, scratchpad;  // multiplier: or a merged layer's bias
  };
  // Where an int8 Execute keeps its quantized rows, their scales and the
  // int32 products for `rows` rows, in bytes from the scratchpad's start
  // (after the primitives' own scratch); `end` is the total.
  struct Int8Scratch {
    int64_t rows = 0, scales = 0, products = 0, end = 0;
  };
  Int8Scratch Int8ScratchFor(int64_t rows, int64_t primitive_bytes) const;
  absl::Status ExecuteInt8(dnnl::stream& stream, const Kernel& kernel, int64_t rows, const void* src, void* dst,
                           const float* multiplier, void* scratchpad) const;
  // The matmul's source matrices: 1, or a merged layer's `batch` unless
  // they all read one.
  int64_t SourceMatrices() const { return shape_.batch > 1 && !shape_.broadcast_src ? shape_.batch : 1; }

  Shape shape_;
  PostOp post_op_ = PostOp::kNone;
  dnnl::engine engine_;
  dnnl::memory weights_;  // in the primitives' preferred layout
  dnnl::memory bias_;     // empty when the layer has none
  std::vector<float> weight_scales_;  // int8: one per output column (per matrix)
  Int8Scratch int8_scratch_;          // int8: for the largest bucket
  std::vector<Kernel> kernels_;  // one per bucket, ascending rows
  int64_t scratchpad_bytes_ = 0;
  // The small-batch kernel and its view of weights_, or null.
  SmallGemmFn small_gemm_ = nullptr;
  SmallGemmWeights small_gemm_weights_;
};

}  // namespace masknet

#endif  // MASKNET_MODEL_DENSE_LAYER_H_
