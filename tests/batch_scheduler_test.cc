#include "batching/batch_scheduler.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/waiting.h"

namespace masknet {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::masknet::testing::kWaitTimeout;
using ::masknet::testing::WaitUntil;

// A task that records how it ended.
class TestTask : public BatchTask {
 public:
  explicit TestTask(int64_t size, absl::Time deadline = absl::InfiniteFuture(), int64_t bytes = 0)
      : size_(size), bytes_(bytes), deadline_(deadline) {}
  int64_t size() const override { return size_; }
  int64_t bytes() const override { return bytes_; }
  absl::Time deadline() const override { return deadline_; }
  void Done(absl::Status status) override {
    ++done_calls_;
    status_ = std::move(status);
    done_.Notify();
  }

  // Waits for Done and returns its status (DEADLINE_EXCEEDED if it has not
  // come within kWaitTimeout).
  absl::Status Wait() {
    if (!done_.WaitForNotificationWithTimeout(kWaitTimeout)) {
      return absl::DeadlineExceededError("the test timed out waiting for the task's Done");
    }
    return status_;
  }
  bool done() const { return done_.HasBeenNotified(); }
  int done_calls() const { return done_calls_; }

 private:
  int64_t size_, bytes_;
  absl::Time deadline_;
  std::atomic<int> done_calls_{0};
  absl::Status status_;
  absl::Notification done_;
};

// What a processor saw: (task, begin, end) per slice, per batch, in order.
struct Slice {
  const BatchTask* task;
  int64_t begin, end;
  bool operator==(const Slice& o) const { return task == o.task && begin == o.begin && end == o.end; }
};
class BatchLog {
 public:
  void Add(absl::Span<const TaskSlice> batch) {
    std::vector<Slice> slices;
    for (const TaskSlice& s : batch) slices.push_back({s.task, s.begin, s.end});
    absl::MutexLock lock(&mu_);
    batches_.push_back(std::move(slices));
  }
  std::vector<std::vector<Slice>> batches() const {
    absl::MutexLock lock(&mu_);
    return batches_;
  }

 private:
  mutable absl::Mutex mu_;
  std::vector<std::vector<Slice>> batches_;
};

// A processor that blocks until released, to hold the workers busy (or
// until kWaitTimeout, so that a test that failed before opening it ends).
class Gate {
 public:
  void Open() { open_.Notify(); }
  void Pass() { open_.WaitForNotificationWithTimeout(kWaitTimeout); }

 private:
  absl::Notification open_;
};

BatchScheduler::Options Workers(int num_workers) {
  BatchScheduler::Options o;
  o.num_workers = num_workers;
  return o;
}

BatchScheduler::QueueOptions QueueOptions(int64_t max_batch_size, int64_t max_queued = 1000) {
  BatchScheduler::QueueOptions o;
  o.max_batch_size = max_batch_size;
  o.max_queued_candidates = max_queued;
  o.batch_timeout = absl::ZeroDuration();
  return o;
}

// Waits until `queue` holds no candidate: the workers have taken every task.
::testing::AssertionResult Drained(BatchQueue& queue) {
  return WaitUntil(
      "the queue to empty", [&] { return queue.stats().queued_candidates; }, [](int64_t n) { return n == 0; });
}

TEST(BatchSchedulerTest, SplitsALargeTaskIntoBatchesOfAtMostMaxBatchSize) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  auto queue = scheduler.AddQueue(QueueOptions(4), [&](int, absl::Span<TaskSlice> batch) {
    log.Add(batch);
    return absl::OkStatus();
  });
  TestTask task(10);
  ASSERT_TRUE(queue->Schedule(&task).ok());
  EXPECT_TRUE(task.Wait().ok());
  EXPECT_THAT(log.batches(), ElementsAre(ElementsAre(Slice{&task, 0, 4}), ElementsAre(Slice{&task, 4, 8}),
                                         ElementsAre(Slice{&task, 8, 10})));
}

TEST(BatchSchedulerTest, OneBatchMergesSeveralTasksAndSplitsTheOneThatOverflows) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  TestTask blocker(1);
  auto queue = scheduler.AddQueue(QueueOptions(8), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    log.Add(batch);
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));  // blocker runs
  TestTask a(3), b(2), c(5);
  for (TestTask* t : {&a, &b, &c}) ASSERT_TRUE(queue->Schedule(t).ok());
  gate.Open();
  for (TestTask* t : {&a, &b, &c}) EXPECT_TRUE(t->Wait().ok());
  EXPECT_THAT(log.batches(), ElementsAre(ElementsAre(Slice{&blocker, 0, 1}),
                                         ElementsAre(Slice{&a, 0, 3}, Slice{&b, 0, 2}, Slice{&c, 0, 3}),
                                         ElementsAre(Slice{&c, 3, 5})));
}

TEST(BatchSchedulerTest, WithoutMergingABatchHoldsOneTask) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  TestTask blocker(1);
  BatchScheduler::QueueOptions options = QueueOptions(8);
  options.merge_tasks = false;
  auto queue = scheduler.AddQueue(options, [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    log.Add(batch);
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  TestTask a(3), b(10);
  for (TestTask* t : {&a, &b}) ASSERT_TRUE(queue->Schedule(t).ok());
  gate.Open();
  for (TestTask* t : {&a, &b}) EXPECT_TRUE(t->Wait().ok());
  EXPECT_THAT(log.batches(), ElementsAre(ElementsAre(Slice{&blocker, 0, 1}), ElementsAre(Slice{&a, 0, 3}),
                                         ElementsAre(Slice{&b, 0, 8}), ElementsAre(Slice{&b, 8, 10})));
}

TEST(BatchSchedulerTest, ABatchThatIsNotFullWaitsForItsTimeoutAndAFullOneRunsAtOnce) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  BatchScheduler::QueueOptions options = QueueOptions(4);
  options.batch_timeout = absl::Hours(1);
  auto queue = scheduler.AddQueue(options, [&](int, absl::Span<TaskSlice> batch) {
    log.Add(batch);
    return absl::OkStatus();
  });
  TestTask a(1), b(2), c(1);
  ASSERT_TRUE(queue->Schedule(&a).ok());
  ASSERT_TRUE(queue->Schedule(&b).ok());
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(a.done());  // 3 of 4: waits
  ASSERT_TRUE(queue->Schedule(&c).ok());
  for (TestTask* t : {&a, &b, &c}) EXPECT_TRUE(t->Wait().ok());
  EXPECT_THAT(log.batches(), ElementsAre(ElementsAre(Slice{&a, 0, 1}, Slice{&b, 0, 2}, Slice{&c, 0, 1})));
}

