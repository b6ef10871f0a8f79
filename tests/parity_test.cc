// The in-process forward pass equals the PyTorch reference on the committed
// fixtures (tests/fixtures/<name>/, written by tools/write_fixtures.py)
// within 1e-5 per probability.

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "loader/model_repository.h"
#include "model/bf16.h"
#include "model/int8.h"
#include "server/request_parser.h"
#include "tests/fixtures.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

// Largest |score - reference| bf16 may give on any fixture: bfloat16 keeps 8
// bits of mantissa (relative rounding 2^-9) in every matmul input and weight.
// The measured worst case over the fixtures is printed by the test.
constexpr double kBf16Tolerance = 0.05;
// int8: 7 bits and a sign per matmul input (each row scaled on its own) and
// per weight (each output on its own); see model/int8.h.
// The measured worst case over the fixtures is 0.095 (variant-serial-field-ln:
// serial blocks compound the rounding; random weights).
constexpr double kInt8Tolerance = 0.15;
constexpr double kInt8MinSpearman = 0.99;

// The fixture's model root loaded at `precision`.
std::unique_ptr<ModelRepository> LoadFixture(const std::string& name, Precision precision) {
  ModelRepository::Options options;
  options.root = testing::FixtureModelRoot(name);
  // A small batch size exercises request splitting and several row buckets.
  options.model.max_batch_size = 64;
  options.model.precision = precision;
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load(options, &warnings);
  EXPECT_TRUE(repo.ok()) << repo.status();
  return repo.ok() ? *std::move(repo) : nullptr;
}

class ParityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParityTest, ScoresEqualTheReference) {
  const std::string name = GetParam();
  const auto fixture = testing::ReadParityFixture(name);
  ASSERT_FALSE(fixture.cases().empty());
  auto repo = LoadFixture(name, Precision::kF32);
  ASSERT_NE(repo, nullptr);
  double worst = 0;
  for (const auto& c : fixture.cases()) {
    SCOPED_TRACE(c.description());
    auto servable = repo->Find(c.request().model_name(), c.request().model_version());
    ASSERT_TRUE(servable.ok()) << servable.status();
    const MaskNetModel& model = *(*servable)->model;
    auto features = ParseRankRequest(c.request(), model.spec().schema, 1 << 20);
    ASSERT_TRUE(features.ok()) << features.status();
    const std::vector<float> scores = testing::ScoreAllOrDie(model, *features);
    ASSERT_EQ(c.expected().candidates_size(), c.request().candidates_size());
    ASSERT_EQ(c.expected().tasks_size(), model.num_tasks());
    for (int t = 0; t < model.num_tasks(); ++t) EXPECT_EQ(c.expected().tasks(t), model.spec().tasks[t].name);
    for (int i = 0; i < c.expected().candidates_size(); ++i) {
      for (int t = 0; t < model.num_tasks(); ++t) {
        const float want = c.expected().candidates(i).scores(t);
        const float got = scores[i * model.num_tasks() + t];
        worst = std::max(worst, std::fabs(static_cast<double>(got) - want));
        ASSERT_NEAR(got, want, testing::kParityTolerance) << "candidate " << i << " task " << t;
      }
    }
  }
  RecordProperty("max_abs_error", absl::StrCat(worst));
  std::printf("[ parity ] %s: max |score - reference| = %.3g\n", name.c_str(), worst);
}

// The fixture's requests scored in batches of 1, 2, 3, ... candidates, so
// that small batches (the small-batch kernels' territory) are covered too.
std::vector<float> ScoreInSmallBatches(const MaskNetModel& model, const RequestFeatures& request) {
  const int64_t n = static_cast<int64_t>(request.candidates.size());
  std::vector<float> scores(n * model.num_tasks());
  Workspace workspace;
  int64_t size = 1;
  for (int64_t begin = 0; begin < n; begin += size, size = size % 6 + 1) {
    const BatchSlice slice{&request, begin, std::min(n, begin + size)};
    const absl::Status s =
        model.Run(absl::MakeConstSpan(&slice, 1), workspace,
                  absl::MakeSpan(scores.data() + begin * model.num_tasks(), slice.size() * model.num_tasks()));
    EXPECT_TRUE(s.ok()) << s;
  }
  return scores;
}

int TotalPrimitives(const MaskNetModel& model) {
  int total = 0;
  for (const auto& [impl, count] : model.MatmulImplementations()) total += count;
  return total;
}

