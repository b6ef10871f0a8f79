#ifndef MASKNET_BATCHING_BATCH_SCHEDULER_H_
#define MASKNET_BATCHING_BATCH_SCHEDULER_H_

// Cross-request dynamic batching, shared by every model version served.
//
// A BatchScheduler owns a pool of worker threads and any number of
// BatchQueues, one per model version. A caller Schedules a BatchTask (one
// call's candidates; its size() is their number) into a queue, and Schedule
// returns at once. Each queue packs its tasks, first come first served, into
// batches of at most max_batch_size candidates: a batch takes slices of as
// many tasks as fit, so one batch scores several calls, and a task larger
// than the room left is split, its later slices going into later batches,
// which other workers run at the same time. A batch runs as soon as it is
// full, or once its oldest task has waited batch_timeout. When other workers
// are idle, a batch takes only its share of what is queued and they take the
// rest, so a call (or a burst) runs on every free core at once. Free workers
// visit the queues in turn, so a backlog in one queue delays another queue's
// task by at most one batch.
//
// A queue may be a background queue (QueueOptions::background), for work
// that must never hold up the others, such as scoring a sample of calls on
// a version under test: its batches run only when no other queue has one
// ready, and (with more than one worker) only while another worker stays
// idle for the others; its queued work does not count in the others'
// admission. Its tasks' deadlines drop them when the others leave it no
// time. Or the scheduler keeps background workers (Options::
// background_workers): threads of their own, at the lowest CPU priority
// (Linux's SCHED_IDLE), that run background batches alone, so that the
// kernel gives them only the CPU time every other thread leaves. Either way,
// Options::background_cpu_share bounds the CPU time background batches take,
// and a background task that bound (and the background work queued ahead)
// would keep past its deadline is refused at once (admit_by_deadline).
//
// Queues are bounded in candidates and in bytes. Schedule refuses, with
// RESOURCE_EXHAUSTED, a task that does not fit, or that the work queued
// ahead of it would make miss its deadline. A task whose deadline passes
// while part of it is still queued is not scored further; a task can be
// withdrawn (Cancel) at any time. Either way its queued candidates leave the
// queue, and give their capacity back, at once.
//
// The library knows nothing of the model or the server (it depends on Abseil
// alone): a queue hands each batch to its BatchProcessor, with the index of
// the worker running it, so the caller can keep per-worker scratch state
// (such as a forward pass's workspace). Its errors name its own options
// (QueueOptions::max_queued_candidates, ...); a server that sets them from
// flags names the flags when it answers.
//
// Thread-safe: every method may be called from any thread.

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace masknet {

class BatchQueue;
class BatchScheduler;
class BatchTask;

namespace batching_internal {
struct Queue;
// What a queue knows of a task it accepted. Guarded by the scheduler's mutex.
struct TaskState {
  Queue* queue = nullptr;                 // null: not accepted, or finished
  bool queued = false;                    // holds candidates not yet in a batch
  std::list<BatchTask*>::iterator place;  // in the queue, while queued
  int64_t size = 0;                       // BatchTask::size(), read once
  int64_t bytes = 0;                      // BatchTask::bytes(), read once
  absl::Time deadline;                    // BatchTask::deadline(), read once
  int64_t next = 0;                       // first candidate not yet in a batch
  int in_flight = 0;                      // running batches holding a slice of it
  absl::Status status;                    // the first failure
  absl::Time accepted;
};
}  // namespace batching_internal

// A unit of work: one call's candidates. The caller owns the task and keeps
// it alive until Done is called; the scheduler never deletes it.
class BatchTask {
 public:
  virtual ~BatchTask() = default;

  // Number of candidates; at least 1.
  virtual int64_t size() const = 0;
  // Memory the task holds while it waits, counted against the queue's bytes
  // bound.
  virtual int64_t bytes() const = 0;
  // When the result stops being useful; absl::InfiniteFuture() for never.
  virtual absl::Time deadline() const = 0;

  // Called exactly once for every task a Schedule accepted, after the last
  // batch holding a slice of it has finished: OK when every candidate was
  // processed; else the first failure, which is the error of the first batch
  // that failed (or of its slice), DEADLINE_EXCEEDED when the deadline passed
  // before every candidate was in a batch, or the status passed to Cancel.
  // Runs on a worker thread or on the thread calling Cancel, never under the
  // scheduler's lock. The scheduler does not touch the task once Done
  // begins, so Done may delete it. Done should not throw; if it does, the
  // scheduler logs the exception and goes on (the task is not called again).
  virtual void Done(absl::Status status) = 0;

 private:
  friend class BatchScheduler;
  batching_internal::TaskState state_;
};

// Candidates [begin, end) of a task, as part of a batch. A processor may set
// `status` to fail this slice's task alone.
struct TaskSlice {
  BatchTask* task = nullptr;
  int64_t begin = 0;
  int64_t end = 0;
  absl::Status status;
  int64_t size() const { return end - begin; }
};

// A queue's state at one moment.
struct BatchQueueStats {
  int64_t queued_candidates = 0;     // accepted and not yet in a batch
  int64_t queued_bytes = 0;          // held by tasks with queued candidates
  int64_t running_candidates = 0;    // in batches being processed
  int64_t batches = 0;               // processed since the queue was made
  int64_t processed_candidates = 0;  // in those batches
};

// Processes one batch: slices of one queue's tasks, holding 1 to
// max_batch_size candidates. Runs on worker `worker` (in [0, num_workers),
// or [num_workers, num_workers + background_workers) for a background one);
// calls for different workers run concurrently. A non-OK result fails every
// task in the batch; a slice's own status fails only its task. An exception
// fails the batch with INTERNAL.
using BatchProcessor = absl::AnyInvocable<absl::Status(int worker, absl::Span<TaskSlice> batch)>;

class BatchScheduler {
 public:
  struct Options {
    // Worker threads, each running one batch at a time. At least 1.
    int num_workers = 1;
    // Background workers: threads that run background queues' batches,
    // and nothing else; the regular workers then leave background queues
    // to them. They run under SCHED_IDLE (Linux; no privilege needed), for
    // their lifetime: the kernel runs them only on a core no other thread
    // wants, and a waking thread of any other policy preempts them at
    // once, so a background batch takes no time from the regular workers
    // or from other threads sharing the cores (a server's network
    // threads). Where SCHED_IDLE is refused they take nice 19 instead, and
    // Options::on_internal_error is told. In [0, kMaxWorkers]; 0: the
    // regular workers run background batches too (see
    // QueueOptions::background).
    int background_workers = 0;
    // The most CPU time background batches take, as a share of the
    // regular workers' (num_workers cores): a background batch that took t
    // seconds of its thread's CPU time and started at s lets the next
    // background batch (on any worker) start no sooner than s + t /
    // (background_cpu_share * num_workers), and batches that overlap add
    // their spans. Bounds what background work costs where a lower
    // priority does not: on the other hardware thread of a core (SMT), in
    // the caches and memory bandwidth cores share, and without background
    // workers. Background tasks whose deadline passes meanwhile are
    // dropped, as when the workers are busy, and a queue that admits by
    // deadline refuses at once those the bound would keep past theirs
    // (QueueOptions::admit_by_deadline). In (0, 1]; 1: no bound.
    double background_cpu_share = 1;
    // Told of a failure the library can only report, never return: a task's
    // Done that threw (the task is finished regardless). Called on the
    // thread that finished the task (a worker's, or one calling Cancel),
    // never under the scheduler's lock. Null: ignored.
    std::function<void(absl::string_view)> on_internal_error;

    // INVALID_ARGUMENT naming the first option out of its bounds.
    absl::Status Validate() const;
  };
  // Most worker threads.
  static constexpr int kMaxWorkers = 1024;

  // Starts the workers. REQUIRES: options.Validate().ok().
  explicit BatchScheduler(const Options& options);
  // Shuts down (see Shutdown). Queue handles must be gone first.
  ~BatchScheduler();

  BatchScheduler(const BatchScheduler&) = delete;
  BatchScheduler& operator=(const BatchScheduler&) = delete;

  struct QueueOptions {
    // Most candidates in one batch. At least 1. (A server sets it to what
    // its model's forward pass was built for.)
    int64_t max_batch_size = 256;
    // How long a batch that is not full waits for more tasks before it runs.
    // Zero: a batch runs as soon as a worker is free, and merges what queued
    // while the workers were busy.
    absl::Duration batch_timeout = absl::ZeroDuration();
    // Whether one batch may hold slices of several tasks. Off, every batch
    // holds part of one task only, and runs at once.
    bool merge_tasks = true;
    // Most candidates accepted and not yet in a batch: a safety net for
    // tasks without a deadline (those with one are refused earlier, when the
    // queue ahead would make them miss it).
    int64_t max_queued_candidates = 65536;
    // Most bytes (BatchTask::bytes) held by tasks with queued candidates.
    int64_t max_queued_bytes = int64_t{1} << 30;
    // Whether to refuse a task that, by the measured cost of recent batches,
    // would miss its deadline behind the work queued ahead of it. For a
    // background queue, the work ahead is the background queues' (queued,
    // and half of what runs), done by the threads that run background
    // batches at the pace background_cpu_share allows (by the CPU time
    // their recent batches took), after the pause it imposes now; the other
    // queues' work is not counted, so the estimate is a lower bound when
    // they keep the workers busy (the deadline still drops what waits too
    // long).
    bool admit_by_deadline = true;
    // The share of a task's time to its deadline that admission keeps free
    // for estimation error: a task is admitted when its estimated finish
    // falls within (1 - deadline_headroom) of that time. In [0, 1).
    // 0.25: docs/benchmarks.md, "Overload", says why.
    double deadline_headroom = 0.25;
    // A background queue. With background workers, only they run its
    // batches, and neither its queued nor its running candidates count in
    // other queues' admission. Without, its batches run only when no other
    // queue has a batch ready and, when the scheduler has more than one
    // worker, only while another worker stays idle; so a background batch
    // delays another queue's batch only when every other worker is busy,
    // and by at most the rest of one batch; its queued candidates do not
    // count in other queues' admission (its running ones do). A background
    // task whose
    // deadline passes while it waits is dropped (DEADLINE_EXCEEDED), even
    // while the others keep every worker busy (once the tasks queued before
    // it are dropped: give them deadlines in arrival order). Shutdown drops
    // the background tasks still queued (UNAVAILABLE).
    bool background = false;

    // INVALID_ARGUMENT naming the first option out of its bounds.
    absl::Status Validate() const;
  };
  // Longest batch_timeout: beyond it a queue would hold tasks longer than
  // any ranking call waits.
  static constexpr absl::Duration kMaxBatchTimeout = absl::Seconds(1);

  // A new queue whose batches `processor` runs. The handle must be destroyed
  // before the scheduler. REQUIRES: options.Validate().ok(). Thread-safe.
  std::unique_ptr<BatchQueue> AddQueue(const QueueOptions& options, BatchProcessor processor)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting tasks in every queue, runs every task already accepted
  // to its end (but drops background tasks still queued, UNAVAILABLE), and
  // joins the workers. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  int num_workers() const { return num_workers_; }
  int num_background_workers() const { return num_background_workers_; }
  // Workers waiting for work now (background workers not counted).
  int idle_workers() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class BatchQueue;
  struct Batch;

  absl::Status Schedule(batching_internal::Queue* queue, BatchTask* task) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status CheckAdmission(const batching_internal::Queue* queue, int64_t size, int64_t bytes,
                              absl::Time deadline) const ABSL_LOCKS_EXCLUDED(mu_);
  // OK if `queue` accepts a task of `size` candidates and `bytes` due by
  // `deadline` at `now`; else why not (as BatchQueue::Schedule).
  absl::Status Admission(const batching_internal::Queue* queue, int64_t size, int64_t bytes, absl::Time deadline,
                         absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Seconds before background work queued now would be done: the pause
  // background_cpu_share imposes, then the background queues' work.
  double BackgroundSecondsAhead(absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Seconds per candidate at which background queue `q`'s work gets done:
  // by the threads that may run it, and no faster than its CPU time per
  // candidate allows under background_cpu_share.
  double BackgroundPace(const batching_internal::Queue& q) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Cancel(BatchTask* task, absl::Status status) ABSL_LOCKS_EXCLUDED(mu_);
  // Calls task->Done(status), reporting an exception it throws to
  // Options::on_internal_error.
  void Finish(BatchTask* task, absl::Status status);
  void CloseQueue(batching_internal::Queue* queue) ABSL_LOCKS_EXCLUDED(mu_);
  // Takes closed queues whose tasks have all finished out of the
  // scheduler; the caller deletes them after releasing mu_ (a processor may
  // hold a whole model).
  std::vector<std::unique_ptr<batching_internal::Queue>> DetachDrainedQueues()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  BatchQueueStats QueueStats(const batching_internal::Queue* queue) const ABSL_LOCKS_EXCLUDED(mu_);

  void WorkerLoop(int worker) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether background queues are left to background workers.
  bool dedicated_background() const { return num_background_workers_ > 0; }
  // Puts the calling background worker under SCHED_IDLE (or nice 19).
  void LowerPriority();
  // Fills `batch` from the next ready queue after the cursor that worker
  // kind `background_worker` runs. Tasks found expired are appended to
  // `finished`. Returns false if no queue is ready; then `*wake` is when
  // the first one will be (by its timeout).
  bool TakeBatch(absl::Time now, bool background_worker, Batch* batch,
                 std::vector<std::pair<BatchTask*, absl::Status>>* finished, absl::Time* wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fills `batch` from queue `q` if it has a batch ready (as TakeBatch).
  bool FillBatch(absl::Time now, batching_internal::Queue* q, Batch* batch,
                 std::vector<std::pair<BatchTask*, absl::Status>>* finished, absl::Time* wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Withdraws the tasks at the front of background queue `q` whose
  // deadline has passed (its tasks usually come with deadlines in arrival
  // order), or every task once the scheduler is stopping; `*wake` becomes no
  // later than the deadline of the first that stays.
  void DropBackground(absl::Time now, batching_internal::Queue* q,
                      std::vector<std::pair<BatchTask*, absl::Status>>* finished, absl::Time* wake)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the task's queued candidates out of its queue; the task finishes
  // when no batch holds it. Returns whether it is finished now.
  bool Withdraw(BatchTask* task, absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Seconds of work queued in every queue, by each queue's recent cost.
  double QueuedSeconds() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a bounded background batch that started at `start` and took
  // `cpu_seconds`: delays the next one (Options::background_cpu_share).
  void PauseBackground(absl::Time start, double cpu_seconds) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // A task arrived, or shutdown: for the regular workers, and for the
  // background ones (when there are; else work_ is for every task).
  absl::CondVar work_;
  absl::CondVar background_work_;
  std::vector<batching_internal::Queue*> queues_ ABSL_GUARDED_BY(mu_);
  size_t cursor_ ABSL_GUARDED_BY(mu_) = 0;  // the queue that gave the last batch
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int idle_workers_ ABSL_GUARDED_BY(mu_) = 0;  // waiting for work
  bool drained_ ABSL_GUARDED_BY(mu_) = false;  // a closed queue's last task ended
  // No background batch starts before then (Options::background_cpu_share).
  absl::Time background_resume_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  const std::function<void(absl::string_view)> on_internal_error_;
  // Set before the workers start (they read them), unlike workers_.size().
  const int num_workers_;
  const int num_background_workers_;
  const double background_cpu_share_;
  std::vector<std::thread> workers_;
  std::once_flag joined_;
};

// One model version's queue. Made by BatchScheduler::AddQueue.
class BatchQueue {
 public:
  // Closes the queue and returns at once: the tasks it accepted still run
  // to their end (and keep whatever the processor holds alive), then it
  // leaves the scheduler.
  ~BatchQueue();

  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Accepts `task` (which the caller keeps alive until its Done) and returns
  // at once. Errors, after which Done is never called: INVALID_ARGUMENT for
  // a task of no candidates; RESOURCE_EXHAUSTED when the queue is full (in
  // candidates or bytes), or the work queued ahead would make the task miss
  // its deadline; UNAVAILABLE when the scheduler is shutting down.
  absl::Status Schedule(BatchTask* task) { return scheduler_->Schedule(queue_, task); }

  // What Schedule would answer now for a task of `size` candidates holding
  // `bytes` until `deadline`, without accepting anything: lets a caller skip
  // preparing a task the queue would refuse (the answer may change before
  // it schedules one).
  absl::Status CheckAdmission(int64_t size, int64_t bytes, absl::Time deadline) const {
    return scheduler_->CheckAdmission(queue_, size, bytes, deadline);
  }

  // Withdraws `task`: its candidates not yet in a batch leave the queue at
  // once, and it finishes with `status` (unless it already failed) when no
  // running batch holds it, which may be before Cancel returns. Does nothing
  // for a task that already finished or was never accepted. An OK status
  // is taken as CANCELLED. REQUIRES: `task` is alive.
  void Cancel(BatchTask* task, absl::Status status) { scheduler_->Cancel(task, std::move(status)); }

  BatchQueueStats stats() const { return scheduler_->QueueStats(queue_); }

 private:
  friend class BatchScheduler;
  BatchQueue(BatchScheduler* scheduler, batching_internal::Queue* queue)
      : scheduler_(scheduler), queue_(queue) {}

  BatchScheduler* scheduler_;
  batching_internal::Queue* queue_;
};

}  // namespace masknet

#endif  // MASKNET_BATCHING_BATCH_SCHEDULER_H_
