// Cross-request batching behind a real gRPC server: calls merged into
// batches keep their own scores; cancelled, expired and refused calls; one
// model's backlog against another model's call.

#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loader/model_loader.h"
#include "server/ranking_server.h"
#include "tests/fixtures.h"
#include "tests/server_harness.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

using serving::v1::RankRequest;
using serving::v1::RankResponse;
using testing::AsyncRank;
using testing::ServerHarness;
using ::testing::HasSubstr;

RankRequest RandomRankRequest(const ModelSpec& spec, const std::string& model, int candidates, uint32_t seed) {
  RankRequest r = testing::RandomRequest(spec.schema, candidates, seed).ToProto();
  r.set_model_name(model);
  return r;
}

TEST(ServerBatchingTest, ConcurrentCallsOnTwoModelsGetTheScoresEachGetsAlone) {
  const std::string root = testing::MakeTempDir();
  const ModelSpec spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "alpha", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  testing::WriteModelVersion(root, "beta", 1, testing::kTinyConfig, testing::RandomWeights(spec, 2));
  RankingServer::Options options;
  options.service.scheduler.num_workers = 2;
  options.service.queue.batch_timeout = absl::Milliseconds(2);  // merge eagerly
  ServerHarness harness(root, options, /*max_batch_size=*/32);

  // Sizes from 1 to 2x the batch size, each call with its own context.
  std::vector<RankRequest> requests;
  std::vector<RankResponse> alone;
  for (int i = 0; i < 48; ++i) {
    requests.push_back(RandomRankRequest(spec, i % 2 ? "beta" : "alpha", 1 + (i * 37) % 64, 100 + i));
    alone.emplace_back();
    ASSERT_TRUE(harness.Rank(requests.back(), &alone.back()).ok());
  }
  std::vector<std::vector<RankResponse>> together(requests.size(), std::vector<RankResponse>(3));
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t) {
    threads.emplace_back([&, t] {
      for (int repeat = 0; repeat < 3; ++repeat) {
        for (size_t i = t; i < requests.size(); i += 12) {
          const grpc::Status s = harness.Rank(requests[i], &together[i][repeat]);
          EXPECT_TRUE(s.ok()) << s.error_message();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    for (const RankResponse& r : together[i]) {
      EXPECT_EQ(r.model_name(), requests[i].model_name());
      ASSERT_EQ(r.candidates_size(), requests[i].candidates_size());
      for (int c = 0; c < r.candidates_size(); ++c) {
        EXPECT_EQ(r.candidates(c).id(), requests[i].candidates(c).id());
        for (int k = 0; k < 2; ++k) {
          // Equal up to float rounding: oneDNN picks its kernel by the
          // batch's row count, and a merged batch has another.
          EXPECT_NEAR(r.candidates(c).scores(k), alone[i].candidates(c).scores(k), 1e-6)
              << "request " << i << " candidate " << c;
        }
      }
    }
  }
  const BatchQueueStats a = *harness.server().service().QueueStats("alpha", 1);
  const BatchQueueStats b = *harness.server().service().QueueStats("beta", 1);
  EXPECT_EQ(a.queued_candidates + a.running_candidates + b.queued_candidates + b.running_candidates, 0);
}

// One worker and the two full-size paper configurations: a call of 8192
// candidates keeps the worker busy for a good part of a second.
class SlowModelTest : public ::testing::Test {
 protected:
  static constexpr int kHuge = 8192;
  static constexpr int kBatch = 256;
  static constexpr char kParallel[] = "paper-criteo-parallel";
  static constexpr char kSerial[] = "paper-criteo-serial";

  static std::string MakeRoot() {
    const std::string root = testing::MakeTempDir();
    for (const std::string name : {kParallel, kSerial}) {
      std::filesystem::create_directory_symlink(testing::FixtureModelRoot(name) + "/" + name, root + "/" + name);
    }
    return root;
  }

  static RankingServer::Options Options(int64_t max_queued_candidates, bool admit_by_deadline) {
    RankingServer::Options options;
    options.service.max_candidates = kHuge;
    options.service.scheduler.num_workers = 1;
    options.service.queue.max_queued_candidates = max_queued_candidates;
    options.service.queue.admit_by_deadline = admit_by_deadline;
    return options;
  }

  SlowModelTest() : spec_(ReadSpec()) {}

  // Both configurations read the same fields.
  static ModelSpec ReadSpec() {
    const std::string name = kParallel;
    auto config = ReadModelConfig(testing::FixtureModelRoot(name) + "/" + name + "/1/model_config.pbtxt");
    return *ModelSpec::FromConfig(*config);
  }

  RankRequest Request(const std::string& model, int candidates, uint32_t seed) {
    return RandomRankRequest(spec_, model, candidates, seed);
  }

  static BatchQueueStats Stats(ServerHarness& h, const std::string& model) {
    return h.server().service().QueueStats(model, 0).value_or(BatchQueueStats{});
  }
  // Candidates of a model's calls accepted and not yet finished or left.
  static int64_t Accepted(const BatchQueueStats& s) {
    return s.queued_candidates + s.running_candidates + s.processed_candidates;
  }
  template <typename Predicate>
  static void WaitFor(ServerHarness& h, const std::string& model, Predicate done) {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (!done(Stats(h, model))) {
      ASSERT_LT(absl::Now(), give_up) << "timed out waiting for the queue";
      absl::SleepFor(absl::Microseconds(200));
    }
  }

  ModelSpec spec_;
};

TEST_F(SlowModelTest, ACancelledCallLeavesItsQueueAtOnceUnscored) {
  ServerHarness h(MakeRoot(), Options(4 * kHuge, /*admit_by_deadline=*/true), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge;
  for (int i = 0; i < 3; ++i) huge.push_back(std::make_unique<AsyncRank>(h.stub(), Request(kParallel, kHuge, 1 + i)));
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; });
  AsyncRank doomed(h.stub(), Request(kParallel, 100, 9));
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge + 100; });
  doomed.Cancel();
  EXPECT_EQ(doomed.Wait().error_code(), grpc::StatusCode::CANCELLED);
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; });
  EXPECT_LT(Stats(h, kParallel).processed_candidates, 3 * kHuge) << "the huge calls ended first";
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok()) << call->Wait().error_message();
  EXPECT_EQ(Stats(h, kParallel).processed_candidates, 3 * kHuge);  // never the cancelled one's
}

