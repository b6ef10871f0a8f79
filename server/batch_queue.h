#ifndef MASKNET_SERVER_BATCH_QUEUE_H_
#define MASKNET_SERVER_BATCH_QUEUE_H_

// A queue of scoring tasks and the thread that runs them in batches.
//
// A task is one request's candidates; its size() is the number of
// candidates, and a batch's size is the sum of its slices' sizes. Tasks
// larger than max_batch_size are split across consecutive batches. The queue
// knows nothing of the model: it hands each batch to a BatchProcessor.
//
// Today a batch holds slices of one task; cross-request batching will merge
// tasks of the same model into one batch behind this same interface.

#include <cstdint>
#include <deque>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "server/defaults.h"

namespace masknet {

class BatchTask {
 public:
  virtual ~BatchTask() = default;
  // Number of candidates. REQUIRES: >= 1.
  virtual int64_t size() const = 0;
  // Whether the task's result is no longer wanted (e.g. its caller went away
  // or its deadline passed). Checked before each slice; a cancelled task is
  // not scored further and is Done with CANCELLED.
  virtual bool cancelled() const { return false; }
  // Called exactly once, on the queue's thread, after the task's last slice
  // ran (OK) or a slice failed (the first error). The queue deletes the task
  // right after.
  virtual void Done(absl::Status status) = 0;
};

// Candidates [begin, end) of a task.
struct TaskSlice {
  BatchTask* task;
  int64_t begin;
  int64_t end;
};

// Scores one batch. Runs on the queue's thread only. An exception it throws
// fails the batch's tasks with INTERNAL.
using BatchProcessor = absl::AnyInvocable<absl::Status(absl::Span<const TaskSlice>)>;

// Thread-safe.
class BatchQueue {
 public:
  struct Options {
    // Most candidates in one batch.
    int64_t max_batch_size = defaults::kMaxBatchSize;
    // Most candidates accepted and not yet scored; beyond it Schedule
    // answers UNAVAILABLE.
    int64_t max_queued_candidates = defaults::kMaxQueuedCandidates;
  };

  BatchQueue(const Options& options, BatchProcessor processor);
  // Shuts down: finishes every accepted task first.
  ~BatchQueue();

  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  // Queues `*task` and returns at once. Takes ownership (leaving *task null)
  // only on OK. Errors: UNAVAILABLE when the queue is full or shutting down.
  absl::Status Schedule(std::unique_ptr<BatchTask>* task) ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting tasks, runs every task already accepted, and joins the
  // thread. Idempotent.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // Candidates accepted and not yet scored.
  int64_t queued_candidates() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Run();
  absl::Status Process(absl::Span<const TaskSlice> batch);

  const Options options_;
  BatchProcessor processor_;
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<BatchTask>> tasks_ ABSL_GUARDED_BY(mu_);
  int64_t queued_candidates_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace masknet

#endif  // MASKNET_SERVER_BATCH_QUEUE_H_
