#include "batching/batch_scheduler.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace masknet {
namespace batching_internal {

// One queue's state; every field but `options` and `processor` (immutable)
// is guarded by the scheduler's mutex.
struct Queue {
  BatchScheduler::QueueOptions options;
  BatchProcessor processor;
  // Tasks with candidates not yet in a batch, in arrival order.
  std::list<BatchTask*> tasks;
  int64_t queued_candidates = 0;
  int64_t queued_bytes = 0;
  int64_t running_candidates = 0;  // in batches being processed
  int64_t active_tasks = 0;        // accepted and not finished
  bool closed = false;             // its handle is gone
  int64_t batches = 0;
  int64_t processed_candidates = 0;
  // The cost of recent batches on one worker: sums of seconds and of
  // candidates, each decayed by kCostDecay per batch.
  double cost_seconds = 0;
  double cost_candidates = 0;
  // The same sum of the batches' thread CPU seconds, kept for a background
  // queue under Options::background_cpu_share (0 otherwise).
  double cost_cpu_seconds = 0;

  double SecondsPerCandidate() const { return cost_candidates > 0 ? cost_seconds / cost_candidates : 0; }
  double CpuSecondsPerCandidate() const { return cost_candidates > 0 ? cost_cpu_seconds / cost_candidates : 0; }
};

}  // namespace batching_internal

namespace {

using batching_internal::Queue;
using batching_internal::TaskState;

// Weight of a batch in the cost estimate halves after ~7 batches.
constexpr double kCostDecay = 0.9;

std::string Milliseconds(double seconds) { return absl::StrFormat("%.1f ms", seconds * 1e3); }

// CPU time the calling thread has used (where the system tells; else 0, and
// Options::background_cpu_share bounds nothing).
double ThreadCpuSeconds() {
#if defined(__linux__)
  timespec t{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0) return static_cast<double>(t.tv_sec) + 1e-9 * t.tv_nsec;
#endif
  return 0;
}

}  // namespace

struct BatchScheduler::Batch {
  Queue* queue = nullptr;
  std::vector<TaskSlice> slices;
  int64_t size = 0;
};

absl::Status BatchScheduler::Options::Validate() const {
  if (num_workers < 1 || num_workers > kMaxWorkers) {
    return absl::InvalidArgumentError(absl::StrCat("num_workers must be in [1, ", kMaxWorkers, "], got ", num_workers));
  }
  if (background_workers < 0 || background_workers > kMaxWorkers) {
    return absl::InvalidArgumentError(
        absl::StrCat("background_workers must be in [0, ", kMaxWorkers, "], got ", background_workers));
  }
  if (!(background_cpu_share > 0 && background_cpu_share <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("background_cpu_share must be in (0, 1], got ", background_cpu_share));
  }
  return absl::OkStatus();
}

absl::Status BatchScheduler::QueueOptions::Validate() const {
  if (max_batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_size must be at least 1, got ", max_batch_size));
  }
  if (batch_timeout < absl::ZeroDuration() || batch_timeout > kMaxBatchTimeout) {
    return absl::InvalidArgumentError(absl::StrCat("batch_timeout must be in [0, ", absl::FormatDuration(kMaxBatchTimeout),
                                                   "], got ", absl::FormatDuration(batch_timeout)));
  }
  if (max_queued_candidates < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_queued_candidates must be at least 1, got ", max_queued_candidates));
  }
  if (max_queued_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_queued_bytes must be at least 1, got ", max_queued_bytes));
  }
  if (!(deadline_headroom >= 0 && deadline_headroom < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("deadline_headroom must be in [0, 1), got ", deadline_headroom));
  }
  return absl::OkStatus();
}

