#include "server/ranker_service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/rank_request.h"

namespace masknet {
namespace {

using serving::v1::FeatureField;
using serving::v1::RankRequest;
using serving::v1::RankResponse;

// One Rank call's candidates waiting for, or being, scored.
class RankTask final : public BatchTask {
 public:
  RankTask(std::shared_ptr<const Servable> servable, RequestFeatures features,
           grpc::CallbackServerContext* context, const RankRequest* request, RankResponse* response,
           grpc::ServerUnaryReactor* reactor)
      : servable_(std::move(servable)),
        context_(context),
        features_(std::move(features)),
        request_(request),
        response_(response),
        reactor_(reactor),
        scores_(features_.candidates.size() * servable_->model->num_tasks()) {}

  int64_t size() const override { return static_cast<int64_t>(features_.candidates.size()); }
  bool cancelled() const override { return context_->IsCancelled(); }

  void Done(absl::Status status) override {
    if (status.ok()) {
      const int num_tasks = servable_->model->num_tasks();
      response_->mutable_candidates()->Reserve(request_->candidates_size());
      for (int i = 0; i < request_->candidates_size(); ++i) {
        auto* out = response_->add_candidates();
        out->set_id(request_->candidates(i).id());
        out->mutable_scores()->Add(scores_.begin() + i * num_tasks,
                                   scores_.begin() + (i + 1) * num_tasks);
      }
    }
    reactor_->Finish(ToGrpcStatus(status));
  }

  const MaskNetModel& model() const { return *servable_->model; }
  const RequestFeatures& features() const { return features_; }
  float* scores(int64_t candidate) { return scores_.data() + candidate * model().num_tasks(); }

 private:
  std::shared_ptr<const Servable> servable_;
  grpc::CallbackServerContext* context_;
  RequestFeatures features_;
  const RankRequest* request_;
  RankResponse* response_;
  grpc::ServerUnaryReactor* reactor_;
  std::vector<float> scores_;
};

// Scores a batch of slices of RankTasks for one model. Batches arrive sized
// by the queue's max_batch_size; the model's own capacity is enforced here too.
absl::Status ScoreBatch(absl::Span<const TaskSlice> slices) {
  const MaskNetModel& model = static_cast<RankTask*>(slices[0].task)->model();
  const int num_tasks = model.num_tasks();
  for (const TaskSlice& s : slices) {
    RankTask* task = static_cast<RankTask*>(s.task);
    for (int64_t begin = s.begin; begin < s.end; begin += model.max_batch_size()) {
      const BatchSlice part{&task->features(), begin, std::min(s.end, begin + model.max_batch_size())};
      const absl::Status status =
          model.Run(absl::MakeConstSpan(&part, 1), absl::MakeSpan(task->scores(begin), part.size() * num_tasks));
      if (status.code() == absl::StatusCode::kInvalidArgument) return status;  // the request's values
      if (!status.ok()) return absl::InternalError(absl::StrCat("scoring failed: ", status.message()));
    }
  }
  return absl::OkStatus();
}

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
    : repository_(repository), options_(options), queue_(options.queue, ScoreBatch) {}

RankerService::~RankerService() { Shutdown(); }

void RankerService::Shutdown() { queue_.Shutdown(); }

grpc::ServerUnaryReactor* RankerService::Rank(grpc::CallbackServerContext* context,
                                              const RankRequest* request, RankResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto servable = repository_->Find(request->model_name(), request->model_version());
  if (!servable.ok()) {
    reactor->Finish(ToGrpcStatus(servable.status()));
    return reactor;
  }
  const MaskNetModel& model = *(*servable)->model;
  auto features = ParseRankRequest(*request, model.spec().schema, options_.max_candidates);
  if (!features.ok()) {
    reactor->Finish(ToGrpcStatus(features.status()));
    return reactor;
  }
  response->set_model_name((*servable)->name);
  response->set_model_version((*servable)->version);
  for (const TaskSpec& t : model.spec().tasks) response->add_tasks(t.name);
  if (features->candidates.empty()) {
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  std::unique_ptr<BatchTask> task = std::make_unique<RankTask>(
      *std::move(servable), *std::move(features), context, request, response, reactor);
  if (auto s = queue_.Schedule(&task); !s.ok()) reactor->Finish(ToGrpcStatus(s));
  return reactor;
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
