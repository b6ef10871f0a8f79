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
#include "server/grpc_server.h"
#include "tests/fixtures.h"
#include "tests/server_harness.h"
#include "tests/test_util.h"
#include "tests/waiting.h"

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
  GrpcServer::Options options;
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

  static GrpcServer::Options Options(int64_t max_queued_candidates, bool admit_by_deadline) {
    GrpcServer::Options options;
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

  // `n` calls of kHuge candidates to the parallel model, all built before
  // the first is sent (building one takes a while under a sanitizer).
  std::vector<RankRequest> HugeRequests(int n) {
    std::vector<RankRequest> out;
    for (int i = 0; i < n; ++i) out.push_back(Request(kParallel, kHuge, 1 + i));
    return out;
  }

  // `n` calls of kHuge candidates to the parallel model, sent at once.
  std::vector<std::unique_ptr<AsyncRank>> SendHuge(ServerHarness& h, int n) {
    std::vector<std::unique_ptr<AsyncRank>> calls;
    for (const RankRequest& r : HugeRequests(n)) calls.push_back(std::make_unique<AsyncRank>(h.stub(), r));
    return calls;
  }

  static BatchQueueStats Stats(ServerHarness& h, const std::string& model) {
    return h.server().service().QueueStats(model, 0).value_or(BatchQueueStats{});
  }
  // Candidates of a model's calls accepted and not yet finished or left.
  static int64_t Accepted(const BatchQueueStats& s) {
    return s.queued_candidates + s.running_candidates + s.processed_candidates;
  }
  // Waits until `done` holds for a model's queue statistics.
  template <typename Predicate>
  static ::testing::AssertionResult WaitFor(ServerHarness& h, const std::string& model, Predicate done) {
    return testing::WaitUntil(
        absl::StrCat(model, "'s queue"),
        [&] {
          const BatchQueueStats s = Stats(h, model);
          return absl::StrCat("queued ", s.queued_candidates, ", running ", s.running_candidates, ", processed ",
                              s.processed_candidates, " in ", s.batches, " batches");
        },
        [&](const std::string&) { return done(Stats(h, model)); });
  }

  ModelSpec spec_;
};

TEST_F(SlowModelTest, ACancelledCallLeavesItsQueueAtOnceUnscored) {
  ServerHarness h(MakeRoot(), Options(4 * kHuge, /*admit_by_deadline=*/true), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge = SendHuge(h, 3);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; }));
  AsyncRank doomed(h.stub(), Request(kParallel, 100, 9));
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge + 100; }));
  doomed.Cancel();
  EXPECT_EQ(doomed.Wait().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; }));
  EXPECT_LT(Stats(h, kParallel).processed_candidates, 3 * kHuge) << "the huge calls ended first";
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok()) << call->Wait().error_message();
  EXPECT_EQ(Stats(h, kParallel).processed_candidates, 3 * kHuge);  // never the cancelled one's
}

TEST_F(SlowModelTest, ACallWhoseDeadlinePassesInTheQueueIsNotScoredAndFreesItsCapacity) {
  ServerHarness h(MakeRoot(), Options(3 * kHuge + 100, /*admit_by_deadline=*/false), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge = SendHuge(h, 3);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; }));
  AsyncRank late(h.stub(), Request(kParallel, 100, 9), absl::Milliseconds(100));
  EXPECT_EQ(late.Wait().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 3 * kHuge; }));
  // Its capacity is free again: a call as large is accepted.
  EXPECT_LT(Stats(h, kParallel).processed_candidates, 3 * kHuge) << "the huge calls ended first";
  AsyncRank next(h.stub(), Request(kParallel, 100, 10));
  EXPECT_TRUE(next.Wait().ok()) << next.Wait().error_message();
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
  EXPECT_EQ(Stats(h, kParallel).processed_candidates, 3 * kHuge + 100);  // never the expired one's
}

TEST_F(SlowModelTest, AFullQueueAnswersResourceExhausted) {
  GrpcServer::Options options = Options(2 * kHuge + 100, /*admit_by_deadline=*/true);
  options.service.max_candidates = 2 * kHuge;
  ServerHarness h(MakeRoot(), options, kBatch);
  // Alone it fits the queue; behind the first two calls, it fits only once
  // they have all but 100 candidates scored, however many of their batches
  // ran before it arrived.
  const RankRequest another = Request(kParallel, 2 * kHuge, 3);
  std::vector<std::unique_ptr<AsyncRank>> huge = SendHuge(h, 2);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 2 * kHuge; }));
  RankResponse response;
  const grpc::Status s = h.Rank(another, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("--max_queued_candidates"));
  EXPECT_LT(Stats(h, kParallel).processed_candidates, 2 * kHuge) << "the huge calls ended first";
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
  // Once they are done, it fits.
  EXPECT_TRUE(h.Rank(another, &response).ok());
}

