#include "model/masknet_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/feature_assembly.h"
#include "model/layer_norm.h"
#include "model/int8.h"
#include "model/row_buckets.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::unique_ptr<MaskNetModel> TinyModel(int64_t max_batch_size, uint32_t seed = 5,
                                        Precision precision = Precision::kF32) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, seed);
  MaskNetModel::Options options{max_batch_size};
  options.precision = precision;
  auto model = MaskNetModel::Create(std::move(spec), std::move(weights), options);
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

TEST(LayerNormRowsTest, MatchesADoublePrecisionLayerNormWithRelu) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(2.0f, 3.0f);
  const int rows = 5, width = 37, stride = 40;
  std::vector<float> in(rows * stride), out(rows * stride, -7.0f), gamma(width), beta(width);
  for (float& x : in) x = dist(rng);
  for (int i = 0; i < width; ++i) {
    gamma[i] = 0.5f + 0.01f * i;
    beta[i] = 0.1f * (i % 5) - 0.2f;
  }
  LayerNormRows(in.data(), stride, out.data(), stride, rows, width, gamma.data(), beta.data(), 1e-5f, true);
  for (int r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int i = 0; i < width; ++i) mean += in[r * stride + i];
    mean /= width;
    for (int i = 0; i < width; ++i) var += (in[r * stride + i] - mean) * (in[r * stride + i] - mean);
    var /= width;
    for (int i = 0; i < width; ++i) {
      const double y = (in[r * stride + i] - mean) / std::sqrt(var + 1e-5) * gamma[i] + beta[i];
      EXPECT_NEAR(out[r * stride + i], std::max(0.0, y), 1e-5) << r << "," << i;
    }
    for (int i = width; i < stride; ++i) EXPECT_EQ(out[r * stride + i], -7.0f);  // padding untouched
  }
}

TEST(LayerNormSegmentRowsTest, NormalizesEachSegmentOnItsOwnSerialOrParallel) {
  // Segments of widths 3, 10 and 17 with gaps between them; 40 rows stay
  // serial, 700 rows (700 x 30 values) split over threads.
  const std::vector<NormSegment> segments = {{1, 3}, {5, 10}, {20, 17}};
  const int stride = 40, width = 30;
  std::vector<float> gamma(width), beta(width);
  for (int i = 0; i < width; ++i) {
    gamma[i] = 0.7f + 0.02f * i;
    beta[i] = 0.05f * (i % 7) - 0.1f;
  }
  std::mt19937 rng(4);
  std::normal_distribution<float> dist(-1.0f, 4.0f);
  for (const int rows : {40, 700}) {
    std::vector<float> in(rows * stride), out(rows * stride, -7.0f), expected(rows * stride, -7.0f);
    for (float& x : in) x = dist(rng);
    LayerNormSegmentRows(in.data(), stride, out.data(), stride, rows, segments, gamma.data(), beta.data(), 1e-5f);
    int param = 0;
    for (const NormSegment& s : segments) {
      LayerNormRows(in.data() + s.offset, stride, expected.data() + s.offset, stride, rows, s.width,
                    gamma.data() + param, beta.data() + param, 1e-5f, /*relu=*/false);
      param += s.width;
    }
    EXPECT_EQ(out, expected) << rows << " rows";  // including the untouched gaps
  }
}