TEST(BatchSchedulerTest, ASplitTaskRunsOnSeveralWorkersAtOnce) {
  BatchScheduler scheduler(Workers(2));
  absl::Mutex mu;
  int inside = 0, most_inside = 0;
  std::vector<int> workers;
  auto queue = scheduler.AddQueue(QueueOptions(4), [&](int worker, absl::Span<TaskSlice>) {
    absl::MutexLock lock(&mu);
    most_inside = std::max(most_inside, ++inside);
    workers.push_back(worker);
    // Hold this batch until a second worker is in (or the test gives up).
    mu.AwaitWithTimeout(absl::Condition(
                            +[](int* most) { return *most >= 2; }, &most_inside),
                        kWaitTimeout);
    --inside;
    return absl::OkStatus();
  });
  TestTask task(8);
  ASSERT_TRUE(queue->Schedule(&task).ok());
  EXPECT_TRUE(task.Wait().ok());
  EXPECT_EQ(most_inside, 2);
  EXPECT_THAT(workers, ::testing::UnorderedElementsAre(0, 1));
}

TEST(BatchSchedulerTest, IdleWorkersShareACallSmallerThanABatch) {
  BatchScheduler scheduler(Workers(2));
  BatchLog log;
  absl::Mutex mu;
  int entered = 0;
  auto queue = scheduler.AddQueue(QueueOptions(8), [&](int, absl::Span<TaskSlice> batch) {
    log.Add(batch);
    // Both shares run at once: hold each until the other is in (or the test
    // gives up).
    absl::MutexLock lock(&mu);
    ++entered;
    mu.AwaitWithTimeout(absl::Condition(
                            +[](int* n) { return *n >= 2; }, &entered),
                        kWaitTimeout);
    return absl::OkStatus();
  });
  ASSERT_TRUE(WaitUntil(
      "both workers to be idle", [&] { return scheduler.idle_workers(); }, [](int n) { return n == 2; }));
  TestTask task(6);
  ASSERT_TRUE(queue->Schedule(&task).ok());
  EXPECT_TRUE(task.Wait().ok());
  EXPECT_THAT(log.batches(), ::testing::UnorderedElementsAre(ElementsAre(Slice{&task, 0, 3}),
                                                             ElementsAre(Slice{&task, 3, 6})));
}

TEST(BatchSchedulerTest, QueuesTakeTurnsSoABacklogDelaysAnotherQueueByOneBatch) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  TestTask huge(400), small(2);
  auto processor = [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &huge && batch[0].begin == 0) gate.Pass();
    log.Add(batch);
    return absl::OkStatus();
  };
  auto a = scheduler.AddQueue(QueueOptions(4), processor);
  auto b = scheduler.AddQueue(QueueOptions(4), processor);
  ASSERT_TRUE(a->Schedule(&huge).ok());
  ASSERT_TRUE(WaitUntil(
      "the first batch to be taken", [&] { return a->stats().queued_candidates; }, [](int64_t n) { return n < 400; }));
  ASSERT_TRUE(b->Schedule(&small).ok());
  gate.Open();
  EXPECT_TRUE(small.Wait().ok());
  EXPECT_TRUE(huge.Wait().ok());
  const auto batches = log.batches();
  ASSERT_EQ(batches.size(), 101u);
  // The first batch of `huge` was running when `small` came; at most one
  // more of `huge` runs before it.
  int position = 0;
  while (batches[position][0].task != &small) ++position;
  EXPECT_LE(position, 2);
}

BatchScheduler::QueueOptions Background(int64_t max_batch_size) {
  BatchScheduler::QueueOptions o = QueueOptions(max_batch_size);
  o.background = true;
  return o;
}

TEST(BatchSchedulerTest, ABackgroundBatchRunsOnlyWhenNoOtherQueueHasOneReady) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  TestTask blocker(1), shadow(4), first(2), second(2);
  auto processor = [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    log.Add(batch);
    return absl::OkStatus();
  };
  auto primary = scheduler.AddQueue(QueueOptions(2), processor);
  auto background = scheduler.AddQueue(Background(2), processor);
  ASSERT_TRUE(primary->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*primary));
  // Queued before the primary tasks, it still runs after them.
  ASSERT_TRUE(background->Schedule(&shadow).ok());
  ASSERT_TRUE(primary->Schedule(&first).ok());
  ASSERT_TRUE(primary->Schedule(&second).ok());
  gate.Open();
  for (TestTask* t : {&shadow, &first, &second}) EXPECT_TRUE(t->Wait().ok());
  EXPECT_THAT(log.batches(), ElementsAre(ElementsAre(Slice{&blocker, 0, 1}), ElementsAre(Slice{&first, 0, 2}),
                                         ElementsAre(Slice{&second, 0, 2}), ElementsAre(Slice{&shadow, 0, 2}),
                                         ElementsAre(Slice{&shadow, 2, 4})));
}

TEST(BatchSchedulerTest, ABackgroundQueueLeavesAWorkerIdleForTheOthers) {
  BatchScheduler scheduler(Workers(2));
  Gate gate;
  std::atomic<int> running_background{0}, most_background{0};
  TestTask shadow(8), call(1);
  auto background = scheduler.AddQueue(Background(2), [&](int, absl::Span<TaskSlice>) {
    const int now = ++running_background;
    most_background = std::max(most_background.load(), now);
    gate.Pass();
    --running_background;
    return absl::OkStatus();
  });
  auto primary = scheduler.AddQueue(QueueOptions(2), [](int, absl::Span<TaskSlice>) { return absl::OkStatus(); });
  ASSERT_TRUE(background->Schedule(&shadow).ok());
  ASSERT_TRUE(WaitUntil(
      "a background batch to run", [&] { return running_background.load(); }, [](int n) { return n > 0; }));
  // A background batch holds one worker; the other stays free, and a
  // primary call runs on it while the background batch is still running.
  ASSERT_TRUE(primary->Schedule(&call).ok());
  EXPECT_TRUE(call.Wait().ok());
  EXPECT_EQ(running_background.load(), 1);
  gate.Open();
  EXPECT_TRUE(shadow.Wait().ok());
  EXPECT_EQ(most_background.load(), 1);
}

