#include "server/rank_call.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/status_conversion.h"

namespace masknet {
namespace {

// Memory a queued call holds beyond its feature values: per candidate, the
// Candidate and Features messages and their repeated fields' headers; per
// call, gRPC's call state (its arena), the reactor and the response, a few
// KiB (8 KiB is a round estimate from above). The request message holds the
// feature values a second time.
constexpr int64_t kBytesPerCandidate = 96;
constexpr int64_t kBytesPerCall = 8 << 10;

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

int64_t BytesOf(const FeatureValues& v) {
  return static_cast<int64_t>(v.dense.size() * sizeof(float) + v.ids.size() * sizeof(int64_t) +
                              v.id_counts.size() * sizeof(uint32_t));
}

}  // namespace

RankCall::RankCall(grpc::CallbackServerContext* context, const serving::v1::RankRequest* request,
                   serving::v1::RankResponse* response, CallRecorder* recorder, std::atomic<int64_t>* in_flight)
    : request_(request),
      response_(response),
      recorder_(recorder),
      in_flight_(in_flight),
      arrived_(absl::Now()),
      deadline_(DeadlineOf(*context)) {
  in_flight_->fetch_add(1, std::memory_order_relaxed);
}

RankCall::~RankCall() { in_flight_->fetch_sub(1, std::memory_order_relaxed); }

void RankCall::Resolve(std::shared_ptr<const Servable> servable, std::shared_ptr<VersionMetrics> metrics) {
  servable_ = std::move(servable);
  metrics_ = std::move(metrics);
}

void RankCall::Prepare(RequestFeatures features) {
  features_ = std::move(features);
  int64_t values = BytesOf(features_.context);
  for (const FeatureValues& c : features_.candidates) values += BytesOf(c);
  bytes_ = 2 * values + kBytesPerCandidate * static_cast<int64_t>(features_.candidates.size()) + kBytesPerCall;
  scores_.resize(features_.candidates.size() * servable_->model->num_tasks());
}

void RankCall::Schedule(std::shared_ptr<BatchQueue> queue) {
  queue_ = std::move(queue);
  accepted_ = absl::Now();
  handed_off_ = true;
  const absl::Status s = StatusFromExceptions("queueing the call", [&] { return queue_->Schedule(this); });
  if (!s.ok()) Answer(WithFlagNames(s));
}

void RankCall::Answer(const absl::Status& status) {
  handed_off_ = true;
  (void)StatusFromExceptions("recording the call", [&] {
    recorder_->Record(metrics_.get(), servable_.get(), status, request_->candidates_size(), absl::Now() - arrived_);
    return absl::OkStatus();
  });
  grpc::Status answer(grpc::StatusCode::RESOURCE_EXHAUSTED, "");  // if even the message cannot be copied
  (void)StatusFromExceptions("answering the call", [&] {
    answer = ToGrpcStatus(status);
    return absl::OkStatus();
  });
  Finish(answer);
}

void RankCall::Done(absl::Status status) {
  if (status.ok()) {
    status = StatusFromExceptions("building the response", [&] {
      const int num_tasks = servable_->model->num_tasks();
      response_->mutable_candidates()->Reserve(request_->candidates_size());
      for (int i = 0; i < request_->candidates_size(); ++i) {
        auto* out = response_->add_candidates();
        out->set_id(request_->candidates(i).id());
        out->mutable_scores()->Add(scores_.begin() + i * num_tasks, scores_.begin() + (i + 1) * num_tasks);
      }
      return absl::OkStatus();
    });
    if (!status.ok()) response_->Clear();
  }
  Answer(status);
}

void RankCall::OnCancel() {
  if (queue_ == nullptr) return;
  queue_->Cancel(this, absl::Now() >= deadline_
                           ? absl::DeadlineExceededError("the call's deadline passed before it was scored")
                           : absl::CancelledError("the call was cancelled before it was scored"));
}

absl::Status ScoreBatch(const MaskNetModel& model, VersionMetrics* metrics, ScoringWorker& worker,
                        absl::Span<TaskSlice> batch) {
  const int num_tasks = model.num_tasks();
  const absl::Time start = absl::Now();
  worker.slices.clear();
  int64_t n = 0;
  for (const TaskSlice& s : batch) {
    const RankCall& call = *static_cast<RankCall*>(s.task);
    worker.slices.push_back(BatchSlice{&call.features(), s.begin, s.end});
    n += s.size();
    if (s.begin == 0 && metrics != nullptr) metrics->ObserveQueueWait(start - call.accepted());
  }
  worker.scores.resize(n * num_tasks);
  absl::Status status = model.Run(worker.slices, worker.workspace, absl::MakeSpan(worker.scores));
  if (metrics != nullptr) metrics->ObserveBatch(n, absl::Now() - start);
  if (status.ok()) {
    if (metrics != nullptr) metrics->ObserveScores(worker.scores);
    const float* from = worker.scores.data();
    for (const TaskSlice& s : batch) {
      std::copy_n(from, s.size() * num_tasks, static_cast<RankCall*>(s.task)->scores(s.begin));
      from += s.size() * num_tasks;
    }
    return absl::OkStatus();
  }
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return absl::InternalError(absl::StrCat("scoring failed: ", status.message()));
  }
  if (batch.size() == 1) return status;
  // One call's values overflowed: score each call's slice alone, so that
  // only the calls at fault fail.
  for (size_t i = 0; i < batch.size(); ++i) {
    TaskSlice& s = batch[i];
    status = model.Run(absl::MakeConstSpan(&worker.slices[i], 1), worker.workspace,
                       absl::MakeSpan(static_cast<RankCall*>(s.task)->scores(s.begin), s.size() * num_tasks));
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      s.status = std::move(status);
    } else if (!status.ok()) {
      s.status = absl::InternalError(absl::StrCat("scoring failed: ", status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace masknet
