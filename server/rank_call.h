#ifndef MASKNET_SERVER_RANK_CALL_H_
#define MASKNET_SERVER_RANK_CALL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "batching/batch_scheduler.h"
#include "grpcpp/grpcpp.h"
#include "loader/model_repository.h"
#include "masknet/serving/v1/ranker.pb.h"
#include "model/masknet_model.h"
#include "server/call_capture.h"
#include "server/call_recorder.h"
#include "server/metrics.h"

namespace masknet {

// A task whose candidates ScoreBatch scores: a call's features in, its
// scores out.
class ScoredTask : public BatchTask {
 public:
  virtual const RequestFeatures& features() const = 0;
  // Where candidate `candidate`'s scores go (num_tasks of them).
  virtual float* scores(int64_t candidate) = 0;
  // When the queue accepted the task.
  virtual absl::Time accepted() const = 0;
};

// A request's feature values copied out of it, for scoring after the call
// is answered (and its request freed). Moving it keeps `view` valid.
struct CopiedFeatures {
  std::vector<float> dense;
  std::vector<int64_t> ids;
  std::vector<uint32_t> id_counts;
  RequestFeatures view;  // spans into the vectors above
  int64_t bytes() const;
};
CopiedFeatures CopyFeatures(const RequestFeatures& from);

// Where a sample of a stable version's calls is scored again, in the
// background, by the model's canary version: the canary, its background
// queue, and the pair's metrics. Shared by the calls sampled.
struct ShadowRoute {
  std::shared_ptr<const Servable> stable;
  std::shared_ptr<const Servable> canary;
  std::shared_ptr<BatchQueue> queue;
  std::shared_ptr<ShadowMetrics> metrics;  // null without ServerMetrics
  // How long a shadow call may wait for a worker before it is dropped.
  absl::Duration max_delay;
  // Whether the canary reads requests as the stable version does (then a
  // call's parsed features serve both).
  bool same_schema = false;
  // Whether the canary's first failure to read or score a call was logged.
  mutable std::atomic<bool> failure_logged{false};

  void Count(ShadowMetrics::Outcome outcome) const {
    if (metrics != nullptr) metrics->Count(outcome);
  }
  // Counts a failure and logs the first one.
  void Fail(const absl::Status& status) const;
};

// One Rank call from its validation to its answer. gRPC owns it as the
// call's reactor (it is deleted in OnDone); while queued, it is also the
// scheduler's task, and ScoreBatch writes its scores.
class RankCall final : public grpc::ServerUnaryReactor, public ScoredTask {
 public:
  // Counts itself in `in_flight` until it is done. `recorder` and
  // `in_flight` must outlive the call.
  RankCall(grpc::CallbackServerContext* context, const serving::v1::RankRequest* request,
           serving::v1::RankResponse* response, CallRecorder* recorder, std::atomic<int64_t>* in_flight);
  ~RankCall() override;

  // The version that answers the call, and its metrics (null: none).
  void Resolve(std::shared_ptr<const Servable> servable, std::shared_ptr<VersionMetrics> metrics);

  // Takes the validated features of the request. After Resolve.
  void Prepare(RequestFeatures features);

  // Samples the call for shadow scoring on `route`'s canary, from
  // `features` (read with the canary's schema; an error when the canary
  // cannot read the request). After Prepare. Once the call is answered OK,
  // a ShadowCall scores them and compares (or the error counts as failed).
  void SetShadow(std::shared_ptr<const ShadowRoute> route, absl::StatusOr<CopiedFeatures> features);
  // Samples the call for shadow scoring on `route`'s canary, which cannot
  // take it: once the call is answered OK, its shadow counts as dropped.
  void DropShadow(std::shared_ptr<const ShadowRoute> route) {
    shadow_ = std::move(route);
    shadow_dropped_ = true;
  }

  // Captures the call, once it is answered OK, to `capture` (which must
  // outlive the call).
  void SetCapture(CallCapture* capture) { capture_ = capture; }

  // Queues the call; answers it at once if the queue refuses. Once queued,
  // a worker may answer the call before Schedule returns, so nothing here
  // touches the call after the queue took it.
  void Schedule(std::shared_ptr<BatchQueue> queue);