TEST(BatchSchedulerTest, BackgroundWorkDoesNotCountInAnotherQueuesAdmission) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask warmup(4), shadow_warmup(4), blocker(1), shadow(80);
  auto processor = [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    absl::SleepFor(absl::Milliseconds(20));  // >= 5 ms per candidate
    return absl::OkStatus();
  };
  auto primary = scheduler.AddQueue(QueueOptions(4), processor);
  auto background = scheduler.AddQueue(Background(4), processor);
  ASSERT_TRUE(primary->Schedule(&warmup).ok());
  ASSERT_TRUE(background->Schedule(&shadow_warmup).ok());
  ASSERT_TRUE(warmup.Wait().ok());
  ASSERT_TRUE(shadow_warmup.Wait().ok());  // both queues know their cost
  ASSERT_TRUE(primary->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*primary));
  ASSERT_TRUE(background->Schedule(&shadow).ok());  // >= 400 ms of background work queued
  // Were the background work counted, 400 ms ahead would refuse a call
  // with 250 ms to its deadline; it runs first, so it is admitted. (The
  // 250 ms leave this thread and the worker 200 ms to be late in.)
  TestTask hurried(1, absl::Now() + absl::Milliseconds(250));
  const absl::Status s = primary->Schedule(&hurried);
  EXPECT_TRUE(s.ok()) << s;
  gate.Open();
  if (s.ok()) {
    EXPECT_TRUE(hurried.Wait().ok());
  }
  EXPECT_TRUE(shadow.Wait().ok());
}

// A primary queue whose every batch waits at `gate`, and a background queue
// that counts its batches.
struct GatedAndBackground {
  GatedAndBackground(BatchScheduler& scheduler, int64_t primary_batch_size)
      : primary(scheduler.AddQueue(QueueOptions(primary_batch_size),
                                   [this](int, absl::Span<TaskSlice>) {
                                     gate.Pass();
                                     return absl::OkStatus();
                                   })),
        background(scheduler.AddQueue(Background(2), [this](int, absl::Span<TaskSlice>) {
          ++background_batches;
          return absl::OkStatus();
        })) {}
  Gate gate;
  std::atomic<int> background_batches{0};
  std::unique_ptr<BatchQueue> primary, background;
};

TEST(BatchSchedulerTest, ABackgroundTaskPastItsDeadlineIsDroppedWhileTheOthersHoldTheWorkers) {
  BatchScheduler scheduler(Workers(2));
  GatedAndBackground queues(scheduler, 2);
  TestTask blocker(1), shadow(2, absl::Now() + absl::Milliseconds(50));
  ASSERT_TRUE(queues.primary->Schedule(&blocker).ok());
  ASSERT_TRUE(WaitUntil(
      "the blocker to run", [&] { return queues.primary->stats().running_candidates; }, [](int64_t n) { return n > 0; }));
  // One worker is busy and the other is kept for primary work: the
  // background task waits, and is dropped when its deadline passes.
  ASSERT_TRUE(queues.background->Schedule(&shadow).ok());
  const absl::Status s = shadow.Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_FALSE(blocker.done());
  EXPECT_EQ(queues.background_batches.load(), 0);
  EXPECT_EQ(queues.background->stats().queued_candidates, 0);
  queues.gate.Open();
  EXPECT_TRUE(blocker.Wait().ok());
}

TEST(BatchSchedulerTest, ABackgroundTaskPastItsDeadlineIsDroppedBeforeTheNextBatchOfABusyScheduler) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask blocker(1), shadow(2, absl::Now() + absl::Milliseconds(30));
  std::vector<std::unique_ptr<TestTask>> backlog;
  std::atomic<int> batches_after_drop{0}, batches_before_drop{0};
  auto primary = scheduler.AddQueue(QueueOptions(1), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) {
      gate.Pass();
    } else {
      ++(shadow.done() ? batches_after_drop : batches_before_drop);
    }
    return absl::OkStatus();
  });
  auto background = scheduler.AddQueue(Background(2), [](int, absl::Span<TaskSlice>) { return absl::OkStatus(); });
  ASSERT_TRUE(primary->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*primary));
  ASSERT_TRUE(background->Schedule(&shadow).ok());
  for (int i = 0; i < 5; ++i) {
    backlog.push_back(std::make_unique<TestTask>(1));
    ASSERT_TRUE(primary->Schedule(backlog.back().get()).ok());
  }
  absl::SleepFor(absl::Milliseconds(60));
  // The worker goes from one primary batch to the next, never idle; the
  // expired background task still leaves before the first of them.
  gate.Open();
  for (const auto& t : backlog) EXPECT_TRUE(t->Wait().ok());
  EXPECT_EQ(shadow.Wait().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(batches_before_drop.load(), 0);
  EXPECT_EQ(batches_after_drop.load(), 5);
}

TEST(BatchSchedulerTest, ShutdownDropsQueuedBackgroundTasks) {
  BatchScheduler scheduler(Workers(1));
  GatedAndBackground queues(scheduler, 1);
  TestTask blocker(1), shadow(2);
  ASSERT_TRUE(queues.primary->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queues.primary));
  ASSERT_TRUE(queues.background->Schedule(&shadow).ok());
  std::thread stopper([&] { scheduler.Shutdown(); });
  // A task larger than the queue is never accepted: refused as too large
  // until shutdown begins, then as UNAVAILABLE.
  TestTask probe(5000);
  EXPECT_TRUE(WaitUntil(
      "the shutdown to begin", [&] { return queues.primary->Schedule(&probe).code(); },
      [](absl::StatusCode code) { return code == absl::StatusCode::kUnavailable; }));
  queues.gate.Open();
  stopper.join();
  EXPECT_TRUE(blocker.Wait().ok());
  EXPECT_EQ(shadow.Wait().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(queues.background_batches.load(), 0);
}