TEST_F(SlowModelTest, ACallWhoseDeadlinePassesInTheQueueIsNotScoredAndFreesItsCapacity) {
  ServerHarness h(MakeRoot(), Options(3 * kHuge + 100, /*admit_by_deadline=*/false), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge;
  for (int i = 0; i < 3; ++i) huge.push_back(std::make_unique<AsyncRank>(h.stub(), Request(kParallel, kHuge, 1 + i)));
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; });
  AsyncRank late(h.stub(), Request(kParallel, 100, 9), absl::Milliseconds(100));
  EXPECT_EQ(late.Wait().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; });
  // Its capacity is free again: a call as large is accepted.
  EXPECT_LT(Stats(h, kParallel).processed_candidates, 3 * kHuge) << "the huge calls ended first";
  AsyncRank next(h.stub(), Request(kParallel, 100, 10));
  EXPECT_TRUE(next.Wait().ok()) << next.Wait().error_message();
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
  EXPECT_EQ(Stats(h, kParallel).processed_candidates, 3 * kHuge + 100);  // never the expired one's
}

TEST_F(SlowModelTest, AFullQueueAnswersResourceExhausted) {
  ServerHarness h(MakeRoot(), Options(kHuge + 100, /*admit_by_deadline=*/true), kBatch);
  AsyncRank huge(h.stub(), Request(kParallel, kHuge, 1));
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return s.running_candidates > 0; });
  RankResponse response;
  const grpc::Status s = h.Rank(Request(kParallel, 400, 2), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("--max_queued_candidates"));
  EXPECT_TRUE(huge.Wait().ok());
}

TEST_F(SlowModelTest, ACallThatWouldMissItsDeadlineIsRefusedAtOnce) {
  ServerHarness h(MakeRoot(), Options(4 * kHuge, /*admit_by_deadline=*/true), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge;
  for (int i = 0; i < 3; ++i) huge.push_back(std::make_unique<AsyncRank>(h.stub(), Request(kParallel, kHuge, 1 + i)));
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return s.batches >= 2; });  // cost measured
  RankResponse response;
  const grpc::Status s = h.Rank(Request(kParallel, 64, 2), &response, absl::Milliseconds(50));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("would miss its deadline"));
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
}

TEST_F(SlowModelTest, AHugeCallOnOneModelDelaysAnotherModelsCallByAtMostOneBatch) {
  ServerHarness h(MakeRoot(), Options(4 * kHuge, /*admit_by_deadline=*/true), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge;
  for (int i = 0; i < 2; ++i) huge.push_back(std::make_unique<AsyncRank>(h.stub(), Request(kParallel, kHuge, 1 + i)));
  WaitFor(h, kParallel, [](const BatchQueueStats& s) { return s.running_candidates > 0; });
  const int64_t before = Stats(h, kParallel).processed_candidates;
  RankResponse response;
  const grpc::Status s = h.Rank(Request(kSerial, 5, 3), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.candidates_size(), 5);
  const int64_t after = Stats(h, kParallel).processed_candidates;
  ASSERT_LT(after, 2 * kHuge) << "the huge calls ended first";
  // The batch running when the call came, and at most one more that a
  // worker was already taking.
  EXPECT_LE(after - before, 2 * kBatch);
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
}

}  // namespace
}  // namespace masknet
