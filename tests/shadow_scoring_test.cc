// Shadow scoring: a sample of the calls the `stable` version answers is
// scored again by the `canary` version, in the background, and only the
// difference is recorded.

#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "server/grpc_server.h"
#include "server/metrics.h"
#include "tests/server_harness.h"
#include "tests/test_util.h"
#include "tests/waiting.h"

namespace masknet {
namespace {

using serving::v1::RankRequest;
using serving::v1::RankResponse;
using testing::MetricValue;
using testing::ServerHarness;

// Samples of the series of the pair stable=1, canary=2 of model "tiny" (the
// labels in Prometheus's alphabetical order).
std::string Calls(const std::string& outcome) {
  return absl::StrCat("masknet_shadow_calls_total{canary_version=\"2\",model=\"tiny\",outcome=\"", outcome,
                      "\",stable_version=\"1\"}");
}
std::string Difference(const std::string& suffix, const std::string& task, const std::string& le = "") {
  return absl::StrCat("masknet_shadow_score_difference", suffix,
                      "{canary_version=\"2\",model=\"tiny\",stable_version=\"1\",task=\"", task, "\"",
                      le.empty() ? "" : absl::StrCat(",le=\"", le, "\""), "}");
}
std::string ShadowScoresSum(const std::string& scored_by, const std::string& task) {
  return absl::StrCat("masknet_shadow_scores_sum{canary_version=\"2\",model=\"tiny\",scored_by=\"", scored_by,
                      "\",stable_version=\"1\",task=\"", task, "\"}");
}

class ShadowScoringTest : public ::testing::Test {
 protected:
  ShadowScoringTest() : spec_(*ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig))) {}

  // A root with versions 1 and 2 of "tiny" (version 2 from `canary_config`
  // and weights of `canary_seed`), 1 labelled stable and 2 canary, with
  // `rollout_extra` added to the rollout file.
  std::string MakeRoot(uint32_t canary_seed, const std::string& rollout_extra,
                       const std::string& canary_config = testing::kTinyConfig) {
    const std::string root = testing::MakeTempDir();
    testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec_, 1));
    const ModelSpec canary = *ModelSpec::FromConfig(testing::ParseConfigOrDie(canary_config));
    testing::WriteModelVersion(root, "tiny", 2, canary_config, testing::RandomWeights(canary, canary_seed));
    testing::WriteFileOrDie(root + "/tiny/rollout.pbtxt",
                            absl::StrCat(R"pb(labels { name: "stable" version: 1 }
                                              labels { name: "canary" version: 2 })pb",
                                         "\n", rollout_extra));
    return root;
  }

  GrpcServer::Options WithMetrics(GrpcServer::Options options = {}) {
    options.service.metrics = &metrics_;
    // The shadow worker runs under SCHED_IDLE: while other tests keep every
    // core busy it may wait seconds for one, and a shadow call must not be
    // dropped for that (a test that wants drops sets its own delay).
    options.service.shadow_max_delay = RankerService::Options::kMaxShadowDelay;
    return options;
  }

  // "tiny" with a canary's MLP of ~17 MFLOP per candidate (the stable
  // version's costs a few kFLOP).
  static std::string SlowConfig() {
    return absl::StrReplaceAll(
        testing::kTinyConfig,
        {{"mlp { output_size: 8 activation: RELU }",
          "mlp { output_size: 2048 activation: RELU } mlp { output_size: 2048 activation: RELU }"}});
  }

  RankRequest Request(int candidates, uint32_t seed) {
    RankRequest r = testing::RandomRequest(spec_.schema, candidates, seed).ToProto();
    r.set_model_name("tiny");
    return r;
  }

  double Metric(const std::string& sample) { return MetricValue(metrics_.Serialize(), sample); }

  // Waits until the shadow calls that ended (scored, dropped or failed)
  // number `calls`.
  ::testing::AssertionResult ShadowsEnded(double calls) {
    return testing::WaitUntil(
        "the shadow calls to end",
        [&] {
          return std::max(0.0, Metric(Calls("scored"))) + std::max(0.0, Metric(Calls("dropped"))) +
                 std::max(0.0, Metric(Calls("failed")));
        },
        [calls](double ended) { return ended >= calls; });
  }

  ModelSpec spec_;
  ServerMetrics metrics_;
};