BatchScheduler::Options WithBackgroundWorkers(int num_workers, int background_workers) {
  BatchScheduler::Options o = Workers(num_workers);
  o.background_workers = background_workers;
  return o;
}

// The scheduling policy of the calling thread.
int ThreadPolicy() {
  int policy = -1;
  sched_param param{};
  if (pthread_getschedparam(pthread_self(), &policy, &param) != 0) return -1;
  return policy;
}

TEST(BatchSchedulerTest, BackgroundWorkersRunBackgroundBatchesAloneUnderSchedIdle) {
  const int process_policy = ThreadPolicy();
  if (process_policy == SCHED_IDLE) GTEST_SKIP() << "the test runs under SCHED_IDLE already (chrt -i)";
  std::vector<std::string> errors;
  BatchScheduler::Options options = WithBackgroundWorkers(1, 1);
  options.on_internal_error = [&](absl::string_view e) { errors.emplace_back(e); };
  BatchScheduler scheduler(options);
  ASSERT_EQ(scheduler.num_background_workers(), 1);
  Gate gate;
  std::atomic<int> primary_worker{-1}, primary_policy{-100}, background_worker{-1}, background_policy{-100};
  TestTask blocker(1), shadow(2);
  auto primary = scheduler.AddQueue(QueueOptions(2), [&](int worker, absl::Span<TaskSlice>) {
    primary_worker = worker;
    primary_policy = ThreadPolicy();
    gate.Pass();
    return absl::OkStatus();
  });
  auto background = scheduler.AddQueue(Background(2), [&](int worker, absl::Span<TaskSlice>) {
    background_worker = worker;
    background_policy = ThreadPolicy();
    return absl::OkStatus();
  });
  ASSERT_TRUE(primary->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*primary));
  // The only regular worker is busy; the background worker runs the
  // background task meanwhile, not waiting for it to be idle.
  ASSERT_TRUE(background->Schedule(&shadow).ok());
  EXPECT_TRUE(shadow.Wait().ok());
  EXPECT_FALSE(blocker.done());
  gate.Open();
  EXPECT_TRUE(blocker.Wait().ok());
  EXPECT_EQ(primary_worker.load(), 0);
  EXPECT_EQ(primary_policy.load(), process_policy);
  EXPECT_EQ(background_worker.load(), 1);
  EXPECT_EQ(background_policy.load(), SCHED_IDLE);
  EXPECT_THAT(errors, ::testing::IsEmpty());
}

TEST(BatchSchedulerTest, RegularWorkersLeaveBackgroundQueuesToBackgroundWorkers) {
  BatchScheduler scheduler(WithBackgroundWorkers(2, 1));
  Gate gate;
  std::atomic<int> running_background{0};
  std::atomic<int> worker_seen{-1};
  TestTask first(2), second(2);
  auto background = scheduler.AddQueue(Background(2), [&](int worker, absl::Span<TaskSlice>) {
    ++running_background;
    worker_seen = worker;
    gate.Pass();
    --running_background;
    return absl::OkStatus();
  });
  ASSERT_TRUE(background->Schedule(&first).ok());
  ASSERT_TRUE(background->Schedule(&second).ok());
  ASSERT_TRUE(WaitUntil(
      "a background batch to run", [&] { return running_background.load(); }, [](int n) { return n > 0; }));
  // Both regular workers are idle, and still the second task waits for the
  // one background worker.
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(running_background.load(), 1);
  EXPECT_EQ(background->stats().queued_candidates, 2);
  EXPECT_EQ(scheduler.idle_workers(), 2);
  gate.Open();
  EXPECT_TRUE(first.Wait().ok());
  EXPECT_TRUE(second.Wait().ok());
  EXPECT_EQ(worker_seen.load(), 2);
}

TEST(BatchSchedulerTest, EveryTaskWakesAWorkerOfItsKind) {
  // Were one wake-up shared by both kinds, a primary task could wake an
  // idle background worker and wait with every regular worker asleep.
  BatchScheduler scheduler(WithBackgroundWorkers(1, 3));
  auto ok = [](int, absl::Span<TaskSlice>) { return absl::OkStatus(); };
  auto primary = scheduler.AddQueue(QueueOptions(4), ok);
  auto background = scheduler.AddQueue(Background(4), ok);
  for (int i = 0; i < 200; ++i) {
    TestTask call(1), shadow(1);
    ASSERT_TRUE(primary->Schedule(&call).ok());
    ASSERT_TRUE(call.Wait().ok()) << "call " << i;
    ASSERT_TRUE(background->Schedule(&shadow).ok());
    ASSERT_TRUE(shadow.Wait().ok()) << "shadow call " << i;
  }
}

TEST(BatchSchedulerTest, ShutdownWithCallsStillQueuedStopsTheBackgroundWorkersToo) {
  BatchScheduler scheduler(WithBackgroundWorkers(1, 1));
  GatedAndBackground queues(scheduler, 1);
  TestTask blocker(1), queued(1), shadow(2);
  ASSERT_TRUE(queues.primary->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queues.primary));
  ASSERT_TRUE(queues.primary->Schedule(&queued).ok());
  ASSERT_TRUE(queues.background->Schedule(&shadow).ok());
  EXPECT_TRUE(shadow.Wait().ok());
  absl::Notification stopped;
  std::thread stopper([&] {
    scheduler.Shutdown();
    stopped.Notify();
  });
  // The shutdown waits for the queued call, which waits for the gate; the
  // background worker, idle, has nothing to wait for.
  TestTask probe(5000);
  EXPECT_TRUE(WaitUntil(
      "the shutdown to begin", [&] { return queues.primary->Schedule(&probe).code(); },
      [](absl::StatusCode code) { return code == absl::StatusCode::kUnavailable; }));
  queues.gate.Open();
  EXPECT_TRUE(blocker.Wait().ok());
  EXPECT_TRUE(queued.Wait().ok());
  EXPECT_TRUE(stopped.WaitForNotificationWithTimeout(kWaitTimeout)) << "Shutdown did not return";
  stopper.join();
}