BatchScheduler::BatchScheduler(const Options& options)
    : on_internal_error_(options.on_internal_error),
      num_workers_(options.num_workers),
      num_background_workers_(options.background_workers),
      background_cpu_share_(options.background_cpu_share) {
  const int threads = num_workers_ + num_background_workers_;
  workers_.reserve(threads);
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

BatchScheduler::~BatchScheduler() {
  Shutdown();
  std::vector<std::unique_ptr<Queue>> drained;
  absl::MutexLock lock(&mu_);
  drained = DetachDrainedQueues();
}

std::unique_ptr<BatchQueue> BatchScheduler::AddQueue(const QueueOptions& options, BatchProcessor processor) {
  auto* queue = new Queue();
  queue->options = options;
  queue->processor = std::move(processor);
  absl::MutexLock lock(&mu_);
  queues_.push_back(queue);
  return std::unique_ptr<BatchQueue>(new BatchQueue(this, queue));
}

void BatchScheduler::CloseQueue(Queue* queue) {
  std::vector<std::unique_ptr<Queue>> drained;
  absl::MutexLock lock(&mu_);
  queue->closed = true;
  drained = DetachDrainedQueues();
}

std::vector<std::unique_ptr<Queue>> BatchScheduler::DetachDrainedQueues() {
  drained_ = false;
  std::vector<std::unique_ptr<Queue>> out;
  for (size_t i = 0; i < queues_.size();) {
    Queue* q = queues_[i];
    if (!q->closed || q->active_tasks > 0) {
      ++i;
      continue;
    }
    queues_.erase(queues_.begin() + i);
    if (cursor_ >= i && cursor_ > 0) --cursor_;
    out.emplace_back(q);
  }
  return out;
}

BatchQueue::~BatchQueue() { scheduler_->CloseQueue(queue_); }

void BatchScheduler::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_.SignalAll();
    background_work_.SignalAll();
  }
  std::call_once(joined_, [this] {
    for (std::thread& t : workers_) t.join();
  });
}

int BatchScheduler::idle_workers() const {
  absl::MutexLock lock(&mu_);
  return idle_workers_;
}

BatchQueueStats BatchScheduler::QueueStats(const Queue* queue) const {
  absl::MutexLock lock(&mu_);
  BatchQueueStats stats;
  stats.queued_candidates = queue->queued_candidates;
  stats.queued_bytes = queue->queued_bytes;
  stats.running_candidates = queue->running_candidates;
  stats.batches = queue->batches;
  stats.processed_candidates = queue->processed_candidates;
  return stats;
}

double BatchScheduler::QueuedSeconds() const {
  double seconds = 0;
  for (const Queue* q : queues_) {
    // A background worker's batch holds no regular worker.
    if (q->options.background && dedicated_background()) continue;
    // A running batch is, on average, half done. A background queue's
    // queued work runs after everyone else's.
    const double queued = q->options.background ? 0 : static_cast<double>(q->queued_candidates);
    seconds += (queued + 0.5 * q->running_candidates) * q->SecondsPerCandidate();
  }
  return seconds;
}

double BatchScheduler::BackgroundPace(const Queue& q) const {
  // Without background workers, a background batch runs only while another
  // worker stays idle.
  const int threads = dedicated_background() ? num_background_workers_ : std::max(1, num_workers_ - 1);
  const double pace = q.SecondsPerCandidate() / threads;
  if (background_cpu_share_ >= 1) return pace;
  return std::max(pace, q.CpuSecondsPerCandidate() / (background_cpu_share_ * num_workers_));
}

double BatchScheduler::BackgroundSecondsAhead(absl::Time now) const {
  double seconds = std::max(0.0, absl::ToDoubleSeconds(background_resume_ - now));
  for (const Queue* q : queues_) {
    if (!q->options.background) continue;
    seconds += (static_cast<double>(q->queued_candidates) + 0.5 * q->running_candidates) * BackgroundPace(*q);
  }
  return seconds;
}

