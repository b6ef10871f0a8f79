#include "model/dense_layer.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "model/int8.h"

namespace masknet {
namespace {

using dnnl::memory;
using dt = memory::data_type;

// Whether `md` is oneDNN's BA16a64b (f32) or BA16a64b2a (bf16) layout of a
// [k, n] weight matrix, or of each of a [batch, k, n] stack (aCB16b64c,
// aCB16b64c2b) laid back to back, with no offset: the panels small_gemm.h
// reads.
bool IsSmallGemmLayout(const memory::desc& md, bool bf16) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.format_kind != dnnl_blocked || (d.ndims != 2 && d.ndims != 3) || d.offset0 != 0) return false;
  const int kdim = d.ndims - 2, ndim = d.ndims - 1;
  const dnnl_blocking_desc_t& b = d.format_desc.blocking;
  const int nblks = bf16 ? 3 : 2;
  if (b.inner_nblks != nblks || b.inner_blks[0] != 16 || b.inner_idxs[0] != kdim || b.inner_blks[1] != 64 ||
      b.inner_idxs[1] != ndim) {
    return false;
  }
  if (bf16 && (b.inner_blks[2] != 2 || b.inner_idxs[2] != kdim)) return false;
  // bf16's k is blocked by 16 x 2 = 32: [N/64][Kp/32][16][64][2].
  const int64_t block_k = bf16 ? 32 : 16;
  const int64_t padded_k = d.padded_dims[kdim], padded_n = d.padded_dims[ndim];
  if (padded_k % block_k != 0 || padded_n % 64 != 0 || b.strides[kdim] != block_k * 64 ||
      b.strides[ndim] != padded_k * 64) {
    return false;
  }
  return d.ndims == 2 || b.strides[0] == padded_k * padded_n;
}

// [rows, cols] with a row stride, or `batch` dense such matrices back to back
// (batch 0: one matrix broadcast over the batch, as dims {1, rows, cols}).
memory::desc Matrix(int64_t batch, int64_t rows, int64_t cols, int64_t stride, dt type) {
  if (batch == 1) return memory::desc({rows, cols}, type, memory::dims{stride, 1});
  return memory::desc({std::max<int64_t>(batch, 1), rows, cols}, type, memory::dims{rows * cols, cols, 1});
}

}  // namespace