  // Finishes the call with `status` and records it. Never throws: without
  // Finish the call would hang.
  void Answer(const absl::Status& status);

  // Whether the call was answered or queued (then the queue answers it).
  bool handed_off() const { return handed_off_; }

  // ScoredTask.
  absl::Time accepted() const override { return accepted_; }
  const RequestFeatures& features() const override { return features_; }
  float* scores(int64_t candidate) override { return scores_.data() + candidate * servable_->model->num_tasks(); }

  // BatchTask.
  int64_t size() const override { return static_cast<int64_t>(features_.candidates.size()); }
  int64_t bytes() const override { return bytes_; }
  absl::Time deadline() const override { return deadline_; }
  // Builds the response from the scores (when `status` is OK) and answers;
  // then starts the call's shadow scoring, if it was sampled.
  void Done(absl::Status status) override;

  // ServerUnaryReactor. gRPC calls OnCancel when the client cancels or the
  // deadline passes, and OnDone only after OnCancel returned.
  void OnCancel() override;
  void OnDone() override { delete this; }

 private:
  const serving::v1::RankRequest* request_;
  serving::v1::RankResponse* response_;
  CallRecorder* const recorder_;
  std::atomic<int64_t>* const in_flight_;
  const absl::Time arrived_;
  const absl::Time deadline_;
  absl::Time accepted_;
  std::shared_ptr<const Servable> servable_;
  std::shared_ptr<VersionMetrics> metrics_;
  RequestFeatures features_;
  int64_t bytes_ = 0;
  std::vector<float> scores_;
  std::shared_ptr<BatchQueue> queue_;
  bool handed_off_ = false;
  std::shared_ptr<const ShadowRoute> shadow_;  // null: not sampled
  CopiedFeatures shadow_features_;
  absl::Status shadow_error_;  // the canary cannot read the request
  bool shadow_dropped_ = false;  // its shadow queue refused it when sampled
  CallCapture* capture_ = nullptr;  // null: not captured
};

// A Rank call's shadow: its candidates scored again by the canary, after
// the call was answered by the stable version; the difference goes to the
// route's metrics, never to a caller. Owns itself: it is deleted when done.
class ShadowCall final : public ScoredTask {
 public:
  // Queues a shadow of a call whose candidates `features` holds and that
  // the stable version answered with `stable_scores` (its tasks per
  // candidate). Counted dropped when the queue refuses it.
  static void Start(std::shared_ptr<const ShadowRoute> route, CopiedFeatures features,
                    std::vector<float> stable_scores);

  // ScoredTask.
  const RequestFeatures& features() const override { return features_.view; }
  float* scores(int64_t candidate) override { return scores_.data() + candidate * route_->canary->model->num_tasks(); }
  absl::Time accepted() const override { return accepted_; }
  int64_t size() const override { return static_cast<int64_t>(features_.view.candidates.size()); }
  int64_t bytes() const override;
  absl::Time deadline() const override { return accepted_ + route_->max_delay; }
  // Compares and counts the scores (when `status` is OK), then deletes
  // itself.
  void Done(absl::Status status) override;

 private:
  ShadowCall(std::shared_ptr<const ShadowRoute> route, CopiedFeatures features, std::vector<float> stable_scores);

  const std::shared_ptr<const ShadowRoute> route_;
  const CopiedFeatures features_;
  const std::vector<float> stable_scores_;
  std::vector<float> scores_;
  const absl::Time accepted_;
};

// Scratch state of one scheduler worker; only that worker touches it.
struct ScoringWorker {
  Workspace workspace;
  std::vector<BatchSlice> slices;
  std::vector<float> scores;
  InputCounts input_counts;
};

// Scores a batch of slices of ScoredTasks (RankCalls, ShadowCalls) with `model`, on `worker`'s scratch
// state, counting into `metrics` (if not null), and writes each call's
// scores. A value that overflows in one call's features fails that call
// alone (its slice's status); other errors fail the batch (INTERNAL).
absl::Status ScoreBatch(const MaskNetModel& model, VersionMetrics* metrics, ScoringWorker& worker,
                        absl::Span<TaskSlice> batch);

}  // namespace masknet

#endif  // MASKNET_SERVER_RANK_CALL_H_
