#include "server/batch_queue.h"

#include <algorithm>
#include <exception>

#include "absl/strings/str_cat.h"

namespace masknet {

BatchQueue::BatchQueue(const Options& options, BatchProcessor processor)
    : options_(options), processor_(std::move(processor)), thread_([this] { Run(); }) {}

BatchQueue::~BatchQueue() { Shutdown(); }

absl::Status BatchQueue::Schedule(std::unique_ptr<BatchTask>* task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  const int64_t size = (*task)->size();
  if (queued_candidates_ + size > options_.max_queued_candidates) {
    return absl::UnavailableError(absl::StrCat(
        "overloaded: ", queued_candidates_, " candidates are queued and this request adds ", size,
        " (--max_queued_candidates=", options_.max_queued_candidates, "); retry later"));
  }
  queued_candidates_ += size;
  tasks_.push_back(std::move(*task));
  return absl::OkStatus();
}

void BatchQueue::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t BatchQueue::queued_candidates() const {
  absl::MutexLock lock(&mu_);
  return queued_candidates_;
}

absl::Status BatchQueue::Process(absl::Span<const TaskSlice> batch) {
  try {
    return processor_(batch);
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("scoring failed: ", e.what()));
  } catch (...) {
    return absl::InternalError("scoring failed with an unknown exception");
  }
}

void BatchQueue::Run() {
  for (;;) {
    std::unique_ptr<BatchTask> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](BatchQueue* q) ABSL_EXCLUSIVE_LOCKS_REQUIRED(q->mu_) { return q->stopping_ || !q->tasks_.empty(); },
          this));
      if (tasks_.empty()) return;  // stopping, and everything accepted is done
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    const int64_t size = task->size();
    absl::Status status;
    for (int64_t begin = 0; begin < size && status.ok(); begin += options_.max_batch_size) {
      if (task->cancelled()) {
        status = absl::CancelledError("the call was cancelled, or its deadline passed, before it was scored");
        break;
      }
      const TaskSlice slice{task.get(), begin, std::min(size, begin + options_.max_batch_size)};
      status = Process(absl::MakeConstSpan(&slice, 1));
    }
    task->Done(std::move(status));
    task.reset();
    absl::MutexLock lock(&mu_);
    queued_candidates_ -= size;
  }
}

}  // namespace masknet
