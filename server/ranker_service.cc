#include "server/ranker_service.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/rank_request.h"

namespace masknet {
namespace {

using serving::v1::FeatureField;
using serving::v1::RankRequest;
using serving::v1::RankResponse;

// Memory a queued call holds beyond its feature values, per candidate (the
// Candidate and Features messages and their repeated fields' headers).
constexpr int64_t kBytesPerCandidate = 96;

absl::Time DeadlineOf(const grpc::CallbackServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

int64_t BytesOf(const FeatureValues& v) {
  return static_cast<int64_t>(v.dense.size() * sizeof(float) + v.ids.size() * sizeof(int64_t) +
                              v.id_counts.size() * sizeof(uint32_t));
}

// One Rank call from its validation to its answer. gRPC owns it as the
// call's reactor (it is deleted in OnDone); while queued, it is also the
// scheduler's task.
class RankCall final : public grpc::ServerUnaryReactor, public BatchTask {
 public:
  RankCall(grpc::CallbackServerContext* context, const RankRequest* request, RankResponse* response)
      : request_(request), response_(response), deadline_(DeadlineOf(*context)) {}

  // Takes the validated features of the request and the model that scores
  // them.
  void Prepare(std::shared_ptr<const Servable> servable, RequestFeatures features) {
    servable_ = std::move(servable);
    features_ = std::move(features);
    bytes_ = BytesOf(features_.context);
    for (const FeatureValues& c : features_.candidates) bytes_ += BytesOf(c) + kBytesPerCandidate;
    scores_.resize(features_.candidates.size() * servable_->model->num_tasks());
  }

  // Queues the call; answers it at once if the queue refuses.
  void Schedule(BatchQueue* queue) {
    queue_ = queue;
    if (absl::Status s = queue->Schedule(this); !s.ok()) Finish(ToGrpcStatus(s));
  }

  const RequestFeatures& features() const { return features_; }
  float* scores(int64_t candidate) { return scores_.data() + candidate * servable_->model->num_tasks(); }

  // BatchTask.
  int64_t size() const override { return static_cast<int64_t>(features_.candidates.size()); }
  int64_t bytes() const override { return bytes_; }
  absl::Time deadline() const override { return deadline_; }
  void Done(absl::Status status) override {
    if (status.ok()) {
      const int num_tasks = servable_->model->num_tasks();
      response_->mutable_candidates()->Reserve(request_->candidates_size());
      for (int i = 0; i < request_->candidates_size(); ++i) {
        auto* out = response_->add_candidates();
        out->set_id(request_->candidates(i).id());
        out->mutable_scores()->Add(scores_.begin() + i * num_tasks, scores_.begin() + (i + 1) * num_tasks);
      }
    }
    Finish(ToGrpcStatus(status));
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
  const absl::Time deadline_;
  std::shared_ptr<const Servable> servable_;
  RequestFeatures features_;
  int64_t bytes_ = 0;
  std::vector<float> scores_;
  BatchQueue* queue_ = nullptr;
};

}  // namespace

// Scratch state of one scheduler worker.
struct RankerService::Worker {
  Workspace workspace;
  std::vector<BatchSlice> slices;
  std::vector<float> scores;
};

// A value that overflows in one call's features fails that call alone.
absl::Status RankerService::ScoreBatch(const MaskNetModel& model, Worker& worker, absl::Span<TaskSlice> batch) {
  const int num_tasks = model.num_tasks();
  worker.slices.clear();
  int64_t n = 0;
  for (const TaskSlice& s : batch) {
    worker.slices.push_back(BatchSlice{&static_cast<RankCall*>(s.task)->features(), s.begin, s.end});
    n += s.size();
  }
  worker.scores.resize(n * num_tasks);
  absl::Status status = model.Run(worker.slices, worker.workspace, absl::MakeSpan(worker.scores));
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
  out->set_width(static_cast<uint32_t>(f.width));
  if (f.dense) {
    out->set_kind(FeatureField::DENSE);
    out->set_accepts_non_finite(f.config.dense().non_finite() == config::v1::REPLACE_WITH_ZERO);
  } else {
    const auto& c = f.config.categorical();
    out->set_kind(FeatureField::CATEGORICAL);
    out->set_num_buckets(c.num_buckets());
    out->set_max_ids(MaxIds(c));
    out->set_allow_empty(c.allow_empty());
  }
}

}  // namespace

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
  info.mutable_metadata()->insert(servable.config.metadata().begin(), servable.config.metadata().end());
  return info;
}

RankerService::RankerService(const ModelRepository* repository, const Options& options)
    : repository_(repository), options_(options), scheduler_(options.scheduler) {
  for (int i = 0; i < scheduler_.num_workers(); ++i) workers_.push_back(std::make_unique<Worker>());
}

RankerService::~RankerService() { Shutdown(); }

void RankerService::Shutdown() { scheduler_.Shutdown(); }

BatchQueue* RankerService::QueueFor(const std::shared_ptr<const Servable>& servable) {
  absl::MutexLock lock(&queues_mu_);
  if (const int64_t generation = repository_->generation(); generation != checked_generation_) {
    // Closing a queue returns at once; its calls finish on their version.
    absl::erase_if(queues_, [&](const auto& entry) { return !repository_->Serves(entry.first); });
    checked_generation_ = generation;
  }
  std::unique_ptr<BatchQueue>& queue = queues_[servable.get()];
  if (queue == nullptr) {
    BatchScheduler::QueueOptions options = options_.queue;
    options.max_batch_size = servable->model->max_batch_size();
    // The queue keeps its model alive.
    queue = scheduler_.AddQueue(options, [this, servable](int worker, absl::Span<TaskSlice> batch) {
      return ScoreBatch(*servable->model, *workers_[worker], batch);
    });
    // A call that found its version just before it was unloaded: serve it,
    // and close this queue at the next check.
    if (!repository_->Serves(servable.get())) checked_generation_ = -1;
  }
  return queue.get();
}

std::optional<BatchQueueStats> RankerService::QueueStats(const std::string& model_name, int64_t version) {
  auto servable = repository_->Find(model_name, version);
  if (!servable.ok()) return std::nullopt;
  absl::MutexLock lock(&queues_mu_);
  auto it = queues_.find(servable->get());
  if (it == queues_.end()) return std::nullopt;
  return it->second->stats();
}

grpc::ServerUnaryReactor* RankerService::Rank(grpc::CallbackServerContext* context,
                                              const RankRequest* request, RankResponse* response) {
  auto* call = new RankCall(context, request, response);
  auto servable = repository_->Find(request->model_name(), request->model_version());
  if (!servable.ok()) {
    call->Finish(ToGrpcStatus(servable.status()));
    return call;
  }
  const MaskNetModel& model = *(*servable)->model;
  auto features = ParseRankRequest(*request, model.spec().schema, options_.max_candidates);
  if (!features.ok()) {
    call->Finish(ToGrpcStatus(features.status()));
    return call;
  }
  response->set_model_name((*servable)->name);
  response->set_model_version((*servable)->version);
  for (const TaskSpec& t : model.spec().tasks) response->add_tasks(t.name);
  if (features->candidates.empty()) {
    call->Finish(grpc::Status::OK);
    return call;
  }
  BatchQueue* queue = QueueFor(*servable);
  call->Prepare(*std::move(servable), *std::move(features));
  call->Schedule(queue);
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
