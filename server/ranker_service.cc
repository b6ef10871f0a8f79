#include "server/ranker_service.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "google/protobuf/util/message_differencer.h"
#include "absl/time/clock.h"
#include "server/call_capture.h"
#include "server/logging.h"
#include "server/model_info.h"
#include "server/rank_call.h"
#include "server/request_parser.h"
#include "server/status_conversion.h"

namespace masknet {

namespace {

using serving::v1::RankRequest;
using serving::v1::RankResponse;

// The scheduler's options, with the service's shadow workers as its
// background workers and errors logged.
BatchScheduler::Options SchedulerOptions(const RankerService::Options& service) {
  BatchScheduler::Options options = service.scheduler;
  options.background_workers = service.shadow_workers;
  options.background_cpu_share = service.shadow_cpu_share;
  if (!options.on_internal_error) {
    options.on_internal_error = [](absl::string_view message) {
      Log(Severity::kError, message, {{"event", "internal_error"}});
    };
  }
  return options;
}

// Whether two models read requests the same way: the same fields, in the
// same order, with the same options.
bool SameSchema(const MaskNetModel& a, const MaskNetModel& b) {
  const std::vector<FieldSpec>& x = a.spec().schema.fields();
  const std::vector<FieldSpec>& y = b.spec().schema.fields();
  return std::equal(x.begin(), x.end(), y.begin(), y.end(), [](const FieldSpec& f, const FieldSpec& g) {
    return google::protobuf::util::MessageDifferencer::Equals(f.config, g.config);
  });
}

std::vector<std::string> TaskNames(const MaskNetModel& model) {
  std::vector<std::string> names;
  for (const TaskSpec& t : model.spec().tasks) names.push_back(t.name);
  return names;
}

}  // namespace

absl::Status RankerService::Options::Validate() const {
  if (max_candidates < 1) return absl::InvalidArgumentError(absl::StrCat("max_candidates must be at least 1, got ", max_candidates));
  if (max_calls_in_flight < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_calls_in_flight must be at least 1, got ", max_calls_in_flight));
  }
  if (shadow_workers < 0 || shadow_workers > kMaxShadowWorkers) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow_workers must be in [0, ", kMaxShadowWorkers, "], got ", shadow_workers));
  }
  if (!(shadow_cpu_share > 0 && shadow_cpu_share <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("shadow_cpu_share must be in (0, 1], got ", shadow_cpu_share));
  }
  if (absl::Status s = SchedulerOptions(*this).Validate(); !s.ok()) return s;
  if (absl::Status s = queue.Validate(); !s.ok()) return s;
  if (shadow_max_queued_candidates < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow_max_queued_candidates must be at least 1, got ", shadow_max_queued_candidates));
  }
  if (shadow_max_batch_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("shadow_max_batch_size must be at least 1, got ", shadow_max_batch_size));
  }
  if (shadow_max_delay <= absl::ZeroDuration() || shadow_max_delay > kMaxShadowDelay) {
    return absl::InvalidArgumentError(absl::StrCat("shadow_max_delay must be in (0, ",
                                                   absl::FormatDuration(kMaxShadowDelay), "], got ",
                                                   absl::FormatDuration(shadow_max_delay)));
  }
  if (queue.max_queued_candidates < max_candidates) {
    return absl::InvalidArgumentError(
        "max_queued_candidates must be at least max_candidates, or a full-size request could never be accepted");
  }
  return absl::OkStatus();
}

RankerService::RankerService(const ModelRepository* repository, const Options& options)
    : repository_(repository),
      options_(options),
      recorder_(std::make_unique<CallRecorder>(options.metrics)),
      scheduler_(SchedulerOptions(options)) {
  const int workers = scheduler_.num_workers() + scheduler_.num_background_workers();
  for (int i = 0; i < workers; ++i) workers_.push_back(std::make_unique<ScoringWorker>());
}

RankerService::~RankerService() { Shutdown(); }

void RankerService::Shutdown() { scheduler_.Shutdown(); }