TEST(BatchSchedulerTest, BackgroundWorkersWorkDoesNotCountInAnotherQueuesAdmission) {
  BatchScheduler scheduler(WithBackgroundWorkers(1, 1));
  Gate gate;
  TestTask warmup(4), shadow_warmup(4), shadow(80);
  std::atomic<bool> gated{false};
  auto processor = [&](int, absl::Span<TaskSlice>) {
    if (gated) gate.Pass();
    absl::SleepFor(absl::Milliseconds(20));  // >= 5 ms per candidate
    return absl::OkStatus();
  };
  auto primary = scheduler.AddQueue(QueueOptions(4), [](int, absl::Span<TaskSlice>) {
    absl::SleepFor(absl::Milliseconds(20));
    return absl::OkStatus();
  });
  auto background = scheduler.AddQueue(Background(80), processor);
  ASSERT_TRUE(primary->Schedule(&warmup).ok());
  ASSERT_TRUE(background->Schedule(&shadow_warmup).ok());
  ASSERT_TRUE(warmup.Wait().ok());
  ASSERT_TRUE(shadow_warmup.Wait().ok());  // both queues know their cost
  gated = true;
  ASSERT_TRUE(background->Schedule(&shadow).ok());
  ASSERT_TRUE(WaitUntil(
      "the background batch to run", [&] { return background->stats().running_candidates; },
      [](int64_t n) { return n == 80; }));
  // 400 ms of background work is running, on a worker of its own: a call
  // with 250 ms to its deadline is admitted.
  TestTask hurried(1, absl::Now() + absl::Milliseconds(250));
  const absl::Status s = primary->Schedule(&hurried);
  EXPECT_TRUE(s.ok()) << s;
  if (s.ok()) {
    EXPECT_TRUE(hurried.Wait().ok());
  }
  gate.Open();
  EXPECT_TRUE(shadow.Wait().ok());
}

// The calling thread's CPU time.
absl::Duration ThreadCpuTime() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return absl::DurationFromTimespec(t);
}

TEST(BatchSchedulerTest, BackgroundCpuShareSpacesBackgroundBatchesByTheCpuTimeTheyTook) {
  // With background workers, and without (the regular workers running
  // background batches): at a share of 0.125 of 2 workers, a quarter of a
  // core, a batch that took 25 ms of CPU lets the next start 100 ms after it
  // started (80 ms after the processor saw it start, leaving 20 ms for the
  // time between the two).
  for (const int background_workers : {1, 0}) {
    SCOPED_TRACE(absl::StrCat("background_workers=", background_workers));
    BatchScheduler::Options options = WithBackgroundWorkers(2, background_workers);
    options.background_cpu_share = 0.125;
    BatchScheduler scheduler(options);
    absl::Mutex mu;
    std::vector<absl::Time> starts;
    auto background = scheduler.AddQueue(Background(1), [&](int, absl::Span<TaskSlice>) {
      const absl::Time start = absl::Now();
      const absl::Duration until = ThreadCpuTime() + absl::Milliseconds(25);
      while (ThreadCpuTime() < until) {
      }
      absl::MutexLock lock(&mu);
      starts.push_back(start);
      return absl::OkStatus();
    });
    std::vector<std::unique_ptr<TestTask>> tasks;
    for (int i = 0; i < 4; ++i) {
      tasks.push_back(std::make_unique<TestTask>(1));
      ASSERT_TRUE(background->Schedule(tasks.back().get()).ok());
    }
    for (auto& task : tasks) EXPECT_TRUE(task->Wait().ok());
    absl::MutexLock lock(&mu);
    ASSERT_EQ(starts.size(), 4u);
    for (size_t i = 1; i < starts.size(); ++i) {
      EXPECT_GE(starts[i] - starts[i - 1], absl::Milliseconds(80)) << "batch " << i;
    }
  }
}

TEST(BatchSchedulerTest, ABackgroundTaskTheCpuShareLeavesNoTimeForIsRefusedAtOnce) {
  // Batches of one candidate that take 25 ms of CPU, on the regular workers
  // (at normal priority: a busy machine delays them less). At a share of
  // 0.005 of 2 workers (a hundredth of a core) a task of 2 candidates
  // needs at least 2.5 s (its first batch, then the pause that lets its
  // last run): one due in 2 s is refused. Unbounded, it needs two batches'
  // time on the one worker that may run them, and is admitted.
  for (const double share : {0.005, 1.0}) {
    SCOPED_TRACE(absl::StrCat("background_cpu_share=", share));
    BatchScheduler::Options options = WithBackgroundWorkers(2, 0);
    options.background_cpu_share = share;
    TestTask warmup(1), unhurried(1);
    const absl::Time deadline = absl::Now() + absl::Seconds(2);
    TestTask hurried(2, deadline);
    BatchScheduler scheduler(options);
    auto background = scheduler.AddQueue(Background(1), [&](int, absl::Span<TaskSlice>) {
      const absl::Duration until = ThreadCpuTime() + absl::Milliseconds(25);
      while (ThreadCpuTime() < until) {
      }
      return absl::OkStatus();
    });
    ASSERT_TRUE(background->Schedule(&warmup).ok());
    ASSERT_TRUE(warmup.Wait().ok());  // the queue knows its cost
    const absl::Status checked = background->CheckAdmission(2, 0, deadline);
    const absl::Status scheduled = background->Schedule(&hurried);
    EXPECT_EQ(checked.code(), scheduled.code()) << checked << " / " << scheduled;
    if (share < 1) {
      EXPECT_EQ(scheduled.code(), absl::StatusCode::kResourceExhausted) << scheduled;
      EXPECT_THAT(std::string(scheduled.message()), HasSubstr("would miss its deadline"));
      EXPECT_EQ(background->stats().queued_candidates, 0);
      // Without a deadline it waits its turn (the warm-up's pause).
      EXPECT_TRUE(background->CheckAdmission(1, 0, absl::InfiniteFuture()).ok());
      ASSERT_TRUE(background->Schedule(&unhurried).ok());
      EXPECT_TRUE(unhurried.Wait().ok());
      EXPECT_FALSE(hurried.done());
    } else {
      ASSERT_TRUE(scheduled.ok()) << scheduled;
      EXPECT_TRUE(hurried.Wait().ok());
    }
  }
}

