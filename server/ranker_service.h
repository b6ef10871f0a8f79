#ifndef MASKNET_SERVER_RANKER_SERVICE_H_
#define MASKNET_SERVER_RANKER_SERVICE_H_

#include <cstdint>
#include <memory>

#include "grpcpp/grpcpp.h"
#include "loader/model_repository.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "server/batch_queue.h"
#include "server/defaults.h"

namespace masknet {

// The masknet.serving.v1.Ranker service: resolves the model, validates the
// request against its schema, and queues the candidates for scoring. Calls
// never block a gRPC thread on the model.
class RankerService final : public serving::v1::Ranker::CallbackService {
 public:
  struct Options {
    int64_t max_candidates = defaults::kMaxCandidates;
    BatchQueue::Options queue;
  };

  // `repository` must outlive the service.
  RankerService(const ModelRepository* repository, const Options& options);
  ~RankerService() override;

  grpc::ServerUnaryReactor* Rank(grpc::CallbackServerContext* context,
                                 const serving::v1::RankRequest* request,
                                 serving::v1::RankResponse* response) override;

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const serving::v1::GetModelInfoRequest* request,
                                         serving::v1::ModelInfo* response) override;

  // Finishes every accepted call and stops the scoring thread. Call after the
  // gRPC server stopped accepting calls.
  void Shutdown();

 private:
  const ModelRepository* repository_;
  const Options options_;
  BatchQueue queue_;
};

// Describes a servable as GetModelInfo answers.
serving::v1::ModelInfo DescribeModel(const Servable& servable);

// absl::Status -> grpc::Status; the codes share their numbering.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace masknet

#endif  // MASKNET_SERVER_RANKER_SERVICE_H_
