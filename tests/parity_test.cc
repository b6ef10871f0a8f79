// The in-process forward pass equals the PyTorch reference on the committed
// fixtures (tests/fixtures/<name>/, written by tools/write_fixtures.py)
// within 1e-5 per probability.

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "loader/model_repository.h"
#include "model/bf16.h"
#include "server/rank_request.h"
#include "tests/fixtures.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

// Largest |score - reference| bf16 may give on any fixture: bfloat16 keeps 8
// bits of mantissa (relative rounding 2^-9) in every matmul input and weight.
// The measured worst case over the fixtures is printed by the test.
constexpr double kBf16Tolerance = 0.05;

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
    const std::vector<float> scores = testing::ScoreAll(model, *features);
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

// bf16 stays within kBf16Tolerance of the reference; the worst error is
// printed (and recorded) for the README.
TEST_P(ParityTest, Bf16ScoresStayWithinTheirBound) {
  if (!CpuHasBf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16; bf16 models are built fp32";
  const std::string name = GetParam();
  const auto fixture = testing::ReadParityFixture(name);
  auto repo = LoadFixture(name, Precision::kBf16);
  ASSERT_NE(repo, nullptr);
  double worst = 0;
  for (const auto& c : fixture.cases()) {
    auto servable = repo->Find(c.request().model_name(), c.request().model_version());
    ASSERT_TRUE(servable.ok()) << servable.status();
    const MaskNetModel& model = *(*servable)->model;
    ASSERT_EQ(model.precision(), Precision::kBf16);
    auto features = ParseRankRequest(c.request(), model.spec().schema, 1 << 20);
    ASSERT_TRUE(features.ok()) << features.status();
    const std::vector<float> scores = testing::ScoreAll(model, *features);
    for (int i = 0; i < c.expected().candidates_size(); ++i) {
      for (int t = 0; t < model.num_tasks(); ++t) {
        worst = std::max(worst, std::fabs(static_cast<double>(scores[i * model.num_tasks() + t]) -
                                          c.expected().candidates(i).scores(t)));
      }
    }
  }
  RecordProperty("bf16_max_abs_error", absl::StrCat(worst));
  std::printf("[ parity ] %s bf16: max |score - reference| = %.3g\n", name.c_str(), worst);
  EXPECT_LE(worst, kBf16Tolerance);
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
