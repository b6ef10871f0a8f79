#include "model/dense_layer.h"

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/bf16.h"
#include "model/int8.h"
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

// int8 (model/int8.h), quantized here the way the layer must: each weight
// row (output) and each src row on its own, round to nearest even, the
// largest magnitude at 127 (255 for unsigned rows).
struct Quantized {
  std::vector<int> values;
  std::vector<double> scales;  // one per row
};

Quantized QuantizeByRow(const std::vector<float>& x, int64_t rows, int64_t width, bool unsigned_rows) {
  const float levels = unsigned_rows ? 255.0f : 127.0f;
  Quantized q{std::vector<int>(x.size()), std::vector<double>(rows)};
  for (int64_t r = 0; r < rows; ++r) {
    float range = 0;
    for (int64_t i = 0; i < width; ++i) range = std::max(range, std::abs(x[r * width + i]));
    q.scales[r] = range / levels;
    const float inverse = range > 0 ? levels / range : 0.0f;
    for (int64_t i = 0; i < width; ++i) {
      q.values[r * width + i] =
          static_cast<int>(std::clamp(std::nearbyint(x[r * width + i] * inverse), unsigned_rows ? 0.0f : -levels, levels));
    }
  }
  return q;
}

struct Int8Case {
  int64_t k, n;
  PostOp post;
  bool bias;
  bool unsigned_src;
  int64_t batch = 1;
  bool broadcast_src = false;
};

class Int8Layer {
 public:
  Int8Layer(const Int8Case& c, int64_t max_rows) : c_(c), buckets_(max_rows) {
    std::mt19937 rng(static_cast<uint32_t>(c.k * 7 + c.n));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    weights_.resize(c.batch * c.k * c.n);
    bias_.resize(c.bias ? c.batch * c.n : 0);
    for (float& w : weights_) w = normal(rng) / std::sqrt(static_cast<float>(c.k));
    for (float& b : bias_) b = normal(rng);
    DenseLayer::Shape shape{c.k, c.n, c.k, c.n, c.n};
    shape.batch = c.batch;
    shape.broadcast_src = c.broadcast_src;
    shape.int8 = true;
    shape.unsigned_src = c.unsigned_src;
    auto layer = DenseLayer::Create(engine_, shape, weights_, bias_, c.post, buckets_);
    status_ = layer.status();
    if (layer.ok()) layer_ = *std::move(layer);
    scratchpad_.resize(layer_.scratchpad_bytes() + 64);
  }

  const absl::Status& status() const { return status_; }
  const DenseLayer& layer() const { return layer_; }
  int64_t src_matrices() const { return c_.broadcast_src ? 1 : c_.batch; }

  // The layer's output for `rows` (a bucket size) rows of src
  // (src_matrices() dense [rows, k] matrices), dense [batch][rows][n].
  std::vector<float> Run(int64_t rows, const std::vector<float>& src, const std::vector<float>& multiplier) {
    std::vector<float> dst(c_.batch * rows * c_.n + 1, 12288.0f);
    void* aligned = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(scratchpad_.data()) + 63) & ~63ull);
    dnnl::stream stream(engine_);
    const absl::Status s = layer_.Execute(stream, rows, src.data(), dst.data(),
                                          c_.post == PostOp::kMultiply ? multiplier.data() : nullptr, aligned);
    EXPECT_TRUE(s.ok()) << s;
    stream.wait();
    EXPECT_EQ(dst.back(), 12288.0f) << "wrote past the last row";
    dst.pop_back();
    return dst;
  }

  // What the layer must compute from the quantized values, in double.
  std::vector<double> Expected(int64_t rows, const std::vector<float>& src, const std::vector<float>& multiplier) {
    std::vector<double> out(c_.batch * rows * c_.n);
    const Quantized w = QuantizeByRow(weights_, c_.batch * c_.n, c_.k, false);
    const Quantized x = QuantizeByRow(src, src_matrices() * rows, c_.k, c_.unsigned_src);
    for (int64_t b = 0; b < c_.batch; ++b) {
      const int64_t xb = c_.broadcast_src ? 0 : b;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < c_.n; ++o) {
          int64_t acc = 0;
          for (int64_t i = 0; i < c_.k; ++i) {
            acc += int64_t{x.values[(xb * rows + r) * c_.k + i]} * w.values[(b * c_.n + o) * c_.k + i];
          }
          double y = acc * x.scales[xb * rows + r] * w.scales[b * c_.n + o] + (c_.bias ? bias_[b * c_.n + o] : 0.0);
          if (c_.post == PostOp::kRelu) y = std::max(y, 0.0);
          if (c_.post == PostOp::kMultiply) y *= multiplier[r * c_.n + o];
          out[(b * rows + r) * c_.n + o] = y;
        }
      }
    }
    return out;
  }

 private:
  Int8Case c_;
  const dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  RowBuckets buckets_;
  std::vector<float> weights_, bias_;
  DenseLayer layer_;
  absl::Status status_;
  std::vector<char> scratchpad_;
};