TEST(FeatureAssemblerTest, SignedLog1pOfAWideFieldMatchesTheScalarFormula) {
  // 37 values: two full vectors of 16 and a tail of 5 on AVX-512 CPUs.
  const auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(R"pb(
    fields {
      name: "wide" scope: CANDIDATE
      dense { width: 37 non_finite: REPLACE_WITH_ZERO transform: SIGNED_LOG1P clamp_min: -5 clamp_max: 5 }
    }
    masknet { mode: SERIAL blocks { aggregation_size: 4 output_size: 4 activation: RELU layer_norm_eps: 1e-5 } }
    tasks { name: "click" layers { output_size: 1 activation: ACTIVATION_NONE } }
  )pb"));
  TensorMap weights = testing::RandomWeights(spec, 1);
  auto assembler = FeatureAssembler::Create(spec, weights);
  ASSERT_TRUE(assembler.ok()) << assembler.status();
  std::vector<float> dense = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-7f, -3e-4f, 0.5f, -0.5f, 1.0f, -1.0f,
                              2.5f, -7.0f, 100.0f, -1e4f, 1e30f, -1e30f, 3e38f, -3e38f, NAN, INFINITY,
                              -INFINITY, 0.1f, 0.2f, 0.3f, 12.0f, -12.0f, 147.0f, 148.5f, -148.5f, 0.75f,
                              -0.99f, 0.999f, 1.5f, 2.0f, 3.0f, -4.0f, 6e-8f};
  ASSERT_EQ(dense.size(), 37u);
  std::vector<float> context_row(37), row(37, -9.0f);
  assembler->AssembleCandidate(context_row.data(), FeatureValues{dense, {}, {}}, row.data());
  for (size_t j = 0; j < dense.size(); ++j) {
    const float x = std::isfinite(dense[j]) ? dense[j] : 0.0f;
    const float expected = std::clamp(std::copysign(std::log1p(std::fabs(x)), x), -5.0f, 5.0f);
    // libmvec's vector log1pf is within 4 ulp, the scalar one within 1.
    EXPECT_NEAR(row[j], expected, 8 * std::numeric_limits<float>::epsilon() * std::fabs(expected)) << j;
    EXPECT_EQ(std::signbit(row[j]), std::signbit(expected)) << j;
  }
}

TEST(LayerNormRowsTest, IsExactForValuesWhoseSquaresOverflowFloat) {
  // Squares of 1e19 and 3e38 overflow float32; the statistics must not.
  const std::vector<float> in = {1e19f, -1e19f, 0.0f, 3e38f, -3e38f, 3e38f, -3e38f};
  const std::vector<float> gamma = {2.0f, 2.0f, 2.0f, 1.0f};
  const std::vector<float> beta = {0.5f, 0.5f, 0.5f, 0.0f};
  std::vector<float> out(in.size());
  LayerNormRows(in.data(), 3, out.data(), 3, 1, 3, gamma.data(), beta.data(), 1e-5f, /*relu=*/false);
  LayerNormRows(in.data() + 3, 4, out.data() + 3, 4, 1, 4, gamma.data(), beta.data(), 1e-5f, /*relu=*/false);
  const float a = static_cast<float>(std::sqrt(1.5));  // x / std for {x, -x, 0}
  EXPECT_NEAR(out[0], 2 * a + 0.5f, 1e-5);
  EXPECT_NEAR(out[1], -2 * a + 0.5f, 1e-5);
  EXPECT_NEAR(out[2], 0.5f, 1e-5);
  // {x, -x, x, -x}: mean 0, std x, so +-1 times gamma.
  EXPECT_NEAR(out[3], 2.0f + 0.5f, 1e-5);
  EXPECT_NEAR(out[4], -2.0f + 0.5f, 1e-5);
  EXPECT_NEAR(out[5], 2.0f + 0.5f, 1e-5);
  EXPECT_NEAR(out[6], -1.0f, 1e-5);
}

TEST(MaskNetModelTest, ABatchNormThatFoldsOutOfFloatRangeIsRefused) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  {  // a dense field's batch norm: scale = weight / sqrt(var + eps)
    TensorMap weights = testing::RandomWeights(spec, 2);
    weights.at("fields.counts.batch_norm.running_var").values[1] = 0.0f;
    weights.at("fields.counts.batch_norm.weight").values[1] = 3e38f;
    auto model = MaskNetModel::Create(spec, std::move(weights), {8});
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(model.status().message()),
                ::testing::HasSubstr("batch norm 'fields.counts.batch_norm' value 1"));
  }
  {  // a layer's batch norm, folded into its weights
    auto config = testing::ParseConfigOrDie(testing::kTinyConfig);
    auto* bn = config.mutable_mlp(0)->mutable_batch_norm();
    bn->set_eps(1e-5f);
    bn->set_affine(true);
    auto with_bn = *ModelSpec::FromConfig(config);
    TensorMap weights = testing::RandomWeights(with_bn, 2);
    weights.at("mlp.0.batch_norm.running_var").values[2] = 0.0f;
    weights.at("mlp.0.batch_norm.weight").values[2] = 1e36f;  // scale 3.2e38: finite
    const int64_t inputs = weights.at("mlp.0.weight").shape[1];
    weights.at("mlp.0.weight").values[2 * inputs] = 4.0f;  // times the scale: not
    auto model = MaskNetModel::Create(with_bn, std::move(weights), {8});
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(model.status().message()),
                ::testing::HasSubstr("layer 'mlp.0' output 2: folding its batch norm"));
  }
}

