// Model versions published, broken and removed under continuous calls, with
// the repository watched: no call fails or waits on a swap.

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loader/model_repository.h"
#include "tests/server_harness.h"
#include "tests/test_util.h"
#include "tests/waiting.h"

namespace masknet {
namespace {

using serving::v1::RankRequest;
using serving::v1::RankResponse;

class HotReloadTest : public ::testing::Test {
 protected:
  HotReloadTest()
      : root_(testing::MakeTempDir()),
        spec_(*ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig))),
        request_(MakeRequest()) {
    Publish(1, testing::RandomWeights(spec_, 1));
  }

  RankRequest MakeRequest() {
    RankRequest r = testing::RandomRequest(spec_.schema, 40, 7).ToProto();
    r.set_model_name("tiny");
    return r;
  }

  // The safe way: write elsewhere on the same file system, then rename into
  // place, so that the watcher never sees a version half-written.
  void Publish(int64_t version, const TensorMap& weights) {
    const std::string staging = testing::MakeTempDir();
    const std::string written = testing::WriteModelVersion(staging, "tiny", version, testing::kTinyConfig, weights);
    std::filesystem::create_directories(root_ + "/tiny");
    std::filesystem::rename(written, absl::StrCat(root_, "/tiny/", version));
  }

  // Calls from `threads` threads until Stop; counts answers by status and by
  // the version that scored them.
  void StartCalls(testing::ServerHarness& harness, int threads) {
    for (int t = 0; t < threads; ++t) {
      callers_.emplace_back([this, &harness] {
        while (!stop_) {
          RankResponse response;
          const grpc::Status status = harness.Rank(request_, &response, absl::Seconds(30));
          absl::MutexLock lock(&mu_);
          if (status.ok()) {
            ++by_version_[response.model_version()];
          } else {
            failures_.push_back(status.error_message());
          }
        }
      });
    }
  }
  void StopCalls() {
    stop_ = true;
    for (auto& t : callers_) t.join();
  }
  int64_t Answered(int64_t version) {
    absl::MutexLock lock(&mu_);
    return by_version_[version];
  }
  // Waits until `version` has answered more than `after` calls.
  ::testing::AssertionResult WaitForAnswersFrom(int64_t version, int64_t after = 20) {
    return testing::WaitUntil(
        absl::StrCat("more than ", after, " answers from version ", version), [&] { return Answered(version); },
        [&](int64_t answered) { return answered > after; });
  }

  std::string root_;
  ModelSpec spec_;
  RankRequest request_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> callers_;
  absl::Mutex mu_;
  std::map<int64_t, int64_t> by_version_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> failures_ ABSL_GUARDED_BY(mu_);
};

TEST_F(HotReloadTest, VersionsPublishedBrokenAndRemovedUnderLoadFailNoCall) {
  GrpcServer::Options options;
  options.service.scheduler.num_workers = 2;
  testing::ServerHarness harness(root_, options, /*max_batch_size=*/32);
  RepositoryWatcher watcher(&harness.repository(), absl::Milliseconds(20));
  StartCalls(harness, 4);
  ASSERT_TRUE(WaitForAnswersFrom(1));

  // A new version is swapped in.
  Publish(2, testing::RandomWeights(spec_, 2));
  ASSERT_TRUE(WaitForAnswersFrom(2));

  // A corrupt version is refused; version 2 keeps serving.
  TensorMap broken = testing::RandomWeights(spec_, 3);
  broken.erase("mlp.0.weight");
  Publish(3, broken);
  absl::SleepFor(absl::Milliseconds(200));  // several polls
  EXPECT_EQ((*harness.repository().Find("tiny", 0))->version, 2);
  EXPECT_TRUE(WaitForAnswersFrom(2, Answered(2)));

  // Removing the newest version rolls back to the one before.
  std::filesystem::remove_all(root_ + "/tiny/3");
  std::filesystem::remove_all(root_ + "/tiny/2");
  EXPECT_TRUE(testing::WaitUntil("versions 2 and 3 to be unloaded",
                                  [&] { return harness.repository().List().size() == 1; }));
  EXPECT_THAT(harness.repository().List(), ::testing::ElementsAre(std::make_pair(std::string("tiny"), int64_t{1})));
  EXPECT_TRUE(WaitForAnswersFrom(1, Answered(1)));

  StopCalls();
  absl::MutexLock lock(&mu_);
  EXPECT_THAT(failures_, ::testing::IsEmpty());
}

}  // namespace
}  // namespace masknet
