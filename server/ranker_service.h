#ifndef MASKNET_SERVER_RANKER_SERVICE_H_
#define MASKNET_SERVER_RANKER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "batching/batch_scheduler.h"
#include "grpcpp/grpcpp.h"
#include "loader/model_repository.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "server/call_recorder.h"
#include "server/metrics.h"
#include "server/rank_call.h"

namespace masknet {

// The masknet.serving.v1.Ranker service: resolves the model, validates the
// request against its schema on the gRPC thread that received it, and
// queues the candidates on the model version's BatchQueue. Worker threads
// score the batches and answer the calls; no gRPC thread waits on a model.
// A call that is cancelled, or whose deadline passes, leaves its queue at
// once and is not scored further.
class RankerService final : public serving::v1::Ranker::CallbackService {
 public:
  struct Options {
    // Most candidates in one Rank call.
    int64_t max_candidates = 8192;
    // Rank calls the service holds at once, from their arrival to their
    // answer, across every model; more are refused with RESOURCE_EXHAUSTED
    // at once. Bounds what a flood of calls can hold beyond the queues'
    // bytes: each call keeps gRPC's state and its request message.
    int64_t max_calls_in_flight = 20000;
    // The scoring workers, shared by every model version.
    BatchScheduler::Options scheduler;
    // Each model version's queue. Its max_batch_size is taken from the
    // model (MaskNetModel::max_batch_size), which the repository built for
    // the server's --max_batch_size.
    BatchScheduler::QueueOptions queue;
    // Shadow scoring (a model's rollout.pbtxt sets its shadow_fraction):
    // most candidates of shadow calls queued for one canary version; a
    // shadow call beyond it is dropped (and counted).
    int64_t shadow_max_queued_candidates = 8192;
    // Most candidates in one shadow batch (and at most the canary's
    // max_batch_size). Without shadow workers: how long a caller's batch
    // may wait behind a shadow batch that started while a worker was idle.
    int64_t shadow_max_batch_size = 32;
    // How long a shadow call may wait for a free worker before it is
    // dropped (and counted). Primary calls always go first.
    absl::Duration shadow_max_delay = absl::Seconds(1);
    // Threads that run shadow batches alone (the scheduler's background
    // workers, under SCHED_IDLE), so that shadow scoring takes only the CPU
    // time the callers' threads leave, even on cores they share. 0: the
    // scoring workers run shadow batches while another worker is idle.
    int shadow_workers = 1;
    // The most CPU time shadow batches take, as a share of the scoring
    // workers' (the scheduler's background_cpu_share): bounds what shadow
    // scoring costs where a lower priority does not (the other hardware
    // thread of a core, the caches and memory bandwidth cores share). In
    // (0, 1]; 1: no bound.
    double shadow_cpu_share = 0.1;
    static constexpr int kMaxShadowWorkers = BatchScheduler::kMaxWorkers;
    static constexpr absl::Duration kMaxShadowDelay = absl::Minutes(1);
    // Where a sample of the calls answered OK is captured; null: nowhere.
    // Must outlive the service.
    CallCapture* capture = nullptr;
    // With metrics: also the histograms of the scores served and the
    // counters of input problems (per field), updated once per batch.
    bool data_metrics = true;
    // Where calls, batches and queues are counted; null: nowhere. Must
    // outlive the service.
    ServerMetrics* metrics = nullptr;

    // INVALID_ARGUMENT naming the first option out of its bounds (the
    // scheduler's and queue's included).
    absl::Status Validate() const;
  };

  // `repository` must outlive the service. REQUIRES: options.Validate().ok().
  RankerService(const ModelRepository* repository, const Options& options);
  ~RankerService() override;

  grpc::ServerUnaryReactor* Rank(grpc::CallbackServerContext* context,
                                 const serving::v1::RankRequest* request,
                                 serving::v1::RankResponse* response) override;

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const serving::v1::GetModelInfoRequest* request,
                                         serving::v1::ModelInfo* response) override;

  // Sets the calls-in-flight gauge and the queued-candidates gauge of every
  // model version's queue (for a metrics scrape).
  void RefreshGauges() ABSL_LOCKS_EXCLUDED(queues_mu_);

  // The state of a model version's queue; nullopt before its first call.
  std::optional<BatchQueueStats> QueueStats(const std::string& model_name, int64_t version)
      ABSL_LOCKS_EXCLUDED(queues_mu_);

  // Rank calls received and not yet done.
  int64_t calls_in_flight() const { return calls_in_flight_.load(std::memory_order_relaxed); }

  // Finishes every accepted call and stops the workers. Call after the gRPC
  // server stopped accepting calls. Idempotent.
  void Shutdown();

 private:
  // A served model version's queue and metrics.
  // Shared: a call holds its version's queue (to cancel itself) until it
  // ends, after the version may have been unloaded.
  struct VersionState {
    std::shared_ptr<BatchQueue> queue;
    std::shared_ptr<VersionMetrics> metrics;  // null without ServerMetrics
    // Where its calls are shadowed, when it is a model's stable version
    // with a canary; made on first use, dropped when the repository changes.
    std::shared_ptr<const ShadowRoute> shadow;
  };

  // The queue and metrics of a model version, made on first use. Closes the
  // queues of versions the repository no longer serves (their calls still
  // finish).
  VersionState StateFor(const std::shared_ptr<const Servable>& servable) ABSL_LOCKS_EXCLUDED(queues_mu_);

  // Samples the call for shadow scoring when `servable` is its model's
  // stable version and the model's rollout asks for it.
  void MaybeShadow(const std::shared_ptr<const Servable>& servable, const serving::v1::RankRequest& request,
                   RankCall* call) ABSL_LOCKS_EXCLUDED(queues_mu_);
  // The shadow route from `stable` to `canary`, made on first use.
  std::shared_ptr<const ShadowRoute> RouteFor(const std::shared_ptr<const Servable>& stable,
                                              const std::shared_ptr<const Servable>& canary)
      ABSL_LOCKS_EXCLUDED(queues_mu_);

  const ModelRepository* repository_;
  const Options options_;
  std::unique_ptr<CallRecorder> recorder_;
  std::atomic<int64_t> calls_in_flight_{0};
  // Scratch state of each scheduler worker; only that worker touches it.
  // Destroyed last: the workers stop before.
  std::vector<std::unique_ptr<ScoringWorker>> workers_;
  BatchScheduler scheduler_;
  absl::Mutex queues_mu_;
  absl::flat_hash_map<const Servable*, VersionState> versions_ ABSL_GUARDED_BY(queues_mu_);
  // The repository generation the queues were last checked against; -1
  // when a queue was made for a version already unloaded.
  int64_t checked_generation_ ABSL_GUARDED_BY(queues_mu_) = 0;
};

}  // namespace masknet

#endif  // MASKNET_SERVER_RANKER_SERVICE_H_