absl::Status BatchScheduler::Admission(const Queue* queue, int64_t size, int64_t bytes, absl::Time deadline,
                                       absl::Time now) const {
  if (size < 1) return absl::InvalidArgumentError("a task must hold at least one candidate");
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  const QueueOptions& o = queue->options;
  if (queue->queued_candidates + size > o.max_queued_candidates) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "overloaded: ", queue->queued_candidates, " candidates are queued for this model and the call adds ",
        size, " (max_queued_candidates=", o.max_queued_candidates, "); retry later"));
  }
  if (queue->queued_bytes + bytes > o.max_queued_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "overloaded: queued calls for this model hold ", queue->queued_bytes, " bytes and the call adds ",
        bytes, " (max_queued_bytes=", o.max_queued_bytes, "); retry later"));
  }
  const double cost = queue->SecondsPerCandidate();
  if (o.admit_by_deadline && deadline != absl::InfiniteFuture() && cost > 0) {
    const int64_t batches = (size + o.max_batch_size - 1) / o.max_batch_size;
    double ahead, own;
    if (o.background) {
      // Behind the background work queued, at the pace the background
      // workers and background_cpu_share allow; the task's last batch ends
      // before the pause it causes.
      const int64_t last = size - (batches - 1) * o.max_batch_size;
      ahead = BackgroundSecondsAhead(now);
      own = static_cast<double>(size - last) * BackgroundPace(*queue) + static_cast<double>(last) * cost;
    } else {
      ahead = QueuedSeconds() / num_workers();
      own = static_cast<double>(size) * cost / std::min<int64_t>(num_workers(), batches);
    }
    ahead += absl::ToDoubleSeconds(o.batch_timeout);
    const double left = absl::ToDoubleSeconds(deadline - now);
    if (ahead + own > (1 - o.deadline_headroom) * left) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "overloaded: the call would miss its deadline (in ", Milliseconds(left), "): about ",
          Milliseconds(ahead), " of work is queued ahead of it and it needs ", Milliseconds(own),
          "; retry later"));
    }
  }
  return absl::OkStatus();
}

absl::Status BatchScheduler::CheckAdmission(const Queue* queue, int64_t size, int64_t bytes,
                                            absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  return Admission(queue, size, bytes, deadline, absl::Now());
}

absl::Status BatchScheduler::Schedule(Queue* queue, BatchTask* task) {
  const int64_t size = task->size();
  const int64_t bytes = task->bytes();
  const absl::Time deadline = task->deadline();
  const QueueOptions& o = queue->options;
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  if (absl::Status refused = Admission(queue, size, bytes, deadline, now); !refused.ok()) return refused;
  // Insert first: should it throw, the task was not accepted and its state
  // is untouched.
  const auto place = queue->tasks.insert(queue->tasks.end(), task);
  TaskState& s = task->state_;
  s = TaskState();
  s.queue = queue;
  s.queued = true;
  s.place = place;
  s.size = size;
  s.bytes = bytes;
  s.deadline = deadline;
  s.accepted = now;
  queue->queued_candidates += size;
  queue->queued_bytes += bytes;
  ++queue->active_tasks;
  (o.background && dedicated_background() ? background_work_ : work_).Signal();
  return absl::OkStatus();
}

bool BatchScheduler::Withdraw(BatchTask* task, absl::Status status) {
  TaskState& s = task->state_;
  Queue* queue = s.queue;
  if (s.status.ok()) s.status = std::move(status);
  if (s.queued) {
    queue->tasks.erase(s.place);
    queue->queued_candidates -= s.size - s.next;
    queue->queued_bytes -= s.bytes;
    s.queued = false;
  }
  if (s.in_flight > 0) return false;
  s.queue = nullptr;
  if (--queue->active_tasks == 0 && queue->closed) drained_ = true;
  return true;
}

void BatchScheduler::Finish(BatchTask* task, absl::Status status) {
  try {
    task->Done(std::move(status));
  } catch (const std::exception& e) {
    if (on_internal_error_) on_internal_error_(absl::StrCat("a finished task's Done threw: ", e.what()));
  } catch (...) {
    if (on_internal_error_) on_internal_error_("a finished task's Done threw an unknown exception");
  }
}

void BatchScheduler::Cancel(BatchTask* task, absl::Status status) {
  if (status.ok()) status = absl::CancelledError("the call was cancelled");
  absl::Status final_status;
  std::vector<std::unique_ptr<Queue>> drained;
  {
    absl::MutexLock lock(&mu_);
    if (task->state_.queue == nullptr) return;
    if (!Withdraw(task, std::move(status))) return;
    final_status = std::move(task->state_.status);
    if (drained_) drained = DetachDrainedQueues();
  }
  Finish(task, std::move(final_status));
}

