#ifndef MASKNET_SERVER_RANK_CALL_H_
#define MASKNET_SERVER_RANK_CALL_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "batching/batch_scheduler.h"
#include "grpcpp/grpcpp.h"
#include "loader/model_repository.h"
#include "masknet/serving/v1/ranker.pb.h"
#include "model/masknet_model.h"
#include "server/call_recorder.h"
#include "server/metrics.h"

namespace masknet {

// One Rank call from its validation to its answer. gRPC owns it as the
// call's reactor (it is deleted in OnDone); while queued, it is also the
// scheduler's task, and ScoreBatch writes its scores.
class RankCall final : public grpc::ServerUnaryReactor, public BatchTask {
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

  // Queues the call; answers it at once if the queue refuses. Once queued,
  // a worker may answer the call before Schedule returns, so nothing here
  // touches the call after the queue took it.
  void Schedule(std::shared_ptr<BatchQueue> queue);

  // Finishes the call with `status` and records it. Never throws: without
  // Finish the call would hang.
  void Answer(const absl::Status& status);

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
  // Builds the response from the scores (when `status` is OK) and answers.
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
};

// Scratch state of one scheduler worker; only that worker touches it.
struct ScoringWorker {
  Workspace workspace;
  std::vector<BatchSlice> slices;
  std::vector<float> scores;
};

// Scores a batch of slices of RankCalls with `model`, on `worker`'s scratch
// state, counting into `metrics` (if not null), and writes each call's
// scores. A value that overflows in one call's features fails that call
// alone (its slice's status); other errors fail the batch (INTERNAL).
absl::Status ScoreBatch(const MaskNetModel& model, VersionMetrics* metrics, ScoringWorker& worker,
                        absl::Span<TaskSlice> batch);

}  // namespace masknet

#endif  // MASKNET_SERVER_RANK_CALL_H_