TEST(RowBucketsTest, PadsByLessThanAFifth) {
  RowBuckets buckets(1000);
  EXPECT_EQ(buckets.BucketFor(1), 1);
  EXPECT_EQ(buckets.BucketFor(8), 8);
  EXPECT_EQ(buckets.BucketFor(9), 10);
  EXPECT_EQ(buckets.BucketFor(17), 20);
  EXPECT_EQ(buckets.BucketFor(65), 80);
  EXPECT_EQ(buckets.BucketFor(1000), 1024);
  EXPECT_EQ(buckets.capacity(), 1024);
  for (int64_t n = 1; n <= 1000; ++n) {
    const int64_t b = buckets.BucketFor(n);
    ASSERT_GE(b, n);
    ASSERT_LT(static_cast<double>(b - n) / b, 0.2) << n;
    ASSERT_EQ(buckets.sizes()[buckets.IndexFor(n)], b);
  }
  EXPECT_THAT(RowBuckets(20).sizes(), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20));
}

TEST(MaskNetModelTest, ScoresAreProbabilitiesPerCandidateAndTask) {
  auto model = TinyModel(64);
  const testing::OwnedRequest request = testing::RandomRequest(model->spec().schema, 50, 1);
  const std::vector<float> scores = testing::ScoreAllOrDie(*model, request.view());
  ASSERT_EQ(scores.size(), 100u);
  float lo = 1, hi = 0;
  for (float p : scores) {
    ASSERT_TRUE(p > 0 && p < 1) << p;
    lo = std::min(lo, p);
    hi = std::max(hi, p);
  }
  EXPECT_GT(hi - lo, 0.01f);  // the candidates are told apart
}

// Row buckets, padding and batch splitting must not change any score.
TEST(MaskNetModelTest, ScoresDoNotDependOnBatchComposition) {
  auto big = TinyModel(256);
  auto small = TinyModel(7);
  auto single = TinyModel(1);
  const testing::OwnedRequest request = testing::RandomRequest(big->spec().schema, 61, 2);
  const RequestFeatures view = request.view();
  const std::vector<float> a = testing::ScoreAllOrDie(*big, view);
  const std::vector<float> b = testing::ScoreAllOrDie(*small, view);
  const std::vector<float> c = testing::ScoreAllOrDie(*single, view);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-6) << i;
    EXPECT_NEAR(a[i], c[i], 1e-6) << i;
  }
}

// int8 quantizes each candidate's inputs on its own: a candidate's score is
// the same alone, in any batch size, and beside candidates of another
// request whose values are a thousand times larger.
TEST(MaskNetModelTest, Int8ScoresDoNotDependOnBatchComposition) {
  if (!CpuHasInt8()) GTEST_SKIP() << "no AVX512_VNNI: int8 models are built bf16 or fp32";
  auto big = TinyModel(256, 5, Precision::kInt8);
  auto single = TinyModel(1, 5, Precision::kInt8);
  ASSERT_EQ(big->precision(), Precision::kInt8);
  const auto& schema = big->spec().schema;
  const testing::OwnedRequest request = testing::RandomRequest(schema, 61, 2);
  testing::OwnedRequest loud = testing::RandomRequest(schema, 100, 3);
  for (auto& candidate : loud.candidates) {
    for (float& x : candidate.dense) x *= 1000.0f;
  }
  const RequestFeatures view = request.view(), loud_view = loud.view();
  const std::vector<float> alone = testing::ScoreAllOrDie(*single, view);
  const std::vector<float> batched = testing::ScoreAllOrDie(*big, view);
  const BatchSlice slices[] = {{&loud_view, 0, 100}, {&view, 0, 61}, {&loud_view, 0, 50}};
  std::vector<float> mixed(211 * 2);
  Workspace workspace;
  ASSERT_TRUE(big->Run(slices, workspace, absl::MakeSpan(mixed)).ok());
  for (size_t i = 0; i < alone.size(); ++i) {
    EXPECT_NEAR(batched[i], alone[i], 1e-6) << i;
    EXPECT_NEAR(mixed[100 * 2 + i], alone[i], 1e-6) << i;
  }
}