bool BatchScheduler::TakeBatch(absl::Time now, bool background_worker, Batch* batch,
                               std::vector<std::pair<BatchTask*, absl::Status>>* finished,
                               absl::Time* wake) {
  const size_t n = queues_.size();
  const bool dedicated = dedicated_background();
  // Background tasks past their deadline leave at every pass, even while
  // the other queues keep every worker busy; at shutdown, all of them do.
  // (Only the workers that run them wake for their deadlines.)
  absl::Time ignored = absl::InfiniteFuture();
  for (Queue* q : queues_) {
    if (q->options.background) DropBackground(now, q, finished, dedicated && !background_worker ? &ignored : wake);
  }
  // A background worker visits background queues alone. Without them,
  // background queues are visited after every other queue found nothing
  // ready, and run only while another worker stays idle (when there is one
  // to keep).
  const bool background_allowed =
      background_worker || (!dedicated && idle_workers_ >= std::min(1, num_workers() - 1));
  for (const bool background : {false, true}) {
    if (background ? !background_allowed : background_worker) continue;
    if (background && now < background_resume_) {
      if (dedicated == background_worker) *wake = std::min(*wake, background_resume_);
      continue;
    }
    for (size_t step = 1; step <= n; ++step) {
      const size_t index = (cursor_ + step) % n;
      Queue* q = queues_[index];
      if (q->options.background != background || q->tasks.empty()) continue;
      if (FillBatch(now, q, batch, finished, wake)) {
        cursor_ = index;
        return true;
      }
    }
  }
  return false;
}

void BatchScheduler::DropBackground(absl::Time now, Queue* q,
                                    std::vector<std::pair<BatchTask*, absl::Status>>* finished, absl::Time* wake) {
  while (!q->tasks.empty()) {
    BatchTask* task = q->tasks.front();
    absl::Status status;
    if (stopping_) {
      status = absl::UnavailableError("the scheduler is shutting down; background tasks are dropped");
    } else if (task->state_.deadline <= now) {
      status = absl::DeadlineExceededError("the task's deadline passed before a worker was free for it");
    } else {
      *wake = std::min(*wake, task->state_.deadline);
      return;
    }
    if (Withdraw(task, std::move(status))) finished->emplace_back(task, std::move(task->state_.status));
  }
}

bool BatchScheduler::FillBatch(absl::Time now, Queue* q, Batch* batch,
                               std::vector<std::pair<BatchTask*, absl::Status>>* finished, absl::Time* wake) {
  const QueueOptions& o = q->options;
  if (o.merge_tasks && !stopping_ && q->queued_candidates < o.max_batch_size) {
    const absl::Time ready = q->tasks.front()->state_.accepted + o.batch_timeout;
    if (now < ready) {
      *wake = std::min(*wake, ready);
      return false;
    }
  }
  // Idle workers share what is queued, so that a burst (or one large call)
  // runs on all of them at once; a background queue leaves them idle.
  int64_t room = o.max_batch_size;
  if (idle_workers_ > 0 && !o.background) {
    room = std::clamp<int64_t>((q->queued_candidates + idle_workers_) / (idle_workers_ + 1), 1, room);
  }
  const int64_t capacity = room;
  const double cost = q->SecondsPerCandidate();
  for (auto it = q->tasks.begin(); room > 0 && it != q->tasks.end();) {
    BatchTask* task = *it++;
    TaskState& s = task->state_;
    // A task whose deadline passes before this batch would end is not
    // scored: its answer would come too late.
    const int64_t take = std::min(room, s.size - s.next);
    const absl::Duration batch_time = absl::Seconds(cost * static_cast<double>(capacity - room + take));
    if (s.deadline <= now + batch_time) {
      if (Withdraw(task, absl::DeadlineExceededError(
                             "the call's deadline passed, or would before its batch ends; it was not scored"))) {
        finished->emplace_back(task, std::move(s.status));
      }
      continue;
    }
    batch->slices.push_back(TaskSlice{task, s.next, s.next + take, absl::OkStatus()});
    s.next += take;
    ++s.in_flight;
    q->queued_candidates -= take;
    room -= take;
    if (s.next == s.size) {
      q->tasks.erase(s.place);
      q->queued_bytes -= s.bytes;
      s.queued = false;
    }
    if (!o.merge_tasks) break;
  }
  if (batch->slices.empty()) return false;  // every task it held had expired
  batch->queue = q;
  batch->size = capacity - room;
  q->running_candidates += batch->size;
  return true;
}

void BatchScheduler::PauseBackground(absl::Time start, double cpu_seconds) {
  background_resume_ = std::max(background_resume_, start) +
                       absl::Seconds(cpu_seconds / (background_cpu_share_ * num_workers_));
}