const Int8Case kInt8Cases[] = {
    {1, 1, PostOp::kNone, true, false},         {37, 5, PostOp::kRelu, true, true},
    {64, 64, PostOp::kMultiply, true, false},   {130, 200, PostOp::kNone, false, true},
    {1024, 513, PostOp::kRelu, true, false},    {780, 390, PostOp::kMultiply, true, true},
    {390, 780, PostOp::kRelu, true, false, 3, true}, {256, 128, PostOp::kRelu, true, true, 4, false},
    {128, 1, PostOp::kNone, true, true, 5, false},
};

std::string Name(const Int8Case& c) {
  return std::to_string(c.k) + "x" + std::to_string(c.n) + (c.post == PostOp::kRelu ? " relu" : "") +
         (c.post == PostOp::kMultiply ? " multiply" : "") + (c.bias ? " bias" : "") +
         (c.unsigned_src ? " u8" : " s8") + (c.batch > 1 ? " merged x" + std::to_string(c.batch) : "") +
         (c.broadcast_src ? " broadcast" : "");
}

std::vector<float> RandomRows(std::mt19937& rng, int64_t count, bool nonnegative) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(count);
  for (float& v : x) v = nonnegative ? std::max(normal(rng), 0.0f) : normal(rng);
  return x;
}

TEST(DenseLayerInt8Test, MatchesTheQuantizedArithmetic) {
  if (!CpuHasInt8()) GTEST_SKIP() << "no AVX512_VNNI";
  std::mt19937 rng(5);
  for (const Int8Case& c : kInt8Cases) {
    SCOPED_TRACE(Name(c));
    Int8Layer layer(c, 64);
    ASSERT_TRUE(layer.status().ok()) << layer.status();
    // oneDNN's VNNI kernel for every bucket, never its reference one.
    for (const std::string& impl : layer.layer().implementations()) {
      EXPECT_THAT(impl, ::testing::StartsWith("brg")) << impl;
    }
    for (int64_t rows : {1, 3, 8, 64}) {
      SCOPED_TRACE(rows);
      const std::vector<float> src = RandomRows(rng, layer.src_matrices() * rows * c.k, c.unsigned_src);
      const std::vector<float> multiplier = RandomRows(rng, rows * c.n, false);
      const std::vector<float> got = layer.Run(rows, src, multiplier);
      const std::vector<double> want = layer.Expected(rows, src, multiplier);
      for (size_t i = 0; i < got.size(); ++i) {
        // int32 products are exact; only the float32 dequantization rounds.
        ASSERT_NEAR(got[i], want[i], 1e-5 * std::abs(want[i]) + 1e-6) << "output " << i;
      }
    }
  }
}

// A row's int8 result is bit for bit the same alone and inside any batch,
// however extreme the other rows: each row has its own scale.
TEST(DenseLayerInt8Test, ARowsResultDoesNotDependOnItsBatch) {
  if (!CpuHasInt8()) GTEST_SKIP() << "no AVX512_VNNI";
  std::mt19937 rng(11);
  for (const Int8Case& c : kInt8Cases) {
    SCOPED_TRACE(Name(c));
    Int8Layer layer(c, 64);
    ASSERT_TRUE(layer.status().ok()) << layer.status();
    const int64_t rows = 40;  // a bucket
    std::vector<float> src = RandomRows(rng, layer.src_matrices() * rows * c.k, c.unsigned_src);
    const std::vector<float> multiplier = RandomRows(rng, rows * c.n, false);
    // Every other row blown up by 1e4: a per-batch scale would flatten the rest.
    for (int64_t m = 0; m < layer.src_matrices(); ++m) {
      for (int64_t r = 1; r < rows; r += 2) {
        for (int64_t i = 0; i < c.k; ++i) src[(m * rows + r) * c.k + i] *= 1e4f;
      }
    }
    const std::vector<float> batch = layer.Run(rows, src, multiplier);
    for (int64_t r = 0; r < rows; r += 6) {
      SCOPED_TRACE(r);
      std::vector<float> alone_src;
      for (int64_t m = 0; m < layer.src_matrices(); ++m) {
        alone_src.insert(alone_src.end(), src.begin() + (m * rows + r) * c.k, src.begin() + (m * rows + r + 1) * c.k);
      }
      const std::vector<float> alone_multiplier(multiplier.begin() + r * c.n, multiplier.begin() + (r + 1) * c.n);
      const std::vector<float> alone = layer.Run(1, alone_src, alone_multiplier);
      for (int64_t b = 0; b < c.batch; ++b) {
        for (int64_t o = 0; o < c.n; ++o) {
          ASSERT_EQ(alone[b * c.n + o], batch[(b * rows + r) * c.n + o]) << "matrix " << b << " output " << o;
        }
      }
    }
  }
}

}  // namespace
}  // namespace masknet