// Two requests in one batch each keep their own context.
TEST(MaskNetModelTest, SlicesOfDifferentRequestsKeepTheirContexts) {
  auto model = TinyModel(64);
  const auto& schema = model->spec().schema;
  const testing::OwnedRequest r1 = testing::RandomRequest(schema, 5, 10);
  const testing::OwnedRequest r2 = testing::RandomRequest(schema, 9, 11);
  const RequestFeatures v1 = r1.view(), v2 = r2.view();
  const std::vector<float> alone1 = testing::ScoreAllOrDie(*model, v1);
  const std::vector<float> alone2 = testing::ScoreAllOrDie(*model, v2);
  const BatchSlice slices[] = {{&v1, 1, 5}, {&v2, 0, 9}};
  std::vector<float> together(13 * 2);
  Workspace workspace;
  ASSERT_TRUE(model->Run(slices, workspace, absl::MakeSpan(together)).ok());
  for (int i = 0; i < 4 * 2; ++i) EXPECT_NEAR(together[i], alone1[2 + i], 1e-6);
  for (int i = 0; i < 9 * 2; ++i) EXPECT_NEAR(together[8 + i], alone2[i], 1e-6);
}

TEST(MaskNetModelTest, OneWorkspaceServesModelsOfDifferentSizes) {
  auto small = TinyModel(4, /*seed=*/5);
  auto big = TinyModel(64, /*seed=*/6);
  ASSERT_LT(small->workspace_bytes(), big->workspace_bytes());
  const testing::OwnedRequest request = testing::RandomRequest(small->spec().schema, 4, 3);
  const RequestFeatures view = request.view();
  const std::vector<float> small_alone = testing::ScoreAllOrDie(*small, view);
  const std::vector<float> big_alone = testing::ScoreAllOrDie(*big, view);
  Workspace workspace;
  EXPECT_EQ(workspace.bytes(), 0);
  const BatchSlice slice{&view, 0, 4};
  std::vector<float> scores(8);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(small->Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores)).ok());
    for (int i = 0; i < 8; ++i) EXPECT_EQ(scores[i], small_alone[i]) << i;
    ASSERT_TRUE(big->Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores)).ok());
    for (int i = 0; i < 8; ++i) EXPECT_EQ(scores[i], big_alone[i]) << i;
  }
  EXPECT_GE(workspace.bytes(), big->workspace_bytes());
}