TEST_F(ShadowScoringTest, AnswersStayStablesAndTheCanarysDifferenceIsRecorded) {
  constexpr int kCalls = 12, kCandidates = 5;
  ServerHarness shadowed(MakeRoot(/*canary_seed=*/2, "shadow_fraction: 1"), WithMetrics());
  ServerHarness plain(MakeRoot(/*canary_seed=*/2, ""));  // the same versions, no shadowing
  double expected_difference[2] = {0, 0}, stable_sum[2] = {0, 0}, canary_sum[2] = {0, 0};
  for (int i = 0; i < kCalls; ++i) {
    RankRequest request = Request(kCandidates, 100 + i);
    RankResponse answer, reference, canary;
    ASSERT_TRUE(shadowed.Rank(request, &answer).ok());
    ASSERT_TRUE(plain.Rank(request, &reference).ok());
    EXPECT_EQ(answer.model_version(), 1);
    ASSERT_EQ(answer.candidates_size(), kCandidates);
    for (int c = 0; c < kCandidates; ++c) {
      // Shadowing changes nothing in an answer.
      EXPECT_THAT(answer.candidates(c).scores(), ::testing::ElementsAreArray(reference.candidates(c).scores()));
    }
    request.set_model_version_label("canary");  // calls the canary answers are not shadowed
    ASSERT_TRUE(shadowed.Rank(request, &canary).ok());
    EXPECT_EQ(canary.model_version(), 2);
    for (int c = 0; c < kCandidates; ++c) {
      for (int t = 0; t < 2; ++t) {
        expected_difference[t] += std::abs(canary.candidates(c).scores(t) - answer.candidates(c).scores(t));
        stable_sum[t] += answer.candidates(c).scores(t);
        canary_sum[t] += canary.candidates(c).scores(t);
      }
    }
  }
  ASSERT_TRUE(ShadowsEnded(kCalls));
  EXPECT_EQ(Metric(Calls("scored")), kCalls);
  EXPECT_EQ(Metric(Calls("dropped")), 0);
  EXPECT_EQ(Metric(Calls("failed")), 0);
  const std::string tasks[2] = {"click", "like"};
  for (int t = 0; t < 2; ++t) {
    EXPECT_EQ(Metric(Difference("_count", tasks[t])), kCalls * kCandidates) << tasks[t];
    EXPECT_NEAR(Metric(Difference("_sum", tasks[t])), expected_difference[t], 1e-4 * kCalls * kCandidates)
        << tasks[t];
    EXPECT_GT(expected_difference[t], 0.01) << "the test's two versions should differ";
    EXPECT_NEAR(Metric(ShadowScoresSum("stable", tasks[t])), stable_sum[t], 1e-4 * kCalls * kCandidates);
    EXPECT_NEAR(Metric(ShadowScoresSum("canary", tasks[t])), canary_sum[t], 1e-4 * kCalls * kCandidates);
  }
  // The canary's own series count only the calls it answered.
  const std::string canary = "{model=\"tiny\",version=\"2\"}";
  EXPECT_EQ(Metric("masknet_rank_latency_seconds_count" + canary), kCalls);
  EXPECT_EQ(Metric("masknet_batch_size_candidates_sum" + canary), kCalls * kCandidates);
}

TEST_F(ShadowScoringTest, AnIdenticalCanaryDiffersByNothing) {
  constexpr int kCalls = 6, kCandidates = 7;
  ServerHarness harness(MakeRoot(/*canary_seed=*/1, "shadow_fraction: 1"), WithMetrics());
  for (int i = 0; i < kCalls; ++i) {
    RankResponse answer;
    ASSERT_TRUE(harness.Rank(Request(kCandidates, i), &answer).ok());
  }
  ASSERT_TRUE(ShadowsEnded(kCalls));
  for (const std::string task : {"click", "like"}) {
    EXPECT_EQ(Metric(Difference("_count", task)), kCalls * kCandidates) << task;
    EXPECT_EQ(Metric(Difference("_sum", task)), 0) << task;
    EXPECT_EQ(Metric(Difference("_bucket", task, "0.0001")), kCalls * kCandidates) << task;
  }
}

