#include "server/ranker_service.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "server/logging.h"
#include "server/rank_request.h"

namespace masknet {
namespace {

using serving::v1::FeatureField;
using serving::v1::RankRequest;
using serving::v1::RankResponse;

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

absl::Status StatusFromExceptions(absl::string_view what, absl::FunctionRef<absl::Status()> fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(what, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(what, ": an unknown exception"));
  }
}

// What the service records of every answered call: metrics, and log lines
// for internal errors and (rate-limited) overload. Thread-safe.
class RankerService::CallRecorder {
 public:
  explicit CallRecorder(ServerMetrics* metrics) : metrics_(metrics) {}

  void Record(VersionMetrics* version_metrics, const Servable* servable, const absl::Status& status,
              int64_t candidates, absl::Duration latency) {
    if (version_metrics != nullptr) {
      version_metrics->CountCall(status.code(), candidates, latency);
    } else if (metrics_ != nullptr) {
      metrics_->CountUnresolvedCall(status.code(), latency);
    }
    if (status.code() == absl::StatusCode::kInternal) {
      Log(Severity::kError, absl::StrCat("Rank call failed: ", status.message()),
          {{"event", "internal_error"}, {"model", servable != nullptr ? servable->name : ""},
           {"version", servable != nullptr ? absl::StrCat(servable->version) : ""}});
    } else if (status.code() == absl::StatusCode::kResourceExhausted) {
      RecordOverload(servable, status);
    }
  }

 private:
  // Overload is logged when it starts, then at most every kOverloadLogPeriod
  // with the number of calls refused since.
  static constexpr absl::Duration kOverloadLogPeriod = absl::Seconds(10);

  void RecordOverload(const Servable* servable, const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_) {
    const absl::Time now = absl::Now();
    int64_t refused;
    {
      absl::MutexLock lock(&mu_);
      ++refused_;
      if (now - last_log_ < kOverloadLogPeriod) return;
      last_log_ = now;
      refused = std::exchange(refused_, 0);
    }
    Log(Severity::kWarning,
        absl::StrCat("overloaded: refused ", refused, " call(s) with RESOURCE_EXHAUSTED since the last report; latest: ",
                     status.message()),
        {{"event", "overload"}, {"model", servable != nullptr ? servable->name : ""},
         {"refused", absl::StrCat(refused)}});
  }

  ServerMetrics* const metrics_;
  absl::Mutex mu_;
  absl::Time last_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
};

namespace {

// One Rank call from its validation to its answer. gRPC owns it as the
// call's reactor (it is deleted in OnDone); while queued, it is also the
// scheduler's task.
class RankCall final : public grpc::ServerUnaryReactor, public BatchTask {
 public:
  // Counts itself in `in_flight` until it is done.
  RankCall(grpc::CallbackServerContext* context, const RankRequest* request, RankResponse* response,
           RankerService::CallRecorder* recorder, std::atomic<int64_t>* in_flight)
      : request_(request),
        response_(response),
        recorder_(recorder),
        in_flight_(in_flight),
        deadline_(DeadlineOf(*context)) {
    in_flight_->fetch_add(1, std::memory_order_relaxed);
  }
  ~RankCall() override { in_flight_->fetch_sub(1, std::memory_order_relaxed); }

  // The version that answers the call, and its metrics.
  void Resolve(std::shared_ptr<const Servable> servable, std::shared_ptr<VersionMetrics> metrics) {
    servable_ = std::move(servable);
    metrics_ = std::move(metrics);
  }

  // Takes the validated features of the request.
  void Prepare(RequestFeatures features) {
    features_ = std::move(features);
    int64_t values = BytesOf(features_.context);
    for (const FeatureValues& c : features_.candidates) values += BytesOf(c);
    bytes_ = 2 * values + kBytesPerCandidate * static_cast<int64_t>(features_.candidates.size()) + kBytesPerCall;
    scores_.resize(features_.candidates.size() * servable_->model->num_tasks());
  }

  // Queues the call; answers it at once if the queue refuses. Once queued,
  // a worker may answer the call before Schedule returns, so nothing here
  // touches the call after the queue took it.
  void Schedule(std::shared_ptr<BatchQueue> queue) {
    queue_ = std::move(queue);
    accepted_ = absl::Now();
    handed_off_ = true;
    const absl::Status s = StatusFromExceptions("queueing the call", [&] { return queue_->Schedule(this); });
    if (!s.ok()) Answer(WithFlagNames(s));
  }

  // Finishes the call with `status` and records it. Never throws: without
  // Finish the call would hang.
  void Answer(const absl::Status& status) {
    handed_off_ = true;
    (void)StatusFromExceptions("recording the call", [&] {
      recorder_->Record(metrics_.get(), servable_.get(), status, request_->candidates_size(),
                        absl::Now() - arrived_);
      return absl::OkStatus();
    });
    grpc::Status answer(grpc::StatusCode::RESOURCE_EXHAUSTED, "");  // if even the message cannot be copied
    (void)StatusFromExceptions("answering the call", [&] {
      answer = ToGrpcStatus(status);
      return absl::OkStatus();
    });
    Finish(answer);
  }