TEST_F(SlowModelTest, CallsBeyondMaxCallsInFlightAreRefusedAtOnce) {
  GrpcServer::Options options = Options(4 * kHuge, /*admit_by_deadline=*/false);
  options.service.max_calls_in_flight = 2;
  ServerHarness h(MakeRoot(), options, kBatch);
  const RankRequest another = Request(kParallel, 10, 3);
  std::vector<std::unique_ptr<AsyncRank>> huge = SendHuge(h, 2);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return Accepted(s) == 2 * kHuge; }));
  // Refused as long as the two huge calls are not both answered.
  RankResponse response;
  const grpc::Status s = h.Rank(another, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("the server holds 2 calls (--max_calls_in_flight=2); retry later"));
  EXPECT_LT(Stats(h, kParallel).processed_candidates, 2 * kHuge) << "the huge calls ended first";
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
  // Once they are answered there is room again.
  ASSERT_TRUE(testing::WaitUntil(
      "no call in flight", [&] { return h.server().service().calls_in_flight(); }, [](int64_t n) { return n == 0; }));
  EXPECT_TRUE(h.Rank(another, &response).ok());
}

TEST_F(SlowModelTest, ACallThatWouldMissItsDeadlineIsRefusedAtOnce) {
  ServerHarness h(MakeRoot(), Options(5 * kHuge, /*admit_by_deadline=*/true), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge = SendHuge(h, 4);
  const RankRequest request = Request(kParallel, 64, 2);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) {
    return Accepted(s) == 4 * kHuge && s.batches >= 2;  // all queued, cost measured
  }));
  RankResponse response;
  // Most of four huge calls ahead (over a second on the fastest machine
  // seen, against the 375 ms the deadline leaves after its headroom); 500 ms
  // is ample for the call itself to arrive.
  const grpc::Status s = h.Rank(request, &response, absl::Milliseconds(500));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("would miss its deadline"));
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
}

TEST_F(SlowModelTest, AHugeCallOnOneModelDelaysAnotherModelsCallByAtMostOneBatch) {
  ServerHarness h(MakeRoot(), Options(4 * kHuge, /*admit_by_deadline=*/true), kBatch);
  std::vector<std::unique_ptr<AsyncRank>> huge = SendHuge(h, 2);
  ASSERT_TRUE(WaitFor(h, kParallel, [](const BatchQueueStats& s) { return s.running_candidates > 0; }));
  AsyncRank call(h.stub(), Request(kSerial, 5, 3));
  // Counted from when the server has the call, however long it took to
  // arrive (batches go on running meanwhile).
  ASSERT_TRUE(WaitFor(h, kSerial, [](const BatchQueueStats& s) { return Accepted(s) == 5; }));
  const int64_t before = Stats(h, kParallel).processed_candidates;
  // ... to when the server has scored it (not when its answer arrives):
  // the parallel model's count read last before a look that found the call
  // still unscored. Batches go on running while this thread sleeps between
  // looks or waits for a core, so a count read after the call was scored
  // would be too high by however many ran meanwhile (on a loaded machine, a
  // batch too many). This one can only be too low, by what ran since the
  // look before; looks follow each other closely, so that is rarely a batch.
  int64_t after = before;
  const absl::Time give_up = absl::Now() + testing::kWaitTimeout;
  for (;;) {
    const int64_t parallel = Stats(h, kParallel).processed_candidates;
    if (Stats(h, kSerial).processed_candidates == 5) break;
    after = parallel;
    ASSERT_LT(absl::Now(), give_up) << "the serial model's call was never scored";
    absl::SleepFor(absl::Microseconds(100));
  }
  const grpc::Status s = call.Wait();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(call.response().candidates_size(), 5);
  ASSERT_LT(after, 2 * kHuge) << "the huge calls ended first";
  // The batch running when the call came, and at most one more that a
  // worker was already taking.
  EXPECT_LE(after - before, 2 * kBatch);
  for (auto& call : huge) EXPECT_TRUE(call->Wait().ok());
}

}  // namespace
}  // namespace masknet
