#include "server/rank_call.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/capture_file.h"
#include "server/logging.h"
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

int64_t CopiedFeatures::bytes() const {
  return static_cast<int64_t>(dense.capacity() * sizeof(float) + ids.capacity() * sizeof(int64_t) +
                              id_counts.capacity() * sizeof(uint32_t) +
                              view.candidates.capacity() * sizeof(FeatureValues));
}

CopiedFeatures CopyFeatures(const RequestFeatures& from) {
  CopiedFeatures out;
  size_t dense = from.context.dense.size(), ids = from.context.ids.size(), counts = from.context.id_counts.size();
  for (const FeatureValues& c : from.candidates) {
    dense += c.dense.size();
    ids += c.ids.size();
    counts += c.id_counts.size();
  }
  out.dense.reserve(dense);
  out.ids.reserve(ids);
  out.id_counts.reserve(counts);
  // The vectors never grow past their reservations: the spans stay valid.
  auto copy = [&out](const FeatureValues& v) {
    FeatureValues c;
    c.dense = absl::MakeConstSpan(out.dense.data() + out.dense.size(), v.dense.size());
    out.dense.insert(out.dense.end(), v.dense.begin(), v.dense.end());
    c.ids = absl::MakeConstSpan(out.ids.data() + out.ids.size(), v.ids.size());
    out.ids.insert(out.ids.end(), v.ids.begin(), v.ids.end());
    c.id_counts = absl::MakeConstSpan(out.id_counts.data() + out.id_counts.size(), v.id_counts.size());
    out.id_counts.insert(out.id_counts.end(), v.id_counts.begin(), v.id_counts.end());
    return c;
  };
  out.view.context = copy(from.context);
  out.view.candidates.reserve(from.candidates.size());
  for (const FeatureValues& c : from.candidates) out.view.candidates.push_back(copy(c));
  return out;
}

void ShadowRoute::Fail(const absl::Status& status) const {
  Count(ShadowMetrics::Outcome::kFailed);
  if (failure_logged.exchange(true)) return;
  Log(Severity::kWarning,
      absl::StrCat("shadow scoring: version ", canary->version, " (canary) of model '", canary->name,
                   "' cannot score a call that version ", stable->version,
                   " (stable) answered; such calls count as failed in masknet_shadow_calls_total, and only this "
                   "first one is logged: ",
                   status.message()),
      {{"event", "shadow_failed"}, {"model", canary->name}, {"version", absl::StrCat(canary->version)}});
}

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

void RankCall::SetShadow(std::shared_ptr<const ShadowRoute> route, absl::StatusOr<CopiedFeatures> features) {
  shadow_ = std::move(route);
  if (features.ok()) {
    shadow_features_ = *std::move(features);
  } else {
    shadow_error_ = features.status();
  }
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
  if (status.ok() && capture_ != nullptr) {
    (void)StatusFromExceptions("capturing the call", [&] {
      std::string record;
      AppendCaptureRecord(absl::ToUnixMicros(arrived_), *request_, *response_,
                          PrecisionName(servable_->model->precision()), &record);
      capture_->Add(std::move(record));
      return absl::OkStatus();
    });
  }
  // Once answered, the call may be deleted at any time: take what the
  // shadow needs first. Only calls answered OK are shadowed (and counted).
  std::shared_ptr<const ShadowRoute> shadow = status.ok() ? std::move(shadow_) : nullptr;
  if (shadow != nullptr && shadow_dropped_) {
    shadow->Count(ShadowMetrics::Outcome::kDropped);
    shadow = nullptr;
  }
  const absl::Status shadow_error = shadow_error_;
  CopiedFeatures features;
  std::vector<float> scores;
  if (shadow != nullptr && shadow_error.ok()) {
    features = std::move(shadow_features_);
    scores = std::move(scores_);
  }
  Answer(status);
  if (shadow == nullptr) return;
  if (!shadow_error.ok()) {
    shadow->Fail(shadow_error);
  } else {
    ShadowCall::Start(std::move(shadow), std::move(features), std::move(scores));
  }
}

ShadowCall::ShadowCall(std::shared_ptr<const ShadowRoute> route, CopiedFeatures features,
                       std::vector<float> stable_scores)
    : route_(std::move(route)),
      features_(std::move(features)),
      stable_scores_(std::move(stable_scores)),
      scores_(features_.view.candidates.size() * route_->canary->model->num_tasks()),
      accepted_(absl::Now()) {}