absl::StatusOr<DenseLayer> DenseLayer::Create(const dnnl::engine& engine, const Shape& shape,
                                              absl::Span<const float> weights,
                                              absl::Span<const float> bias, PostOp post_op,
                                              const RowBuckets& buckets) {
  const int64_t k = shape.input_width, n = shape.output_width, batch = shape.batch;
  if (batch < 1 || static_cast<int64_t>(weights.size()) != batch * k * n) {
    return absl::InternalError(absl::StrCat("dense layer: ", weights.size(), " weights for ", batch, " ", n,
                                            "x", k, " layers"));
  }
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != batch * n) {
    return absl::InternalError(absl::StrCat("dense layer: ", bias.size(), " biases for ", batch, " x ", n,
                                            " outputs"));
  }
  if (shape.int8 && shape.bf16) return absl::InternalError("dense layer: int8 and bf16 at once");
  const bool merged = batch > 1;
  if (merged && (shape.src_stride != k || shape.dst_stride != n || post_op == PostOp::kMultiply)) {
    return absl::InternalError("dense layer: a merged layer needs dense rows and no multiply");
  }
  DenseLayer layer;
  layer.shape_ = shape;
  layer.post_op_ = post_op;
  layer.engine_ = engine;
  try {
    // int8: the primitive reads the quantized rows (dense, in the scratch)
    // and writes int32 products (dense, in the scratch); Execute does the
    // rest.
    const bool int8 = shape.int8;
    const dt src_type = int8 ? (shape.unsigned_src ? dt::u8 : dt::s8) : shape.bf16 ? dt::bf16 : dt::f32;
    const dt weights_type = int8 ? dt::s8 : src_type;
    const dt dst_type = int8 ? dt::s32 : shape.bf16 && shape.bf16_dst ? dt::bf16 : dt::f32;
    const int64_t src_stride = int8 ? k : shape.src_stride, dst_stride = int8 ? n : shape.dst_stride;
    const memory::desc any_weights = merged ? memory::desc({batch, k, n}, weights_type, memory::format_tag::any)
                                            : memory::desc({k, n}, weights_type, memory::format_tag::any);
    // A merged layer's biases differ per matrix, which oneDNN's brgemm takes
    // only as a binary-add post-op over {batch, 1, n}; a bias argument of
    // that shape sends it to its reference kernel.
    const memory::desc bias_md =
        bias.empty() ? memory::desc()
                     : (merged ? memory::desc({batch, 1, n}, dt::f32, memory::format_tag::abc)
                               : memory::desc({1, n}, dt::f32, memory::format_tag::ab));
    memory::desc chosen_weights;
    // The largest bucket, where the layout matters most, picks the weight
    // layout; the others are built for it so the weights are stored once.
    const std::vector<int64_t>& sizes = buckets.sizes();
    for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
      const int64_t rows = *it;
      Kernel kernel;
      kernel.rows = rows;
      kernel.src = Matrix(merged && shape.broadcast_src ? 0 : batch, rows, k, src_stride, src_type);
      kernel.dst = Matrix(batch, rows, n, dst_stride, dst_type);
      dnnl::post_ops ops;
      if (!int8) {  // int8: none; ExecuteInt8's dequantization comes first
        if (merged && !bias.empty()) {
          kernel.multiplier = bias_md;
          ops.append_binary(dnnl::algorithm::binary_add, bias_md);
        }
        if (post_op == PostOp::kRelu) {
          ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
        } else if (post_op == PostOp::kMultiply) {
          kernel.multiplier = Matrix(1, rows, n, shape.multiplier_stride, dt::f32);
          ops.append_binary(dnnl::algorithm::binary_mul, kernel.multiplier);
        }
      }
      dnnl::primitive_attr attr;
      attr.set_post_ops(ops);
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      const memory::desc& wanted = chosen_weights.is_zero() ? any_weights : chosen_weights;
      dnnl::matmul::primitive_desc pd(
          dnnl::matmul::desc(kernel.src, wanted, merged || int8 ? memory::desc() : bias_md, kernel.dst), attr,
          engine);
      if (chosen_weights.is_zero()) chosen_weights = pd.weights_desc();
      kernel.implementation = pd.impl_info_str();
      kernel.scratchpad = pd.scratchpad_desc();
      layer.scratchpad_bytes_ =
          std::max(layer.scratchpad_bytes_, static_cast<int64_t>(kernel.scratchpad.get_size()));
      kernel.primitive = dnnl::matmul(pd);
      layer.kernels_.push_back(std::move(kernel));
    }
    std::reverse(layer.kernels_.begin(), layer.kernels_.end());  // ascending rows
    layer.StoreWeights(chosen_weights, weights, bias, bias_md);
    if (int8) {
      layer.int8_scratch_ = layer.Int8ScratchFor(sizes.back(), layer.scratchpad_bytes_);
      layer.scratchpad_bytes_ = layer.int8_scratch_.end;
    }
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN could not build a ", batch > 1 ? absl::StrCat(batch, " x ") : "",
                                            n, "x", k, " matmul: ", e.what()));
  }
  return layer;
}