TEST(BatchSchedulerTest, CheckAdmissionAnswersAsScheduleWouldAndTakesNothing) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask blocker(1), first(8);
  auto queue = scheduler.AddQueue(QueueOptions(4, /*max_queued=*/10), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));
  EXPECT_TRUE(queue->CheckAdmission(10, 0, absl::InfiniteFuture()).ok());
  EXPECT_EQ(queue->stats().queued_candidates, 0);
  ASSERT_TRUE(queue->Schedule(&first).ok());
  const absl::Status s = queue->CheckAdmission(3, 0, absl::InfiniteFuture());
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("max_queued_candidates=10"));
  EXPECT_TRUE(queue->CheckAdmission(2, 0, absl::InfiniteFuture()).ok());
  EXPECT_EQ(queue->CheckAdmission(0, 0, absl::InfiniteFuture()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(queue->stats().queued_candidates, 8);
  gate.Open();
  EXPECT_TRUE(first.Wait().ok());
  scheduler.Shutdown();
  EXPECT_EQ(queue->CheckAdmission(1, 0, absl::InfiniteFuture()).code(), absl::StatusCode::kUnavailable);
}

TEST(BatchSchedulerTest, AFullQueueAnswersResourceExhaustedAndTakesNothing) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask blocker(1);
  BatchScheduler::QueueOptions options = QueueOptions(4, /*max_queued=*/10);
  options.max_queued_bytes = 1000;
  auto queue = scheduler.AddQueue(options, [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));
  TestTask first(8, absl::InfiniteFuture(), /*bytes=*/100), too_many(3), too_big(1, absl::InfiniteFuture(), 901);
  ASSERT_TRUE(queue->Schedule(&first).ok());
  absl::Status s = queue->Schedule(&too_many);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("8 candidates are queued for this model and the call adds 3 (max_queued_candidates=10)"));
  s = queue->Schedule(&too_big);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("hold 100 bytes and the call adds 901 (max_queued_bytes=1000)"));
  EXPECT_EQ(queue->stats().queued_candidates, 8);
  gate.Open();
  EXPECT_TRUE(first.Wait().ok());
  EXPECT_FALSE(too_many.done());
  EXPECT_FALSE(too_big.done());
}

TEST(BatchSchedulerTest, ACancelledTaskLeavesTheQueueAtOnceUnscoredAndFreesItsCapacity) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  TestTask blocker(1);
  auto queue = scheduler.AddQueue(QueueOptions(4, /*max_queued=*/10), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    log.Add(batch);
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));
  TestTask doomed(9), next(10);
  ASSERT_TRUE(queue->Schedule(&doomed).ok());
  EXPECT_EQ(queue->Schedule(&next).code(), absl::StatusCode::kResourceExhausted);
  queue->Cancel(&doomed, absl::CancelledError("the client went away"));
  ASSERT_TRUE(doomed.done());  // at once: no batch held it
  EXPECT_EQ(doomed.Wait().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(queue->stats().queued_candidates, 0);
  ASSERT_TRUE(queue->Schedule(&next).ok());
  queue->Cancel(&doomed, absl::CancelledError("again"));  // finished: nothing happens
  gate.Open();
  EXPECT_TRUE(next.Wait().ok());
  EXPECT_EQ(doomed.done_calls(), 1);
  for (const auto& batch : log.batches()) {
    for (const Slice& s : batch) EXPECT_NE(s.task, &doomed);
  }
}

TEST(BatchSchedulerTest, ATaskCancelledWhileABatchHoldsItEndsWhenThatBatchDoes) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  absl::Notification running;
  TestTask task(8);
  auto queue = scheduler.AddQueue(QueueOptions(4), [&](int, absl::Span<TaskSlice> batch) {
    running.Notify();
    gate.Pass();
    log.Add(batch);
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&task).ok());
  running.WaitForNotification();
  queue->Cancel(&task, absl::CancelledError("gone"));
  EXPECT_FALSE(task.done());
  EXPECT_EQ(queue->stats().queued_candidates, 0);  // the second half left at once
  gate.Open();
  EXPECT_EQ(task.Wait().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(log.batches(), ElementsAre(ElementsAre(Slice{&task, 0, 4})));
}

TEST(BatchSchedulerTest, ATaskWhoseDeadlinePassesInTheQueueIsNotScored) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  TestTask blocker(1);
  auto queue = scheduler.AddQueue(QueueOptions(4), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    log.Add(batch);
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));
  TestTask late(3, absl::Now() + absl::Milliseconds(30)), patient(2);
  ASSERT_TRUE(queue->Schedule(&late).ok());
  ASSERT_TRUE(queue->Schedule(&patient).ok());
  absl::SleepFor(absl::Milliseconds(60));
  gate.Open();
  const absl::Status s = late.Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(s.message()), HasSubstr("not scored"));
  EXPECT_TRUE(patient.Wait().ok());
  EXPECT_THAT(log.batches(), ElementsAre(ElementsAre(Slice{&blocker, 0, 1}), ElementsAre(Slice{&patient, 0, 2})));
}

TEST(BatchSchedulerTest, ATaskThatWouldMissItsDeadlineBehindTheQueueIsRefusedAtOnce) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask warmup(4), blocker(1);
  // 20 ms per batch of 4: at least 5 ms per candidate.
  auto queue = scheduler.AddQueue(QueueOptions(4), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    absl::SleepFor(absl::Milliseconds(20));
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&warmup).ok());
  ASSERT_TRUE(warmup.Wait().ok());  // the queue now knows its cost
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));
  TestTask backlog(40);  // >= 200 ms of work
  ASSERT_TRUE(queue->Schedule(&backlog).ok());
  TestTask hurried(1, absl::Now() + absl::Milliseconds(100));
  const absl::Status s = queue->Schedule(&hurried);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("would miss its deadline"));
  TestTask relaxed(1, absl::Now() + absl::Seconds(60)), unhurried(1);
  EXPECT_TRUE(queue->Schedule(&relaxed).ok());
  EXPECT_TRUE(queue->Schedule(&unhurried).ok());
  gate.Open();
  for (TestTask* t : {&backlog, &relaxed, &unhurried}) EXPECT_TRUE(t->Wait().ok());
  EXPECT_FALSE(hurried.done());
}