TEST_F(ShadowScoringTest, AShareOfTheCallsIsShadowed) {
  constexpr int kCalls = 200;
  ServerHarness harness(MakeRoot(/*canary_seed=*/2, "shadow_fraction: 0.25"), WithMetrics());
  for (int i = 0; i < kCalls; ++i) {
    RankResponse answer;
    ASSERT_TRUE(harness.Rank(Request(1, i), &answer).ok());
  }
  // Each call is sampled with probability 1/4: 50 expected, and outside
  // [20, 85] with probability below 1e-6.
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_TRUE(testing::WaitUntil(
      "the sampled shadow calls to be scored", [&] { return Metric(Calls("scored")); },
      [](double n) { return n >= 20; }));
  EXPECT_LE(Metric(Calls("scored")), 85);
}

TEST_F(ShadowScoringTest, ACanaryThatCannotReadTheStablesCallsCountsThemFailed) {
  // The canary reads "age" as a width-2 field: no call stable answers fits it.
  const std::string canary_config = absl::StrReplaceAll(
      testing::kTinyConfig, {{"dense { width: 1 non_finite: REJECT", "dense { width: 2 non_finite: REJECT"}});
  ServerHarness harness(MakeRoot(/*canary_seed=*/2, "shadow_fraction: 1", canary_config), WithMetrics());
  for (int i = 0; i < 3; ++i) {
    RankResponse answer;
    ASSERT_TRUE(harness.Rank(Request(4, i), &answer).ok());
    EXPECT_EQ(answer.candidates_size(), 4);
  }
  // Counted once each call is answered: after its caller may have the answer.
  ASSERT_TRUE(ShadowsEnded(3));
  EXPECT_EQ(Metric(Calls("failed")), 3);
  EXPECT_EQ(Metric(Calls("scored")), 0);
}

TEST_F(ShadowScoringTest, ASlowCanaryIsDroppedFirstWhileTheCallsKeepTheirDeadlines) {
  // Shadowing every call on the slow canary would take the workers many
  // times over.
  GrpcServer::Options options = WithMetrics();
  options.service.scheduler.num_workers = 2;
  options.service.shadow_max_queued_candidates = 256;
  options.service.shadow_max_delay = absl::Milliseconds(200);
  ServerHarness harness(MakeRoot(/*canary_seed=*/2, "shadow_fraction: 1", SlowConfig()), options);
  constexpr int kThreads = 4, kCallsPerThread = 40, kCandidates = 128;
  constexpr absl::Duration kDeadline = absl::Seconds(10);
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        RankResponse answer;
        const grpc::Status s = harness.Rank(Request(kCandidates, t * 1000 + i), &answer, kDeadline);
        if (s.ok() && answer.candidates_size() == kCandidates) {
          ++ok;
        } else {
          ++failed;
          ADD_FAILURE() << s.error_code() << ": " << s.error_message();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kCallsPerThread);
  EXPECT_EQ(failed.load(), 0);
  // Every answered call had a shadow; most could not be scored in time.
  ASSERT_TRUE(ShadowsEnded(ok.load()));
  EXPECT_EQ(Metric(Calls("scored")) + Metric(Calls("dropped")), ok.load());
  EXPECT_GT(Metric(Calls("dropped")), 0);
  EXPECT_EQ(Metric(Calls("failed")), 0);
}

TEST_F(ShadowScoringTest, AShadowCallTheCpuShareLeavesNoTimeForIsDroppedBeforeTheCallIsQueued) {
  // A slow canary, shadow scoring bounded to 1/10,000 of the workers' CPU:
  // once one shadow batch has shown what a candidate costs, a 256-candidate
  // shadow call would take minutes to be scored, past --shadow_max_delay,
  // and is dropped when its call is sampled (not after waiting out its
  // delay in the queue).
  GrpcServer::Options options = WithMetrics();
  options.service.scheduler.num_workers = 2;
  options.service.shadow_cpu_share = 1e-4;
  ServerHarness harness(MakeRoot(/*canary_seed=*/2, "shadow_fraction: 1", SlowConfig()), options);
  RankResponse answer;
  ASSERT_TRUE(harness.Rank(Request(8, 1), &answer).ok());
  ASSERT_TRUE(ShadowsEnded(1));
  ASSERT_EQ(Metric(Calls("scored")), 1);
  ASSERT_TRUE(harness.Rank(Request(256, 2), &answer).ok());
  EXPECT_EQ(answer.candidates_size(), 256);
  // Counted before the call was answered.
  EXPECT_EQ(Metric(Calls("dropped")), 1);
  EXPECT_EQ(Metric(Calls("scored")), 1);
  EXPECT_EQ(Metric(Calls("failed")), 0);
}

}  // namespace
}  // namespace masknet