void ShadowCall::Start(std::shared_ptr<const ShadowRoute> route, CopiedFeatures features,
                       std::vector<float> stable_scores) {
  const std::shared_ptr<const ShadowRoute> kept = route;
  const absl::Status started = StatusFromExceptions("starting a shadow call", [&] {
    std::unique_ptr<ShadowCall> call(new ShadowCall(std::move(route), std::move(features), std::move(stable_scores)));
    if (kept->queue->Schedule(call.get()).ok()) {
      call.release();  // the queue finishes it, and Done deletes it
    } else {
      kept->Count(ShadowMetrics::Outcome::kDropped);
    }
    return absl::OkStatus();
  });
  if (!started.ok()) kept->Fail(started);
}

int64_t ShadowCall::bytes() const {
  return features_.bytes() + static_cast<int64_t>((stable_scores_.size() + scores_.size()) * sizeof(float)) +
         static_cast<int64_t>(sizeof(ShadowCall));
}

void ShadowCall::Done(absl::Status status) {
  std::unique_ptr<ShadowCall> self(this);
  const ShadowRoute& route = *route_;
  if (status.ok()) {
    if (route.metrics != nullptr) {
      route.metrics->ObserveScored(stable_scores_, route.stable->model->num_tasks(), scores_,
                                   route.canary->model->num_tasks());
    }
  } else if (status.code() == absl::StatusCode::kDeadlineExceeded || status.code() == absl::StatusCode::kUnavailable) {
    route.Count(ShadowMetrics::Outcome::kDropped);
  } else {
    route.Fail(status);
  }
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
    const ScoredTask& call = *static_cast<ScoredTask*>(s.task);
    worker.slices.push_back(BatchSlice{&call.features(), s.begin, s.end});
    n += s.size();
    if (s.begin == 0 && metrics != nullptr) metrics->ObserveQueueWait(start - call.accepted());
  }
  worker.scores.resize(n * num_tasks);
  InputCounts* counts = metrics != nullptr && metrics->counts_inputs() ? &worker.input_counts : nullptr;
  absl::Status status = model.Run(worker.slices, worker.workspace, absl::MakeSpan(worker.scores), counts);
  if (metrics != nullptr) metrics->ObserveBatch(n, absl::Now() - start);
  if (status.ok()) {
    if (metrics != nullptr) metrics->ObserveScores(worker.scores);
    if (counts != nullptr) metrics->ObserveInputProblems(*counts);
    const float* from = worker.scores.data();
    for (const TaskSlice& s : batch) {
      std::copy_n(from, s.size() * num_tasks, static_cast<ScoredTask*>(s.task)->scores(s.begin));
      from += s.size() * num_tasks;
    }
    return absl::OkStatus();
  }
  if (status.code() != absl::StatusCode::kInvalidArgument) {
    return absl::InternalError(absl::StrCat("scoring failed: ", status.message()));
  }
  if (batch.size() == 1) return status;
  // One call's values overflowed: score each call's slice alone, so that
  // only the calls at fault fail (and only theirs leave the input counts
  // and the scores served).
  InputCounts slice_counts, batch_counts;
  for (size_t i = 0; i < batch.size(); ++i) {
    TaskSlice& s = batch[i];
    const absl::Span<float> scores(static_cast<ScoredTask*>(s.task)->scores(s.begin), s.size() * num_tasks);
    status = model.Run(absl::MakeConstSpan(&worker.slices[i], 1), worker.workspace, scores,
                       counts != nullptr ? &slice_counts : nullptr);
    if (status.ok() && metrics != nullptr) metrics->ObserveScores(scores);
    if (status.ok() && counts != nullptr) {
      batch_counts.resize(slice_counts.size(), 0);
      for (size_t k = 0; k < slice_counts.size(); ++k) batch_counts[k] += slice_counts[k];
    }
    if (status.code() == absl::StatusCode::kInvalidArgument) {
      s.status = std::move(status);
    } else if (!status.ok()) {
      s.status = absl::InternalError(absl::StrCat("scoring failed: ", status.message()));
    }
  }
  if (counts != nullptr) metrics->ObserveInputProblems(batch_counts);
  return absl::OkStatus();
}

}  // namespace masknet