// Merged layers and the small-batch kernels change how the matmuls run, not
// what they compute: every variant equals the reference, in small batches
// and large, and the variants agree with each other to float32 rounding.
TEST_P(ParityTest, MergedLayersAndSmallBatchKernelsScoreAsTheReference) {
  const std::string name = GetParam();
  const auto fixture = testing::ReadParityFixture(name);
  MaskNetModel::Options unmerged, onednn_only;
  unmerged.merge_layers = false;
  onednn_only.small_gemm = false;
  std::vector<std::unique_ptr<ModelRepository>> repos;
  for (const MaskNetModel::Options& variant : {MaskNetModel::Options(), unmerged, onednn_only}) {
    ModelRepository::Options options;
    options.root = testing::FixtureModelRoot(name);
    options.model = variant;
    options.model.max_batch_size = 64;
    std::vector<std::string> warnings;
    auto repo = ModelRepository::Load(options, &warnings);
    ASSERT_TRUE(repo.ok()) << repo.status();
    repos.push_back(*std::move(repo));
  }
  double worst_between = 0;
  for (const auto& c : fixture.cases()) {
    SCOPED_TRACE(c.description());
    std::vector<std::vector<float>> scores;
    for (const auto& repo : repos) {
      auto servable = repo->Find(c.request().model_name(), c.request().model_version());
      ASSERT_TRUE(servable.ok()) << servable.status();
      const MaskNetModel& model = *(*servable)->model;
      auto features = ParseRankRequest(c.request(), model.spec().schema, 1 << 20);
      ASSERT_TRUE(features.ok()) << features.status();
      scores.push_back(ScoreInSmallBatches(model, *features));
      scores.push_back(testing::ScoreAllOrDie(model, *features));
    }
    const int tasks = c.expected().tasks_size();
    for (size_t v = 0; v < scores.size(); ++v) {
      for (int i = 0; i < c.expected().candidates_size(); ++i) {
        for (int t = 0; t < tasks; ++t) {
          const float got = scores[v][i * tasks + t];
          ASSERT_NEAR(got, c.expected().candidates(i).scores(t), testing::kParityTolerance)
              << "variant " << v / 2 << (v % 2 ? " in large batches" : " in small batches") << ", candidate " << i
              << " task " << t;
          worst_between = std::max(worst_between, std::fabs(static_cast<double>(got) - scores[0][i * tasks + t]));
        }
      }
    }
  }
  std::printf("[ parity ] %s: merged, unmerged, small-batch kernels and oneDNN agree within %.3g\n", name.c_str(),
              worst_between);
  // The variants really differ where the model has something to merge:
  // twitter-recap-small's narrow aggregation layers and heads (all of one
  // shape). The paper's layers are too wide to gain from merging, and the
  // variants' blocks and heads differ in width.
  const std::string& model_name = fixture.cases(0).request().model_name();
  auto merged_servable = repos[0]->Find(model_name, 0);
  auto separate_servable = repos[1]->Find(model_name, 0);
  ASSERT_TRUE(merged_servable.ok() && separate_servable.ok());
  const MaskNetModel& merged = *(*merged_servable)->model;
  const MaskNetModel& separate = *(*separate_servable)->model;
  if (name == "twitter-recap-small") {
    EXPECT_LT(TotalPrimitives(merged), TotalPrimitives(separate));
  }
}

// Ranks of `x` (ties get their mean rank).
std::vector<double> Ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> ranks(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = (i + j) / 2.0;
    i = j + 1;
  }
  return ranks;
}

// Spearman's rank correlation of two equally long score vectors.
double Spearman(const std::vector<double>& a, const std::vector<double>& b) {
  const std::vector<double> ra = Ranks(a), rb = Ranks(b);
  const double n = static_cast<double>(a.size());
  double ma = 0, mb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    ma += ra[i] / n;
    mb += rb[i] / n;
  }
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    ab += (ra[i] - ma) * (rb[i] - mb);
    aa += (ra[i] - ma) * (ra[i] - ma);
    bb += (rb[i] - mb) * (rb[i] - mb);
  }
  return aa == 0 || bb == 0 ? (aa == bb ? 1.0 : 0.0) : ab / std::sqrt(aa * bb);
}

// How a fixture's scores at a lower precision compare with the reference:
// the largest |score - reference|, and per case of at least kRankedCase
// candidates and per task the rank correlation with the reference within
// the request (Spearman), the smallest of them.
constexpr int kRankedCase = 30;
struct Agreement {
  double max_error = 0;
  double min_spearman = 1;
};

// `request` scored by the version it names in `repo`, built at `precision`:
// [candidates, tasks] row-major, and the task count in *tasks. Fails the
// test and returns nothing when the version or the request is refused.
std::vector<float> ScoreRequest(const ModelRepository& repo, const serving::v1::RankRequest& request,
                                Precision precision, int* tasks) {
  auto servable = repo.Find(request.model_name(), request.model_version());
  EXPECT_TRUE(servable.ok()) << servable.status();
  if (!servable.ok()) return {};
  const MaskNetModel& model = *(*servable)->model;
  EXPECT_EQ(model.precision(), precision);
  auto features = ParseRankRequest(request, model.spec().schema, 1 << 20);
  EXPECT_TRUE(features.ok()) << features.status();
  if (!features.ok()) return {};
  *tasks = model.num_tasks();
  return testing::ScoreAllOrDie(model, *features);
}

// Task t's column of [candidates, tasks] row-major scores.
std::vector<double> TaskScores(const std::vector<float>& scores, int tasks, int t) {
  std::vector<double> column;
  for (size_t i = t; i < scores.size(); i += tasks) column.push_back(scores[i]);
  return column;
}