RankerService::VersionState RankerService::StateFor(const std::shared_ptr<const Servable>& servable) {
  absl::MutexLock lock(&queues_mu_);
  if (const int64_t generation = repository_->generation(); generation != checked_generation_) {
    // Closing a queue returns at once; its calls finish on their version.
    absl::erase_if(versions_, [&](const auto& entry) { return !repository_->Serves(entry.first); });
    // A route whose canary is no longer the one its stable version's calls
    // go to lets go of it (and is made again at the next call, if any).
    for (auto& [version, state] : versions_) {
      if (state.shadow != nullptr && repository_->Shadow(*state.shadow->stable).canary != state.shadow->canary) {
        state.shadow.reset();
      }
    }
    checked_generation_ = generation;
  }
  VersionState& state = versions_[servable.get()];
  if (state.queue == nullptr) {
    if (options_.metrics != nullptr) {
      const MaskNetModel& model = *servable->model;
      state.metrics = options_.data_metrics
                          ? options_.metrics->ForVersion(servable->name, servable->version, TaskNames(model),
                                                         &model.spec().schema)
                          : options_.metrics->ForVersion(servable->name, servable->version, {}, nullptr);
    }
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

std::shared_ptr<const ShadowRoute> RankerService::RouteFor(const std::shared_ptr<const Servable>& stable,
                                                           const std::shared_ptr<const Servable>& canary) {
  absl::MutexLock lock(&queues_mu_);
  const auto state = versions_.find(stable.get());
  if (state == versions_.end()) return nullptr;  // unloaded since the call found it
  std::shared_ptr<const ShadowRoute>& route = state->second.shadow;
  if (route != nullptr && route->canary == canary) return route;
  auto made = std::make_shared<ShadowRoute>();
  made->stable = stable;
  made->canary = canary;
  made->max_delay = options_.shadow_max_delay;
  made->same_schema = SameSchema(*stable->model, *canary->model);
  if (options_.metrics != nullptr) {
    made->metrics = options_.metrics->ForShadow(stable->name, stable->version, canary->version,
                                                TaskNames(*stable->model), TaskNames(*canary->model));
  }
  BatchScheduler::QueueOptions options = options_.queue;
  options.background = true;
  // Refuses, before its features are copied (MaybeShadow), a shadow call
  // the shadow work queued ahead and --shadow_cpu_share would keep past
  // --shadow_max_delay, whatever --admit_by_deadline and
  // --deadline_headroom say for callers' calls.
  options.admit_by_deadline = true;
  options.deadline_headroom = 0;
  options.max_queued_candidates = options_.shadow_max_queued_candidates;
  options.max_batch_size = std::min(canary->model->max_batch_size(), options_.shadow_max_batch_size);
  // The queue keeps the canary alive until its shadow calls are done.
  made->queue = scheduler_.AddQueue(options, [this, canary](int worker, absl::Span<TaskSlice> batch) {
    return ScoreBatch(*canary->model, nullptr, *workers_[worker], batch);
  });
  route = made;
  return route;
}

void RankerService::MaybeShadow(const std::shared_ptr<const Servable>& servable, const RankRequest& request,
                                RankCall* call) {
  const ModelRepository::ShadowTarget target = repository_->Shadow(*servable);
  if (target.canary == nullptr || !Sampled(target.fraction)) return;
  std::shared_ptr<const ShadowRoute> route;
  // Whatever goes wrong here fails the shadow, never the call.
  const absl::Status sampled = StatusFromExceptions("sampling the call for shadow scoring", [&] {
    route = RouteFor(servable, target.canary);
    if (route == nullptr) return absl::OkStatus();
    // A shadow call the queue would refuse now (full, or too far behind to
    // be scored within --shadow_max_delay) costs no copy; it counts as
    // dropped if the call is answered OK.
    if (!route->queue->CheckAdmission(call->size(), call->bytes(), absl::Now() + route->max_delay).ok()) {
      call->DropShadow(route);
      return absl::OkStatus();
    }
    if (route->same_schema) {
      call->SetShadow(route, CopyFeatures(call->features()));
      return absl::OkStatus();
    }
    auto features = ParseRankRequest(request, route->canary->model->spec().schema, options_.max_candidates);
    call->SetShadow(route, features.ok() ? absl::StatusOr<CopiedFeatures>(CopyFeatures(*features))
                                         : absl::StatusOr<CopiedFeatures>(features.status()));
    return absl::OkStatus();
  });
  if (!sampled.ok() && route != nullptr) call->SetShadow(route, sampled);
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
    auto servable = repository_->Find(request->model_name(), request->model_version(), request->model_version_label());
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
    MaybeShadow(*servable, *request, call);
    if (options_.capture != nullptr && options_.capture->Sample()) call->SetCapture(options_.capture);
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
  auto servable = repository_->Find(request->model_name(), request->model_version(), request->model_version_label());
  if (!servable.ok()) {
    reactor->Finish(ToGrpcStatus(servable.status()));
    return reactor;
  }
  *response = DescribeModel(**servable);
  for (const auto& [label, version] : repository_->Labels((*servable)->name)) {
    if (version == (*servable)->version) response->add_version_labels(label);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace masknet
