#include "model/dense_layer.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "absl/strings/str_cat.h"

namespace masknet {
namespace {

using dnnl::memory;
using dt = memory::data_type;

memory::desc RowMajor(int64_t rows, int64_t cols, int64_t stride, dt type = dt::f32) {
  return memory::desc({rows, cols}, type, memory::dims{stride, 1});
}

}  // namespace

absl::StatusOr<DenseLayer> DenseLayer::Create(const dnnl::engine& engine, const Shape& shape,
                                              absl::Span<const float> weights,
                                              absl::Span<const float> bias, PostOp post_op,
                                              const RowBuckets& buckets) {
  const int64_t k = shape.input_width, n = shape.output_width;
  if (static_cast<int64_t>(weights.size()) != k * n) {
    return absl::InternalError(absl::StrCat("dense layer: ", weights.size(),
                                            " weights for a ", n, "x", k, " layer"));
  }
  if (!bias.empty() && static_cast<int64_t>(bias.size()) != n) {
    return absl::InternalError(absl::StrCat("dense layer: ", bias.size(), " biases for ", n,
                                            " outputs"));
  }
  DenseLayer layer;
  layer.shape_ = shape;
  layer.post_op_ = post_op;
  layer.engine_ = engine;
  try {
    const dt src_type = shape.bf16 ? dt::bf16 : dt::f32;
    const dt dst_type = shape.bf16 && shape.bf16_dst ? dt::bf16 : dt::f32;
    const memory::desc any_weights({k, n}, src_type, memory::format_tag::any);
    const memory::desc bias_md = bias.empty() ? memory::desc() : RowMajor(1, n, n);
    memory::desc chosen_weights;
    // The largest bucket, where the layout matters most, picks the weight
    // layout; the others are built for it so the weights are stored once.
    const std::vector<int64_t>& sizes = buckets.sizes();
    for (auto it = sizes.rbegin(); it != sizes.rend(); ++it) {
      const int64_t rows = *it;
      Kernel kernel;
      kernel.rows = rows;
      kernel.src = RowMajor(rows, k, shape.src_stride, src_type);
      kernel.dst = RowMajor(rows, n, shape.dst_stride, dst_type);
      dnnl::post_ops ops;
      if (post_op == PostOp::kRelu) {
        ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      } else if (post_op == PostOp::kMultiply) {
        kernel.multiplier = RowMajor(rows, n, shape.multiplier_stride);
        ops.append_binary(dnnl::algorithm::binary_mul, kernel.multiplier);
      }
      dnnl::primitive_attr attr;
      attr.set_post_ops(ops);
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      const memory::desc& wanted = chosen_weights.is_zero() ? any_weights : chosen_weights;
      dnnl::matmul::primitive_desc pd(
          dnnl::matmul::desc(kernel.src, wanted, bias_md, kernel.dst), attr, engine);
      if (chosen_weights.is_zero()) chosen_weights = pd.weights_desc();
      kernel.implementation = pd.impl_info_str();
      kernel.scratchpad = pd.scratchpad_desc();
      layer.scratchpad_bytes_ =
          std::max(layer.scratchpad_bytes_, static_cast<int64_t>(kernel.scratchpad.get_size()));
      kernel.primitive = dnnl::matmul(pd);
      layer.kernels_.push_back(std::move(kernel));
    }
    std::reverse(layer.kernels_.begin(), layer.kernels_.end());  // ascending rows
    // Weights arrive as [n, k] row-major f32, which is the matmul's [k, n]
    // with format "ba"; reorder once into the primitives' layout and type.
    dnnl::stream stream(engine);
    memory source({{k, n}, dt::f32, memory::format_tag::ba}, engine,
                  const_cast<float*>(weights.data()));
    layer.weights_ = memory(chosen_weights, engine);
    dnnl::reorder(source, layer.weights_).execute(stream, source, layer.weights_);
    if (!bias.empty()) {
      layer.bias_ = memory(bias_md, engine);
      std::memcpy(layer.bias_.get_data_handle(), bias.data(), n * sizeof(float));
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN could not build a ", n, "x", k,
                                            " matmul: ", e.what()));
  }
  return layer;
}

std::vector<std::string> DenseLayer::implementations() const {
  std::vector<std::string> out;
  for (const Kernel& k : kernels_) out.push_back(k.implementation);
  return out;
}

absl::Status DenseLayer::Execute(dnnl::stream& stream, int64_t rows, const void* src,
                                 void* dst, const float* multiplier, void* scratchpad) const {
  auto it = std::lower_bound(kernels_.begin(), kernels_.end(), rows,
                             [](const Kernel& k, int64_t r) { return k.rows < r; });
  if (it == kernels_.end() || it->rows != rows) {
    return absl::InternalError(absl::StrCat("dense layer: no kernel for ", rows, " rows"));
  }
  const Kernel& kernel = *it;
  try {
    std::unordered_map<int, memory> args;
    args.reserve(5);
    args.emplace(DNNL_ARG_SRC, memory(kernel.src, engine_, const_cast<void*>(src)));
    args.emplace(DNNL_ARG_WEIGHTS, weights_);
    args.emplace(DNNL_ARG_DST, memory(kernel.dst, engine_, dst));
    if (bias_) args.emplace(DNNL_ARG_BIAS, bias_);
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

}  // namespace masknet