Agreement ScoreAt(const std::string& name, Precision precision) {
  const auto fixture = testing::ReadParityFixture(name);
  auto repo = LoadFixture(name, precision);
  Agreement agreement;
  if (repo == nullptr) {
    ADD_FAILURE() << "cannot load " << name;
    return agreement;
  }
  for (const auto& c : fixture.cases()) {
    int tasks = 0;
    const std::vector<float> scores = ScoreRequest(*repo, c.request(), precision, &tasks);
    const int candidates = c.expected().candidates_size();
    if (scores.size() != static_cast<size_t>(candidates) * tasks) continue;  // ScoreRequest failed the test
    for (int t = 0; t < tasks; ++t) {
      const std::vector<double> got = TaskScores(scores, tasks, t);
      std::vector<double> want;
      for (int i = 0; i < candidates; ++i) {
        want.push_back(c.expected().candidates(i).scores(t));
        agreement.max_error = std::max(agreement.max_error, std::fabs(got[i] - want[i]));
      }
      if (candidates >= kRankedCase) agreement.min_spearman = std::min(agreement.min_spearman, Spearman(got, want));
    }
  }
  std::printf("[ parity ] %s %s: max |score - reference| = %.3g, smallest Spearman within a request = %.5f\n",
              name.c_str(), PrecisionName(precision), agreement.max_error, agreement.min_spearman);
  return agreement;
}

// bf16 stays within kBf16Tolerance of the reference; the worst error is
// printed (and recorded) for the README.
TEST_P(ParityTest, Bf16ScoresStayWithinTheirBound) {
  if (!CpuHasBf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16; bf16 models are built fp32";
  const Agreement a = ScoreAt(GetParam(), Precision::kBf16);
  RecordProperty("bf16_max_abs_error", absl::StrCat(a.max_error));
  RecordProperty("bf16_min_spearman", absl::StrCat(a.min_spearman));
  EXPECT_LE(a.max_error, kBf16Tolerance);
}

// int8 stays within kInt8Tolerance of the reference and keeps the order of
// the candidates of a request (Spearman >= kInt8MinSpearman).
TEST_P(ParityTest, Int8ScoresStayWithinTheirBound) {
  if (!CpuHasInt8()) GTEST_SKIP() << "this CPU has no AVX512_VNNI; int8 models are built bf16 or fp32";
  const Agreement a = ScoreAt(GetParam(), Precision::kInt8);
  RecordProperty("int8_max_abs_error", absl::StrCat(a.max_error));
  RecordProperty("int8_min_spearman", absl::StrCat(a.min_spearman));
  EXPECT_LE(a.max_error, kInt8Tolerance);
  EXPECT_GE(a.min_spearman, kInt8MinSpearman);
}

// Heavy tails: the large case's candidates with every dense value multiplied
// by 1 + |t| (Student's t, 2 degrees of freedom, up to 90): int8 keeps their
// order against the model's own fp32 scores. (Fixtures of categorical
// fields only are unchanged by it.)
TEST_P(ParityTest, Int8KeepsTheOrderOfHeavyTailedCandidates) {
  if (!CpuHasInt8()) GTEST_SKIP() << "this CPU has no AVX512_VNNI; int8 models are built bf16 or fp32";
  const std::string name = GetParam();
  const auto fixture = testing::ReadParityFixture(name);
  const auto largest = std::max_element(fixture.cases().begin(), fixture.cases().end(), [](const auto& a, const auto& b) {
    return a.request().candidates_size() < b.request().candidates_size();
  });
  serving::v1::RankRequest request = largest->request();
  std::mt19937 rng(7);
  std::student_t_distribution<float> t(2.0f);
  for (auto& candidate : *request.mutable_candidates()) {
    for (float& x : *candidate.mutable_features()->mutable_dense()) x *= 1.0f + std::min(std::fabs(t(rng)), 89.0f);
  }
  std::vector<float> scores[2];
  int tasks = 0;
  for (const Precision precision : {Precision::kF32, Precision::kInt8}) {
    auto repo = LoadFixture(name, precision);
    ASSERT_NE(repo, nullptr);
    scores[precision == Precision::kInt8] = ScoreRequest(*repo, request, precision, &tasks);
    ASSERT_EQ(scores[precision == Precision::kInt8].size(), static_cast<size_t>(request.candidates_size()) * tasks);
  }
  double worst = 1;
  for (int t = 0; t < tasks; ++t) {
    worst = std::min(worst, Spearman(TaskScores(scores[1], tasks, t), TaskScores(scores[0], tasks, t)));
  }
  std::printf("[ parity ] %s int8, heavy-tailed dense values: smallest Spearman with fp32 = %.5f\n", name.c_str(),
              worst);
  EXPECT_GE(worst, kInt8MinSpearman);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ParityTest, ::testing::ValuesIn(testing::FixtureNames()),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST(ParityFixturesTest, CoverEveryReferenceConfiguration) {
  const std::vector<std::string> names = testing::FixtureNames();
  for (const char* required : {"paper-criteo-parallel", "paper-criteo-serial", "twitter-recap-small"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end()) << required;
  }
}

}  // namespace
}  // namespace masknet