  // Whether the call was answered or queued (then the queue answers it).
  bool handed_off() const { return handed_off_; }

  // When the queue accepted the call.
  absl::Time accepted() const { return accepted_; }

  const RequestFeatures& features() const { return features_; }
  float* scores(int64_t candidate) { return scores_.data() + candidate * servable_->model->num_tasks(); }

  // BatchTask.
  int64_t size() const override { return static_cast<int64_t>(features_.candidates.size()); }
  int64_t bytes() const override { return bytes_; }
  absl::Time deadline() const override { return deadline_; }
  void Done(absl::Status status) override {
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

  // ServerUnaryReactor. gRPC calls OnCancel when the client cancels or the
  // deadline passes, and OnDone only after OnCancel returned.
  void OnCancel() override {
    if (queue_ == nullptr) return;
    queue_->Cancel(this, absl::Now() >= deadline_
                             ? absl::DeadlineExceededError("the call's deadline passed before it was scored")
                             : absl::CancelledError("the call was cancelled before it was scored"));
  }
  void OnDone() override { delete this; }

 private:
  const RankRequest* request_;
  RankResponse* response_;
  RankerService::CallRecorder* const recorder_;
  std::atomic<int64_t>* const in_flight_;
  const absl::Time arrived_ = absl::Now();
  const absl::Time deadline_;
  absl::Time accepted_;
  std::shared_ptr<const Servable> servable_;
  std::shared_ptr<VersionMetrics> metrics_;
  RequestFeatures features_;
  int64_t bytes_ = 0;
  std::vector<float> scores_;
  std::shared_ptr<BatchQueue> queue_;
  bool handed_off_ = false;
};

}  // namespace

// Scratch state of one scheduler worker.
struct RankerService::Worker {
  Workspace workspace;
  std::vector<BatchSlice> slices;
  std::vector<float> scores;
};

// A value that overflows in one call's features fails that call alone.
absl::Status RankerService::ScoreBatch(const MaskNetModel& model, VersionMetrics* metrics, Worker& worker,
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

namespace {

void DescribeField(const FieldSpec& f, FeatureField* out) {
  out->set_name(f.config.name());
  if (f.dense) {
    out->set_width(static_cast<uint32_t>(f.values));
    out->set_embedding_dim(f.config.dense().embedding_dim());
    out->set_kind(FeatureField::DENSE);
    out->set_accepts_non_finite(f.config.dense().non_finite() == config::v1::REPLACE_WITH_ZERO);
  } else {
    const auto& c = f.config.categorical();
    out->set_width(static_cast<uint32_t>(f.width));
    out->set_kind(FeatureField::CATEGORICAL);
    out->set_num_buckets(c.num_buckets());
    out->set_max_ids(MaxIds(c));
    out->set_allow_empty(c.allow_empty());
  }
}

// The scheduler's options, its internal errors logged.
BatchScheduler::Options WithErrorLog(BatchScheduler::Options options) {
  if (!options.on_internal_error) {
    options.on_internal_error = [](absl::string_view message) {
      Log(Severity::kError, message, {{"event", "internal_error"}});
    };
  }
  return options;
}

}  // namespace

absl::Status WithFlagNames(const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrReplaceAll(status.message(), {{"(max_queued_candidates=", "(--max_queued_candidates="},
                                                             {"(max_queued_bytes=", "(--max_queued_bytes="}}));
}

absl::Status RankerService::Options::Validate() const {
  if (max_candidates < 1) return absl::InvalidArgumentError(absl::StrCat("max_candidates must be at least 1, got ", max_candidates));
  if (max_calls_in_flight < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_calls_in_flight must be at least 1, got ", max_calls_in_flight));
  }
  if (absl::Status s = scheduler.Validate(); !s.ok()) return s;
  if (absl::Status s = queue.Validate(); !s.ok()) return s;
  if (queue.max_queued_candidates < max_candidates) {
    return absl::InvalidArgumentError(
        "max_queued_candidates must be at least max_candidates, or a full-size request could never be accepted");
  }
  return absl::OkStatus();
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

serving::v1::ModelInfo DescribeModel(const Servable& servable) {
  const ModelSpec& spec = servable.model->spec();
  serving::v1::ModelInfo info;
  info.set_model_name(servable.name);
  info.set_model_version(servable.version);
  for (const FieldSpec& f : spec.schema.fields()) {
    DescribeField(f, f.scope == Scope::kContext ? info.add_context_fields() : info.add_candidate_fields());
  }
  for (const TaskSpec& t : spec.tasks) info.add_tasks(t.name);
  info.set_parameter_count(spec.ParameterCount());
  info.set_flops_per_candidate(spec.FlopsPerCandidate());
  info.set_description(servable.config.description());
  info.set_precision(PrecisionName(servable.model->precision()));
  info.mutable_metadata()->insert(servable.config.metadata().begin(), servable.config.metadata().end());
  return info;
}

RankerService::RankerService(const ModelRepository* repository, const Options& options)
    : repository_(repository),
      options_(options),
      recorder_(std::make_unique<CallRecorder>(options.metrics)),
      scheduler_(WithErrorLog(options.scheduler)) {
  for (int i = 0; i < scheduler_.num_workers(); ++i) workers_.push_back(std::make_unique<Worker>());
}

RankerService::~RankerService() { Shutdown(); }

void RankerService::Shutdown() { scheduler_.Shutdown(); }

RankerService::VersionState RankerService::StateFor(const std::shared_ptr<const Servable>& servable) {
  absl::MutexLock lock(&queues_mu_);
  if (const int64_t generation = repository_->generation(); generation != checked_generation_) {
    // Closing a queue returns at once; its calls finish on their version.
    absl::erase_if(versions_, [&](const auto& entry) { return !repository_->Serves(entry.first); });
    checked_generation_ = generation;
  }
  VersionState& state = versions_[servable.get()];
  if (state.queue == nullptr) {
    if (options_.metrics != nullptr) state.metrics = options_.metrics->ForVersion(servable->name, servable->version);
    BatchScheduler::QueueOptions options = options_.queue;
    options.max_batch_size = servable->model->max_batch_size();
    // The queue keeps its model (and its metrics' series) alive.
    state.queue = scheduler_.AddQueue(
        options, [this, servable, metrics = state.metrics](int worker, absl::Span<TaskSlice> batch) {
          return ScoreBatch(*servable->model, metrics.get(), *workers_[worker], batch);
        });
    // A call that found its version just before it was unloaded: serve it,
    // and close this queue at the next check.
    if (!repository_->Serves(servable.get())) checked_generation_ = -1;
  }
  return state;
}

void RankerService::RefreshGauges() {
  if (options_.metrics != nullptr) options_.metrics->SetCallsInFlight(calls_in_flight());
  absl::MutexLock lock(&queues_mu_);
  for (const auto& [servable, state] : versions_) {
    if (state.metrics != nullptr) state.metrics->SetQueuedCandidates(state.queue->stats().queued_candidates);
  }
}

std::optional<BatchQueueStats> RankerService::QueueStats(const std::string& model_name, int64_t version) {
  auto servable = repository_->Find(model_name, version);
  if (!servable.ok()) return std::nullopt;
  absl::MutexLock lock(&queues_mu_);
  auto it = versions_.find(servable->get());
  if (it == versions_.end()) return std::nullopt;
  return it->second.queue->stats();
}

grpc::ServerUnaryReactor* RankerService::Rank(grpc::CallbackServerContext* context,
                                              const RankRequest* request, RankResponse* response) {
  RankCall* call = nullptr;
  try {
    call = new RankCall(context, request, response, recorder_.get(), &calls_in_flight_);
  } catch (const std::bad_alloc&) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, ""));
    return reactor;
  }
  // An exception (an allocation that fails) before the call was answered
  // or queued answers it; after, the queue owns it.
  const absl::Status accepted = StatusFromExceptions("accepting the call", [&] {
    // This call counts itself.
    if (const int64_t in_flight = calls_in_flight(); in_flight > options_.max_calls_in_flight) {
      call->Answer(absl::ResourceExhaustedError(absl::StrCat("the server holds ", in_flight - 1,
                                                             " calls (--max_calls_in_flight=",
                                                             options_.max_calls_in_flight, "); retry later")));
      return absl::OkStatus();
    }
    auto servable = repository_->Find(request->model_name(), request->model_version());
    if (!servable.ok()) {
      call->Answer(servable.status());
      return absl::OkStatus();
    }
    const VersionState state = StateFor(*servable);
    call->Resolve(*servable, state.metrics);
    const MaskNetModel& model = *(*servable)->model;
    auto features = ParseRankRequest(*request, model.spec().schema, options_.max_candidates);
    if (!features.ok()) {
      call->Answer(features.status());
      return absl::OkStatus();
    }
    response->set_model_name((*servable)->name);
    response->set_model_version((*servable)->version);
    for (const TaskSpec& t : model.spec().tasks) response->add_tasks(t.name);
    if (features->candidates.empty()) {
      call->Answer(absl::OkStatus());
      return absl::OkStatus();
    }
    call->Prepare(*std::move(features));
    call->Schedule(state.queue);
    return absl::OkStatus();
  });
  if (!accepted.ok() && !call->handed_off()) {
    response->Clear();
    call->Answer(accepted);
  }
  return call;
}

grpc::ServerUnaryReactor* RankerService::GetModelInfo(grpc::CallbackServerContext* context,
                                                      const serving::v1::GetModelInfoRequest* request,
                                                      serving::v1::ModelInfo* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto servable = repository_->Find(request->model_name(), request->model_version());
  if (!servable.ok()) {
    reactor->Finish(ToGrpcStatus(servable.status()));
    return reactor;
  }
  *response = DescribeModel(**servable);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace masknet