void DenseLayer::StoreWeights(const memory::desc& chosen_weights, absl::Span<const float> weights,
                              absl::Span<const float> bias, const memory::desc& bias_md) {
  const int64_t k = shape_.input_width, n = shape_.output_width, batch = shape_.batch;
  const bool merged = batch > 1;
  const dt src_type = shape_.bf16 ? dt::bf16 : dt::f32;
  // int8: quantized first, one scale per output (row of the [n, k] source).
  std::vector<int8_t> quantized;
  if (shape_.int8) {
    quantized.resize(weights.size());
    weight_scales_.resize(batch * n);
    QuantizeWeights(weights.data(), batch, n, k, quantized.data(), weight_scales_.data());
  }
  const dt source_type = shape_.int8 ? dt::s8 : dt::f32;
  void* source_data = shape_.int8 ? static_cast<void*>(quantized.data()) : const_cast<float*>(weights.data());
  // Weights arrive as [n, k] row-major (per matrix), which is the matmul's
  // [k, n] with format "ba" ("acb" for a stack); reorder once into the
  // primitives' layout and type (for int8 sources the reorder also adds the
  // compensation oneDNN's layout asks for).
  dnnl::stream stream(engine_);
  const memory::desc source_md = merged ? memory::desc({batch, k, n}, source_type, memory::format_tag::acb)
                                        : memory::desc({k, n}, source_type, memory::format_tag::ba);
  memory source(source_md, engine_, source_data);
  weights_ = memory(chosen_weights, engine_);
  dnnl::reorder(source, weights_).execute(stream, source, weights_);
  if (!bias.empty()) {
    bias_ = memory(bias_md, engine_);
    std::memcpy(bias_.get_data_handle(), bias.data(), bias.size() * sizeof(float));
  }
  stream.wait();
  if (shape_.int8) return;  // no small-batch kernels for int8
  // oneDNN keeps a merged layer's weights as plain [batch][k][n].
  const bool row_major =
      merged && chosen_weights == memory::desc({batch, k, n}, src_type, memory::format_tag::abc);
  if (shape_.small_gemm && (row_major || IsSmallGemmLayout(chosen_weights, shape_.bf16))) {
    small_gemm_ = FindSmallGemm(shape_.bf16);
    const dnnl_memory_desc_t& d = chosen_weights.data;
    small_gemm_weights_ = {weights_.get_data_handle(),
                           k,
                           n,
                           d.padded_dims[d.ndims - 2],
                           bias.empty() ? nullptr : static_cast<const float*>(bias_.get_data_handle()),
                           batch,
                           merged ? d.format_desc.blocking.strides[0] : 0,
                           row_major};
  }
}

DenseLayer::Int8Scratch DenseLayer::Int8ScratchFor(int64_t rows, int64_t primitive_bytes) const {
  auto align = [](int64_t bytes) { return (bytes + 63) / 64 * 64; };
  Int8Scratch s;
  s.rows = align(primitive_bytes);
  s.scales = s.rows + align(SourceMatrices() * rows * shape_.input_width);
  s.products = s.scales + align(SourceMatrices() * rows * static_cast<int64_t>(sizeof(float)));
  s.end = s.products + align(shape_.batch * rows * shape_.output_width * static_cast<int64_t>(sizeof(int32_t)));
  return s;
}

std::vector<std::string> DenseLayer::implementations() const {
  std::vector<std::string> out;
  for (const Kernel& k : kernels_) {
    if (small_gemm_ != nullptr && k.rows <= kSmallGemmMaxRows) {
      out.push_back(shape_.bf16 ? "small_gemm:avx512_bf16" : "small_gemm:avx512");
    } else {
      out.push_back(k.implementation);
    }
  }
  return out;
}