TEST(MaskNetModelTest, ConcurrentRunsOnTheirOwnWorkspacesGetTheSequentialScores) {
  auto model = TinyModel(32);
  std::vector<testing::OwnedRequest> requests;
  std::vector<std::vector<float>> expected;
  for (int i = 0; i < 16; ++i) {
    requests.push_back(testing::RandomRequest(model->spec().schema, 1 + (i * 37) % 64, 100 + i));
    expected.push_back(testing::ScoreAllOrDie(*model, requests.back().view()));
  }
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      Workspace workspace;
      for (int repeat = 0; repeat < 20; ++repeat) {
        for (size_t i = t; i < requests.size(); i += 2) {
          const RequestFeatures view = requests[i].view();
          const int64_t n = static_cast<int64_t>(view.candidates.size());
          for (int64_t begin = 0; begin < n; begin += 23) {
            const BatchSlice slice{&view, begin, std::min<int64_t>(n, begin + 23)};
            std::vector<float> scores(slice.size() * 2);
            if (!model->Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores)).ok()) ++mismatches;
            for (size_t k = 0; k < scores.size(); ++k) {
              if (std::abs(scores[k] - expected[i][begin * 2 + k]) > 1e-6) ++mismatches;
            }
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(MaskNetModelTest, RejectsBatchesOutsideItsSize) {
  auto model = TinyModel(4);
  const testing::OwnedRequest request = testing::RandomRequest(model->spec().schema, 5, 3);
  const RequestFeatures view = request.view();
  std::vector<float> scores(10);
  Workspace workspace;
  const BatchSlice too_many{&view, 0, 5};
  absl::Status s = model->Run(absl::MakeConstSpan(&too_many, 1), workspace, absl::MakeSpan(scores));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("1 to 4 candidates, got 5"));
  const BatchSlice none{&view, 0, 0};
  EXPECT_EQ(model->Run(absl::MakeConstSpan(&none, 1), workspace, absl::MakeSpan(scores)).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(MaskNetModelTest, ReportsTheCandidateWhoseValueOverflowsInItsTransform) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  // counts (candidate dense values 1 and 2) is batch-normed without a clamp:
  // a tiny variance turns a large finite value into infinity.
  weights["fields.counts.batch_norm.running_var"].values = {1e-6f, 1e-6f};
  auto model = *MaskNetModel::Create(std::move(spec), std::move(weights), {16});
  testing::OwnedRequest request = testing::RandomRequest(model->spec().schema, 4, 3);
  request.candidates[2].dense[1] = 3e38f;
  const RequestFeatures view = request.view();
  const BatchSlice slice{&view, 0, 4};
  std::vector<float> scores(8);
  Workspace workspace;
  const absl::Status s = model->Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("candidates[2].features: field 'counts' value 0 (3e+38) overflows float32 in the field's "
                        "transform"));
}

TEST(MaskNetModelTest, AClampDoesNotBoundAnEmbeddedScalarsProduct) {
  config::v1::ModelConfig config = testing::ParseConfigOrDie(testing::kTinyConfig);
  // age (candidate dense value 0): clamped to [-3, 3], then embedded in 2.
  config.mutable_fields(1)->mutable_dense()->set_embedding_dim(2);
  auto spec = *ModelSpec::FromConfig(config);
  TensorMap weights = testing::RandomWeights(spec, 1);
  weights["fields.age.embedding"].values = {1.0f, 3e38f};
  weights["fields.age.scale"].values = {1.0f};
  weights["fields.age.shift"].values = {0.0f};
  auto model = *MaskNetModel::Create(std::move(spec), std::move(weights), {16});
  testing::OwnedRequest request = testing::RandomRequest(model->spec().schema, 3, 3);
  request.candidates[1].dense[0] = 5.0f;  // log1p: 1.79; 1.79 * 3e38 overflows
  const RequestFeatures view = request.view();
  const BatchSlice slice{&view, 0, 3};
  std::vector<float> scores(6);
  Workspace workspace;
  const absl::Status s = model->Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("candidates[1].features: field 'age' value 0 (5) overflows float32 in its transform or "
                        "its embedding"));
}

TEST(MaskNetModelTest, AnOverflowInAClampedFieldSaturatesAtTheClamp) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  // age: signed log1p, affine, clamp [-3, 3] (candidate dense value 0).
  weights["fields.age.scale"].values = {1e38f};
  weights["fields.age.shift"].values = {0.0f};
  auto model = *MaskNetModel::Create(std::move(spec), std::move(weights), {16});
  testing::OwnedRequest request = testing::RandomRequest(model->spec().schema, 2, 3);
  request.candidates[1] = request.candidates[0];
  request.candidates[0].dense[0] = 1e10f;  // log1p: 23.0, times 1e38: inf, clamped: 3
  request.candidates[1].dense[0] = 1.0f;   // log1p: 0.69, times 1e38: 6.9e37, clamped: 3
  const RequestFeatures view = request.view();
  const BatchSlice slice{&view, 0, 2};
  std::vector<float> scores(4);
  Workspace workspace;
  ASSERT_TRUE(model->Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores)).ok());
  for (int t = 0; t < 2; ++t) {
    EXPECT_TRUE(std::isfinite(scores[t])) << t;
    EXPECT_FLOAT_EQ(scores[t], scores[2 + t]) << t;  // the same clamped features
  }
}

// The tiny model's input problems: the field index of `name`, and the count
// of `problem` there.
int64_t Count(const MaskNetModel& model, const InputCounts& counts, const std::string& name, InputProblem problem) {
  const int field = model.spec().schema.FindField(name);
  EXPECT_GE(field, 0) << name;
  return counts[field * kInputProblems + static_cast<int>(problem)];
}