void BatchScheduler::LowerPriority() {
#if defined(__linux__)
  sched_param param{};
  param.sched_priority = 0;
  const int refused = pthread_setschedparam(pthread_self(), SCHED_IDLE, &param);
  if (refused == 0) return;
  // PRIO_PROCESS with a thread id sets that thread's nice value alone.
  constexpr int kLowestNice = 19;
  const int nice_refused =
      setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kLowestNice) == 0 ? 0 : errno;
  if (on_internal_error_) {
    on_internal_error_(absl::StrCat("a background worker could not take the SCHED_IDLE policy (",
                                    std::strerror(refused), "); ",
                                    nice_refused == 0 ? "it runs at nice 19, and can take time from the other "
                                                        "threads on a waking thread's first few milliseconds"
                                                      : absl::StrCat("nor nice 19 (", std::strerror(nice_refused),
                                                                     "): it runs at the others' priority")));
  }
#endif
}

void BatchScheduler::WorkerLoop(int worker) {
  const bool background_worker = worker >= num_workers_;
  if (background_worker) LowerPriority();
  absl::CondVar& work = background_worker ? background_work_ : work_;
  Batch batch;
  std::vector<std::pair<BatchTask*, absl::Status>> finished;
  std::vector<std::unique_ptr<Queue>> drained;
  auto finish = [this, &finished, &drained] {
    for (auto& [task, status] : finished) Finish(task, std::move(status));
    finished.clear();
    drained.clear();
  };
  for (;;) {
    batch.queue = nullptr;
    batch.slices.clear();
    batch.size = 0;
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        if (drained_) {
          drained = DetachDrainedQueues();
          break;  // delete them unlocked first
        }
        absl::Time wake = absl::InfiniteFuture();
        if (TakeBatch(absl::Now(), background_worker, &batch, &finished, &wake)) {
          // Others may find work too (the rest of a split task, or another
          // queue); wake one to look.
          work.Signal();
          break;
        }
        if (!finished.empty()) break;
        // A background worker waits only for the queues it runs (nothing
        // wakes it when the others empty).
        if (stopping_ && std::all_of(queues_.begin(), queues_.end(), [&](const Queue* q) {
              return q->tasks.empty() || (background_worker && !q->options.background);
            })) {
          return;
        }
        if (background_worker) {
          work.WaitWithDeadline(&mu_, wake);
          continue;
        }
        ++idle_workers_;
        work.WaitWithDeadline(&mu_, wake);
        --idle_workers_;
      }
    }
    finish();
    if (batch.queue == nullptr) continue;

    const absl::Time start = absl::Now();
    // Only a bounded background batch needs its CPU time (a system call).
    const bool paced = batch.queue->options.background && background_cpu_share_ < 1;
    const double start_cpu = paced ? ThreadCpuSeconds() : 0;
    absl::Status status;
    try {
      status = batch.queue->processor(worker, absl::MakeSpan(batch.slices));
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("scoring failed: ", e.what()));
    } catch (...) {
      status = absl::InternalError("scoring failed with an unknown exception");
    }
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    const double cpu_seconds = paced ? ThreadCpuSeconds() - start_cpu : 0;

    {
      absl::MutexLock lock(&mu_);
      Queue* q = batch.queue;
      q->running_candidates -= batch.size;
      ++q->batches;
      q->processed_candidates += batch.size;
      q->cost_seconds = q->cost_seconds * kCostDecay + seconds;
      q->cost_candidates = q->cost_candidates * kCostDecay + static_cast<double>(batch.size);
      q->cost_cpu_seconds = q->cost_cpu_seconds * kCostDecay + cpu_seconds;
      if (paced) PauseBackground(start, cpu_seconds);
      for (TaskSlice& slice : batch.slices) {
        BatchTask* task = slice.task;
        TaskState& s = task->state_;
        --s.in_flight;
        const absl::Status& failure = status.ok() ? slice.status : status;
        if (!failure.ok() || (!s.queued && s.in_flight == 0)) {
          if (Withdraw(task, failure)) finished.emplace_back(task, std::move(s.status));
        }
      }
      if (drained_) drained = DetachDrainedQueues();
    }
    finish();
  }
}

}  // namespace masknet