absl::Status DenseLayer::Execute(dnnl::stream& stream, int64_t rows, const void* src,
                                 void* dst, const float* multiplier, void* scratchpad) const {
  if (small_gemm_ != nullptr && rows <= kSmallGemmMaxRows && rows >= 1) {
    SmallGemmCall call;
    call.rows = rows;
    call.src = src;
    call.src_stride = shape_.src_stride;
    call.dst = dst;
    call.dst_stride = shape_.dst_stride;
    call.dst_bf16 = shape_.bf16 && shape_.bf16_dst;
    call.multiplier = multiplier;
    call.multiplier_stride = shape_.multiplier_stride;
    if (shape_.batch > 1) {
      call.src_batch_stride = shape_.broadcast_src ? 0 : rows * shape_.input_width;
      call.dst_batch_stride = rows * shape_.output_width;
    }
    const SmallGemmPost post = post_op_ == PostOp::kRelu       ? SmallGemmPost::kRelu
                               : post_op_ == PostOp::kMultiply ? SmallGemmPost::kMultiply
                                                               : SmallGemmPost::kNone;
    small_gemm_(small_gemm_weights_, post, call);
    return absl::OkStatus();
  }
  auto it = std::lower_bound(kernels_.begin(), kernels_.end(), rows,
                             [](const Kernel& k, int64_t r) { return k.rows < r; });
  if (it == kernels_.end() || it->rows != rows) {
    return absl::InternalError(absl::StrCat("dense layer: no kernel for ", rows, " rows"));
  }
  const Kernel& kernel = *it;
  if (shape_.int8) return ExecuteInt8(stream, kernel, rows, src, dst, multiplier, scratchpad);
  try {
    std::unordered_map<int, memory> args;
    args.reserve(5);
    args.emplace(DNNL_ARG_SRC, memory(kernel.src, engine_, const_cast<void*>(src)));
    args.emplace(DNNL_ARG_WEIGHTS, weights_);
    args.emplace(DNNL_ARG_DST, memory(kernel.dst, engine_, dst));
    if (bias_ && shape_.batch > 1) {
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, bias_);
    } else if (bias_) {
      args.emplace(DNNL_ARG_BIAS, bias_);
    }
    if (post_op_ == PostOp::kMultiply) {
      args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                   memory(kernel.multiplier, engine_, const_cast<float*>(multiplier)));
    }
    if (kernel.scratchpad.get_size() > 0) {
      args.emplace(DNNL_ARG_SCRATCHPAD, memory(kernel.scratchpad, engine_, scratchpad));
    }
    kernel.primitive.execute(stream, args);
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN matmul failed: ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status DenseLayer::ExecuteInt8(dnnl::stream& stream, const Kernel& kernel, int64_t rows, const void* src,
                                     void* dst, const float* multiplier, void* scratchpad) const {
  const int64_t k = shape_.input_width, n = shape_.output_width;
  // The scratch layout is the one for the largest bucket; a smaller one uses
  // the beginning of each part.
  const Int8Scratch& at = int8_scratch_;
  char* base = static_cast<char*>(scratchpad);
  auto* quantized = base + at.rows;
  auto* row_scales = reinterpret_cast<float*>(base + at.scales);
  auto* products = reinterpret_cast<int32_t*>(base + at.products);
  // A merged layer's matrices are dense [rows, k] ones back to back.
  const int64_t src_matrix = shape_.batch > 1 ? rows * k : 0;
  for (int64_t m = 0; m < SourceMatrices(); ++m) {
    QuantizeRows(static_cast<const float*>(src) + m * src_matrix, shape_.src_stride, rows, k, shape_.unsigned_src,
                 quantized + m * rows * k, k, row_scales + m * rows);
  }
  try {
    std::unordered_map<int, memory> args;
    args.reserve(4);
    args.emplace(DNNL_ARG_SRC, memory(kernel.src, engine_, quantized));
    args.emplace(DNNL_ARG_WEIGHTS, weights_);
    args.emplace(DNNL_ARG_DST, memory(kernel.dst, engine_, products));
    if (kernel.scratchpad.get_size() > 0) {
      args.emplace(DNNL_ARG_SCRATCHPAD, memory(kernel.scratchpad, engine_, scratchpad));
    }
    kernel.primitive.execute(stream, args);
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN int8 matmul failed: ", e.what()));
  }
  const float* bias = bias_ ? static_cast<const float*>(bias_.get_data_handle()) : nullptr;
  for (int64_t m = 0; m < shape_.batch; ++m) {
    DequantizeCall call;
    call.acc = products + m * rows * n;
    call.rows = rows;
    call.n = n;
    call.row_scales = row_scales + (SourceMatrices() > 1 ? m * rows : 0);
    call.column_scales = weight_scales_.data() + m * n;
    call.bias = bias == nullptr ? nullptr : bias + m * n;
    call.post = post_op_ == PostOp::kRelu       ? Int8Post::kRelu
                : post_op_ == PostOp::kMultiply ? Int8Post::kMultiply
                                                : Int8Post::kNone;
    call.multiplier = multiplier;
    call.multiplier_stride = shape_.multiplier_stride;
    call.dst = static_cast<float*>(dst) + (shape_.batch > 1 ? m * rows * n : 0);
    call.dst_stride = shape_.dst_stride;
    Dequantize(call);
  }
  return absl::OkStatus();
}

}  // namespace masknet