TEST(MaskNetModelTest, CountsTheInputProblemsOfABatchSerialOrParallel) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  // age: signed log1p, then x * 1 + 0, clamped to [-3, 3]: |age| > e^3 - 1 is clamped.
  weights["fields.age.scale"].values = {1.0f};
  weights["fields.age.shift"].values = {0.0f};
  MaskNetModel::Options options{2048};
  options.threads = 2;
  auto model = *MaskNetModel::Create(std::move(spec), std::move(weights), options);
  const float nan = std::nanf(""), inf = INFINITY;
  testing::OwnedRequest request;
  // viewer_vec (3 dense, REPLACE_WITH_ZERO): 2 non-finite; viewer_id (MODULO, 50 buckets): 75 is outside.
  request.context = {{nan, 1.0f, inf}, {75}, {}};
  // Per candidate: age, counts (2 dense, REPLACE_WITH_ZERO); topics (IDENTITY, allow_empty) ids and count.
  request.candidates = {{{100.0f, nan, 2.0f}, {}, {0}},      // age clamped, 1 non-finite, empty topics
                        {{5.0f, 1.0f, 2.0f}, {3}, {1}},      // nothing
                        {{-1000.0f, inf, -inf}, {}, {0}},    // age clamped, 2 non-finite, empty topics
                        {{0.0f, 0.0f, 0.0f}, {1, 2}, {2}}};  // nothing
  const RequestFeatures view = request.view();
  for (const Scope scope : {Scope::kContext, Scope::kCandidate}) {
    const FeatureValues& values = scope == Scope::kContext ? view.context : view.candidates[0];
    ASSERT_TRUE(model->spec().schema.Validate(scope, values, "test").ok());
  }
  // Two slices of one request: its context counts once.
  const BatchSlice slices[] = {{&view, 0, 2}, {&view, 2, 4}};
  std::vector<float> scores(8);
  Workspace workspace;
  InputCounts counts;
  ASSERT_TRUE(model->Run(slices, workspace, absl::MakeSpan(scores), &counts).ok());
  EXPECT_EQ(Count(*model, counts, "viewer_vec", InputProblem::kNonFiniteReplaced), 2);
  EXPECT_EQ(Count(*model, counts, "viewer_id", InputProblem::kOutOfVocabulary), 1);
  EXPECT_EQ(Count(*model, counts, "age", InputProblem::kClamped), 2);
  EXPECT_EQ(Count(*model, counts, "counts", InputProblem::kNonFiniteReplaced), 3);
  EXPECT_EQ(Count(*model, counts, "topics", InputProblem::kEmptyIds), 2);
  int64_t total = 0;
  for (int64_t c : counts) total += c;
  EXPECT_EQ(total, 10);  // and nothing else

  // The second slice alone: candidates 2 and 3, no context.
  ASSERT_TRUE(model->Run(absl::MakeConstSpan(&slices[1], 1), workspace, absl::MakeSpan(scores), &counts).ok());
  EXPECT_EQ(Count(*model, counts, "viewer_vec", InputProblem::kNonFiniteReplaced), 0);
  EXPECT_EQ(Count(*model, counts, "age", InputProblem::kClamped), 1);
  EXPECT_EQ(Count(*model, counts, "counts", InputProblem::kNonFiniteReplaced), 2);

  // 1200 copies of the candidates: enough rows to be assembled on both threads.
  testing::OwnedRequest large = request;
  large.candidates.clear();
  for (int i = 0; i < 300; ++i) large.candidates.insert(large.candidates.end(), request.candidates.begin(),
                                                        request.candidates.end());
  const RequestFeatures large_view = large.view();
  const BatchSlice all{&large_view, 0, 1200};
  scores.resize(2400);
  ASSERT_TRUE(model->Run(absl::MakeConstSpan(&all, 1), workspace, absl::MakeSpan(scores), &counts).ok());
  EXPECT_EQ(Count(*model, counts, "viewer_vec", InputProblem::kNonFiniteReplaced), 2);
  EXPECT_EQ(Count(*model, counts, "age", InputProblem::kClamped), 600);
  EXPECT_EQ(Count(*model, counts, "counts", InputProblem::kNonFiniteReplaced), 900);
  EXPECT_EQ(Count(*model, counts, "topics", InputProblem::kEmptyIds), 600);
}

TEST(MaskNetModelTest, RefusesAWorkspaceAboveItsLimit) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  auto model = MaskNetModel::Create(std::move(spec), std::move(weights),
                                    {/*max_batch_size=*/4096, /*max_workspace_bytes=*/1 << 20});
  EXPECT_EQ(model.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("a batch of 4096 candidates needs"));
  EXPECT_THAT(std::string(model.status().message()), HasSubstr("lower max_batch_size"));
}

TEST(MaskNetModelTest, RejectsNegativeBatchNormVariance) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  weights["fields.counts.batch_norm.running_var"].values[0] = -1;
  auto model = MaskNetModel::Create(std::move(spec), std::move(weights), {});
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace masknet
