#include "server/batch_queue.h"

#include <atomic>
#include <stdexcept>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace masknet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

class CountingTask : public BatchTask {
 public:
  CountingTask(int64_t size, std::vector<absl::Status>* done, bool cancelled = false)
      : size_(size), done_(done), cancelled_(cancelled) {}
  int64_t size() const override { return size_; }
  bool cancelled() const override { return cancelled_; }
  void Done(absl::Status status) override { done_->push_back(std::move(status)); }

 private:
  int64_t size_;
  std::vector<absl::Status>* done_;
  bool cancelled_;
};

TEST(BatchQueueTest, SplitsLargeTasksIntoBatchesOfAtMostMaxBatchSize) {
  std::vector<std::pair<int64_t, int64_t>> batches;
  std::vector<absl::Status> done;
  {
    BatchQueue queue({/*max_batch_size=*/4, /*max_queued_candidates=*/100},
                     [&](absl::Span<const TaskSlice> slices) {
                       EXPECT_EQ(slices.size(), 1u);
                       batches.emplace_back(slices[0].begin, slices[0].end);
                       return absl::OkStatus();
                     });
    std::unique_ptr<BatchTask> task = std::make_unique<CountingTask>(10, &done);
    ASSERT_TRUE(queue.Schedule(&task).ok());
    EXPECT_EQ(task, nullptr);
  }  // the destructor drains the queue
  EXPECT_THAT(batches, ElementsAre(Pair(0, 4), Pair(4, 8), Pair(8, 10)));
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].ok());
}

TEST(BatchQueueTest, AnswersUnavailableWhenFullAndKeepsTheTask) {
  absl::Notification release;
  std::vector<absl::Status> done;
  BatchQueue queue({4, /*max_queued_candidates=*/10}, [&](absl::Span<const TaskSlice>) {
    release.WaitForNotification();
    return absl::OkStatus();
  });
  std::unique_ptr<BatchTask> first = std::make_unique<CountingTask>(8, &done);
  ASSERT_TRUE(queue.Schedule(&first).ok());
  std::unique_ptr<BatchTask> second = std::make_unique<CountingTask>(3, &done);
  const absl::Status s = queue.Schedule(&second);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("8 candidates are queued and this request adds 3"));
  EXPECT_NE(second, nullptr);  // not taken
  EXPECT_EQ(queue.queued_candidates(), 8);
  release.Notify();
  queue.Shutdown();
  EXPECT_EQ(queue.queued_candidates(), 0);
  EXPECT_EQ(done.size(), 1u);
}

TEST(BatchQueueTest, ShutdownFinishesAcceptedTasksThenRefusesNewOnes) {
  std::atomic<int64_t> scored{0};
  std::vector<absl::Status> done;
  BatchQueue queue({16, 1000}, [&](absl::Span<const TaskSlice> slices) {
    for (const TaskSlice& s : slices) scored += s.end - s.begin;
    return absl::OkStatus();
  });
  for (int i = 0; i < 20; ++i) {
    std::unique_ptr<BatchTask> task = std::make_unique<CountingTask>(7, &done);
    ASSERT_TRUE(queue.Schedule(&task).ok());
  }
  queue.Shutdown();
  EXPECT_EQ(scored.load(), 140);
  EXPECT_EQ(done.size(), 20u);
  std::unique_ptr<BatchTask> late = std::make_unique<CountingTask>(1, &done);
  const absl::Status s = queue.Schedule(&late);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("shutting down"));
}

TEST(BatchQueueTest, FailingBatchFailsItsTaskAndStopsItsRemainingSlices) {
  int calls = 0;
  std::vector<absl::Status> done;
  {
    BatchQueue queue({2, 100}, [&](absl::Span<const TaskSlice>) {
      ++calls;
      return absl::InternalError("boom");
    });
    std::unique_ptr<BatchTask> task = std::make_unique<CountingTask>(6, &done);
    ASSERT_TRUE(queue.Schedule(&task).ok());
  }
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].code(), absl::StatusCode::kInternal);
}

TEST(BatchQueueTest, CancelledTaskIsNotScored) {
  int calls = 0;
  std::vector<absl::Status> done;
  {
    BatchQueue queue({4, 100}, [&](absl::Span<const TaskSlice>) {
      ++calls;
      return absl::OkStatus();
    });
    std::unique_ptr<BatchTask> task = std::make_unique<CountingTask>(10, &done, /*cancelled=*/true);
    ASSERT_TRUE(queue.Schedule(&task).ok());
  }
  EXPECT_EQ(calls, 0);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].code(), absl::StatusCode::kCancelled);
}

TEST(BatchQueueTest, ExceptionInTheProcessorFailsTheTaskAndTheQueueGoesOn) {
  std::vector<absl::Status> done;
  int calls = 0;
  {
    BatchQueue queue({4, 100}, [&](absl::Span<const TaskSlice>) -> absl::Status {
      if (++calls == 1) throw std::runtime_error("out of memory");
      return absl::OkStatus();
    });
    for (int i = 0; i < 2; ++i) {
      std::unique_ptr<BatchTask> task = std::make_unique<CountingTask>(3, &done);
      ASSERT_TRUE(queue.Schedule(&task).ok());
    }
  }
  ASSERT_EQ(done.size(), 2u);
  EXPECT_EQ(done[0].code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(done[0].message()), HasSubstr("out of memory"));
  EXPECT_TRUE(done[1].ok());
}

}  // namespace
}  // namespace masknet