TEST(BatchSchedulerTest, ATaskWhoseDeadlineWouldPassBeforeItsBatchEndsIsNotScored) {
  BatchScheduler scheduler(Workers(1));
  BatchLog log;
  Gate gate;
  TestTask warmup(4), blocker(1);
  // 20 ms per batch of 4: at least 5 ms per candidate.
  auto queue = scheduler.AddQueue(QueueOptions(4), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    absl::SleepFor(absl::Milliseconds(20));
    log.Add(batch);
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&warmup).ok());
  ASSERT_TRUE(warmup.Wait().ok());
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));
  // Admitted while the deadline is far, then left waiting until its batch
  // (>= 20 ms) would end after it: the blocker ends no sooner than 10 ms
  // before the deadline.
  const absl::Time deadline = absl::Now() + absl::Seconds(1);
  TestTask hurried(4, deadline);
  ASSERT_TRUE(queue->Schedule(&hurried).ok());
  absl::SleepFor(deadline - absl::Now() - absl::Milliseconds(30));
  gate.Open();
  EXPECT_EQ(hurried.Wait().code(), absl::StatusCode::kDeadlineExceeded);
  for (const auto& batch : log.batches()) EXPECT_NE(batch[0].task, &hurried);
}

TEST(BatchSchedulerTest, AdmissionKeepsTheDeadlineHeadroomFree) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask warmup(4), blocker(1), backlog(40);
  auto processor = [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    absl::SleepFor(absl::Milliseconds(20));  // >= 5 ms per candidate
    return absl::OkStatus();
  };
  BatchScheduler::QueueOptions strict = QueueOptions(4);
  strict.deadline_headroom = 0.95;
  BatchScheduler::QueueOptions lenient = QueueOptions(4);
  lenient.deadline_headroom = 0;
  auto a = scheduler.AddQueue(strict, processor);
  auto b = scheduler.AddQueue(lenient, processor);
  for (BatchQueue* q : {a.get(), b.get()}) {
    TestTask t(4);
    ASSERT_TRUE(q->Schedule(&t).ok());
    ASSERT_TRUE(t.Wait().ok());  // each queue knows its cost
  }
  ASSERT_TRUE(a->Schedule(&blocker).ok());
  ASSERT_TRUE(WaitUntil(
      "the blocker to run", [&] { return a->stats().running_candidates; }, [](int64_t n) { return n > 0; }));
  ASSERT_TRUE(a->Schedule(&backlog).ok());  // >= 200 ms of work queued
  // At least 205 ms of work ahead of each (more on a loaded machine, whose
  // sleeps overshoot), 4 s to the deadline: within it, but not within 5% of
  // it.
  TestTask strict_task(1, absl::Now() + absl::Seconds(4));
  TestTask lenient_task(1, absl::Now() + absl::Seconds(4));
  const absl::Status refused = a->Schedule(&strict_task);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  const absl::Status admitted = b->Schedule(&lenient_task);
  EXPECT_TRUE(admitted.ok()) << admitted;
  gate.Open();
  EXPECT_TRUE(backlog.Wait().ok());
  if (admitted.ok()) {
    EXPECT_TRUE(lenient_task.Wait().ok());
  }
}

TEST(BatchSchedulerTest, ASliceStatusFailsOnlyItsTask) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask blocker(1), bad(2), good(2);
  auto queue = scheduler.AddQueue(QueueOptions(8), [&](int, absl::Span<TaskSlice> batch) {
    if (batch[0].task == &blocker) gate.Pass();
    for (TaskSlice& s : batch) {
      if (s.task == &bad) s.status = absl::InvalidArgumentError("candidates[1]: overflows");
    }
    return absl::OkStatus();
  });
  ASSERT_TRUE(queue->Schedule(&blocker).ok());
  ASSERT_TRUE(Drained(*queue));
  ASSERT_TRUE(queue->Schedule(&bad).ok());
  ASSERT_TRUE(queue->Schedule(&good).ok());
  gate.Open();
  EXPECT_EQ(bad.Wait().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(good.Wait().ok());
}

TEST(BatchSchedulerTest, AFailingBatchFailsItsTasksAndStopsTheirRemainingSlices) {
  BatchScheduler scheduler(Workers(1));
  int calls = 0;
  auto queue = scheduler.AddQueue(QueueOptions(2), [&](int, absl::Span<TaskSlice>) {
    ++calls;
    return absl::InternalError("boom");
  });
  TestTask task(6);
  ASSERT_TRUE(queue->Schedule(&task).ok());
  EXPECT_EQ(task.Wait().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(queue->stats().queued_candidates, 0);
}

TEST(BatchSchedulerTest, AnExceptionInTheProcessorFailsItsBatchAndTheWorkersGoOn) {
  BatchScheduler scheduler(Workers(1));
  int calls = 0;
  auto queue = scheduler.AddQueue(QueueOptions(4), [&](int, absl::Span<TaskSlice>) -> absl::Status {
    if (++calls == 1) throw std::runtime_error("out of memory");
    return absl::OkStatus();
  });
  TestTask first(3);
  ASSERT_TRUE(queue->Schedule(&first).ok());
  const absl::Status s = first.Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(s.message()), HasSubstr("out of memory"));
  TestTask second(3);
  ASSERT_TRUE(queue->Schedule(&second).ok());
  EXPECT_TRUE(second.Wait().ok());
}

