#include "model/dense_layer.h"

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bf16.h"
#include "model/row_buckets.h"
#include "model/small_gemm.h"

namespace masknet {
namespace {

using PostOp = DenseLayer::PostOp;

float FromBf16(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

struct Case {
  int64_t k, n;
  PostOp post;
  bool bias;
  bool bf16;
  int64_t batch = 1;  // > 1: a merged layer
  bool broadcast_src = false;
};

std::string Name(const Case& c) {
  return std::to_string(c.k) + "x" + std::to_string(c.n) + (c.post == PostOp::kRelu ? " relu" : "") +
         (c.post == PostOp::kMultiply ? " multiply" : "") + (c.bias ? " bias" : "") + (c.bf16 ? " bf16" : "") +
         (c.batch > 1 ? " merged x" + std::to_string(c.batch) : "") + (c.broadcast_src ? " broadcast" : "");
}

// Runs one layer on rows 1..8 (the small-batch kernels below 5 rows,
// oneDNN above) against a double precision reference computed from the
// values the layer really sees (bfloat16-rounded src and weights for bf16).
// Rows are dense, as the forward pass keeps them: oneDNN's brgemm, whose
// weight layout the small-batch kernels share, takes no strided source.
void CheckLayer(const Case& c, bool small_gemm) {
  SCOPED_TRACE(Name(c) + (small_gemm ? " small_gemm" : " onednn"));
  std::mt19937 rng(static_cast<uint32_t>(c.k * 131 + c.n));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t batch = c.batch, src_matrices = c.broadcast_src ? 1 : c.batch;
  std::vector<float> weights(batch * c.k * c.n), bias(c.bias ? batch * c.n : 0);
  for (float& w : weights) w = normal(rng) / std::sqrt(static_cast<float>(c.k));
  for (float& b : bias) b = normal(rng);
  const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  const RowBuckets buckets(8);
  DenseLayer::Shape shape{c.k, c.n, c.k, c.n, c.n, c.bf16, c.bf16};
  shape.small_gemm = small_gemm;
  shape.batch = c.batch;
  shape.broadcast_src = c.broadcast_src;
  auto layer = DenseLayer::Create(engine, shape, weights, bias, c.post, buckets);
  ASSERT_TRUE(layer.ok()) << layer.status();
  if (small_gemm && FindSmallGemm(c.bf16) != nullptr) {
    EXPECT_THAT(layer->implementations()[0], ::testing::StartsWith("small_gemm"));
  }
  // oneDNN keeps its fast kernel for every bucket (merged layers included).
  for (size_t i = small_gemm ? kSmallGemmMaxRows : 0; i < layer->implementations().size(); ++i) {
    EXPECT_THAT(layer->implementations()[i], ::testing::StartsWith("brg")) << "bucket " << i;
  }
  std::vector<char> scratchpad(layer->scratchpad_bytes() + 64);
  void* aligned_scratchpad = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratchpad.data()) + 63) & ~63ull);
  dnnl::stream stream(engine);
  for (int64_t rows = 1; rows <= 8; ++rows) {
    SCOPED_TRACE(rows);
    std::vector<float> src(src_matrices * rows * c.k), multiplier(rows * c.n);
    for (float& x : src) x = normal(rng);
    for (float& x : multiplier) x = normal(rng);
    std::vector<uint16_t> src_bf16(src.size());
    for (size_t i = 0; i < src.size(); ++i) src_bf16[i] = ToBf16(src[i]);
    // A sentinel after the last row (exact in bfloat16): it must survive.
    const float kSentinel = 12288.0f;
    std::vector<float> dst((batch * rows + 1) * c.n, kSentinel);
    std::vector<uint16_t> dst_bf16(dst.size(), ToBf16(kSentinel));
    const void* src_ptr = c.bf16 ? static_cast<const void*>(src_bf16.data()) : src.data();
    void* dst_ptr = c.bf16 ? static_cast<void*>(dst_bf16.data()) : dst.data();
    ASSERT_TRUE(layer->Execute(stream, rows, src_ptr, dst_ptr,
                               c.post == PostOp::kMultiply ? multiplier.data() : nullptr, aligned_scratchpad)
                    .ok());
    stream.wait();
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t src_base = (c.broadcast_src ? 0 : b) * rows * c.k;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < c.n; ++o) {
          double sum = c.bias ? bias[b * c.n + o] : 0.0, magnitude = std::abs(sum);
          for (int64_t i = 0; i < c.k; ++i) {
            const int64_t at = src_base + r * c.k + i;
            const float wi = weights[(b * c.n + o) * c.k + i];
            const double x = c.bf16 ? FromBf16(src_bf16[at]) : src[at];
            const double w = c.bf16 ? FromBf16(ToBf16(wi)) : wi;
            sum += x * w;
            magnitude += std::abs(x * w);
          }
          if (c.post == PostOp::kRelu) sum = std::max(sum, 0.0);
          if (c.post == PostOp::kMultiply) {
            sum *= multiplier[r * c.n + o];
            magnitude *= std::abs(multiplier[r * c.n + o]);
          }
          const int64_t at = (b * rows + r) * c.n + o;
          const double got = c.bf16 ? FromBf16(dst_bf16[at]) : dst[at];
          // f32 accumulation error, plus bfloat16 rounding of the output.
          const double tolerance = 1e-5 * magnitude + (c.bf16 ? std::abs(sum) / 128 : 0.0) + 1e-6;
          ASSERT_NEAR(got, sum, tolerance) << "matrix " << b << " row " << r << " output " << o;
        }
      }
    }
    for (size_t i = batch * rows * c.n; i < dst.size(); ++i) {
      ASSERT_EQ(c.bf16 ? FromBf16(dst_bf16[i]) : dst[i], kSentinel) << "wrote past the last row";
    }
  }
}

const Case kCases[] = {
    {1, 1, PostOp::kNone, true, false},        {37, 5, PostOp::kRelu, true, false},
    {64, 64, PostOp::kMultiply, true, false},  {130, 200, PostOp::kNone, false, false},
    {1024, 513, PostOp::kRelu, true, false},   {390, 1170, PostOp::kMultiply, true, false},
    {37, 5, PostOp::kRelu, true, true},        {63, 64, PostOp::kMultiply, true, true},
    {130, 200, PostOp::kNone, false, true},    {1025, 513, PostOp::kRelu, true, true},
    // Merged layers: a parallel MaskNet's aggregations (one src), and task
    // heads after their first layer (one src each).
    {390, 780, PostOp::kRelu, true, false, 3, true},   {256, 128, PostOp::kRelu, true, false, 4, false},
    {128, 1, PostOp::kNone, true, false, 5, false},    {37, 70, PostOp::kNone, false, false, 2, true},
    {390, 780, PostOp::kRelu, true, true, 3, true},    {256, 128, PostOp::kRelu, true, true, 4, false},
};

TEST(DenseLayerTest, SmallBatchKernelsMatchADoublePrecisionMatmul) {
  for (const Case& c : kCases) {
    if (c.bf16 && !CpuHasBf16()) continue;
    CheckLayer(c, /*small_gemm=*/true);
  }
}

TEST(DenseLayerTest, OneDnnMatchesADoublePrecisionMatmul) {
  for (const Case& c : kCases) {
    if (c.bf16 && !CpuHasBf16()) continue;
    CheckLayer(c, /*small_gemm=*/false);
  }
}

}  // namespace
}  // namespace masknet