TEST(BatchSchedulerTest, ATaskWhoseDoneThrowsDoesNotStopTheWorkersAndIsReported) {
  // Done builds a response; an allocation failing there must not end the
  // process or the worker.
  class ThrowingTask : public TestTask {
   public:
    using TestTask::TestTask;
    void Done(absl::Status status) override {
      TestTask::Done(std::move(status));
      throw std::bad_alloc();
    }
  };
  absl::Mutex mu;
  std::vector<std::string> reported;
  BatchScheduler::Options options;
  options.on_internal_error = [&](absl::string_view message) {
    absl::MutexLock lock(&mu);
    reported.emplace_back(message);
  };
  BatchScheduler scheduler(options);
  auto queue = scheduler.AddQueue(QueueOptions(4), [](int, absl::Span<TaskSlice>) { return absl::OkStatus(); });
  ThrowingTask first(3);
  ASSERT_TRUE(queue->Schedule(&first).ok());
  EXPECT_TRUE(first.Wait().ok());
  ThrowingTask cancelled(2);  // Done from Cancel, on the cancelling thread
  Gate gate;
  absl::Notification entered;
  auto blocked = scheduler.AddQueue(QueueOptions(4), [&](int, absl::Span<TaskSlice>) {
    if (!entered.HasBeenNotified()) entered.Notify();
    gate.Pass();
    return absl::OkStatus();
  });
  TestTask holder(1);
  ASSERT_TRUE(blocked->Schedule(&holder).ok());
  entered.WaitForNotification();  // the one worker is busy: `cancelled` stays queued
  ASSERT_TRUE(blocked->Schedule(&cancelled).ok());
  blocked->Cancel(&cancelled, absl::CancelledError("gone"));
  EXPECT_EQ(cancelled.Wait().code(), absl::StatusCode::kCancelled);
  gate.Open();
  EXPECT_TRUE(holder.Wait().ok());
  TestTask second(3);
  ASSERT_TRUE(queue->Schedule(&second).ok());
  EXPECT_TRUE(second.Wait().ok());
  EXPECT_EQ(first.done_calls(), 1);
  absl::MutexLock lock(&mu);  // the worker reported `first` before it took `second`
  EXPECT_THAT(reported, ElementsAre(HasSubstr("a finished task's Done threw: std::bad_alloc"),
                                    HasSubstr("a finished task's Done threw: std::bad_alloc")));
}

TEST(BatchSchedulerTest, OptionsOutOfBoundsAreRefusedNamingTheOption) {
  EXPECT_TRUE(BatchScheduler::Options().Validate().ok());
  EXPECT_TRUE(BatchScheduler::QueueOptions().Validate().ok());
  EXPECT_THAT(std::string(Workers(0).Validate().message()), HasSubstr("num_workers must be in [1, 1024], got 0"));
  EXPECT_THAT(std::string(Workers(1025).Validate().message()), HasSubstr("num_workers must be in [1, 1024]"));
  EXPECT_THAT(std::string(WithBackgroundWorkers(1, -1).Validate().message()),
              HasSubstr("background_workers must be in [0, 1024], got -1"));
  EXPECT_THAT(std::string(WithBackgroundWorkers(1, 1025).Validate().message()),
              HasSubstr("background_workers must be in [0, 1024], got 1025"));
  for (const double share : {0.0, -0.5, 1.5, std::nan("")}) {
    BatchScheduler::Options o;
    o.background_cpu_share = share;
    EXPECT_THAT(std::string(o.Validate().message()),
                HasSubstr(absl::StrCat("background_cpu_share must be in (0, 1], got ", share)));
  }
  struct Case {
    std::function<void(BatchScheduler::QueueOptions&)> change;
    std::string error;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o.max_batch_size = 0; }, "max_batch_size must be at least 1, got 0"},
      {[](auto& o) { o.batch_timeout = absl::Milliseconds(-1); }, "batch_timeout must be in [0, 1s], got -1ms"},
      {[](auto& o) { o.batch_timeout = absl::Seconds(2); }, "batch_timeout must be in [0, 1s], got 2s"},
      {[](auto& o) { o.max_queued_candidates = 0; }, "max_queued_candidates must be at least 1, got 0"},
      {[](auto& o) { o.max_queued_bytes = -5; }, "max_queued_bytes must be at least 1, got -5"},
      {[](auto& o) { o.deadline_headroom = 1; }, "deadline_headroom must be in [0, 1), got 1"},
      {[](auto& o) { o.deadline_headroom = -0.5; }, "deadline_headroom must be in [0, 1), got -0.5"},
      {[](auto& o) { o.deadline_headroom = std::nan(""); }, "deadline_headroom must be in [0, 1), got nan"},
  };
  for (const Case& c : cases) {
    BatchScheduler::QueueOptions o;
    c.change(o);
    const absl::Status s = o.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.error;
    EXPECT_THAT(std::string(s.message()), HasSubstr(c.error));
  }
}

TEST(BatchSchedulerTest, ShutdownFinishesAcceptedTasksThenRefusesNewOnes) {
  BatchScheduler scheduler(Workers(2));
  std::atomic<int64_t> scored{0};
  BatchScheduler::QueueOptions options = QueueOptions(16);
  options.batch_timeout = absl::Hours(1);  // shutdown does not wait for it
  auto queue = scheduler.AddQueue(options, [&](int, absl::Span<TaskSlice> batch) {
    for (const TaskSlice& s : batch) scored += s.size();
    return absl::OkStatus();
  });
  std::vector<std::unique_ptr<TestTask>> tasks;
  for (int i = 0; i < 20; ++i) {
    tasks.push_back(std::make_unique<TestTask>(7));
    ASSERT_TRUE(queue->Schedule(tasks.back().get()).ok());
  }
  scheduler.Shutdown();
  EXPECT_EQ(scored.load(), 140);
  for (const auto& t : tasks) EXPECT_TRUE(t->Wait().ok());
  TestTask late(1);
  const absl::Status s = queue->Schedule(&late);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("shutting down"));
}

TEST(BatchSchedulerTest, ClosingAQueueLetsItsTasksFinishAndKeepsItsProcessorAliveUntilThen) {
  BatchScheduler scheduler(Workers(1));
  Gate gate;
  TestTask task(5);
  auto held = std::make_shared<int>(0);
  std::weak_ptr<int> watch = held;
  {
    auto queue = scheduler.AddQueue(QueueOptions(2), [&gate, held](int, absl::Span<TaskSlice>) {
      gate.Pass();
      ++*held;
      return absl::OkStatus();
    });
    held.reset();
    ASSERT_TRUE(queue->Schedule(&task).ok());
  }  // closed while its task waits
  EXPECT_FALSE(watch.expired());
  gate.Open();
  EXPECT_TRUE(task.Wait().ok());
  // The drained queue leaves the scheduler, and its processor with it.
  EXPECT_TRUE(WaitUntil("the processor to be released", [&] { return watch.expired(); }));
}

TEST(BatchSchedulerTest, AnEmptyTaskIsRefused) {
  BatchScheduler scheduler(Workers(1));
  auto queue = scheduler.AddQueue(QueueOptions(2), [](int, absl::Span<TaskSlice>) { return absl::OkStatus(); });
  TestTask empty(0);
  EXPECT_EQ(queue->Schedule(&empty).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace masknet
