#ifndef MASKNET_TESTS_SERVER_HARNESS_H_
#define MASKNET_TESTS_SERVER_HARNESS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/synchronization/notification.h"
#include "grpcpp/grpcpp.h"
#include "loader/model_repository.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "server/grpc_server.h"

namespace masknet::testing {

// A repository loaded from `root` (models built for `max_batch_size`) and a
// GrpcServer on a free loopback port, with a client channel to it.
class ServerHarness {
 public:
  explicit ServerHarness(const std::string& root, GrpcServer::Options options = {},
                         int64_t max_batch_size = 32);

  // A blocking call, with an optional deadline from now.
  grpc::Status Rank(const serving::v1::RankRequest& request, serving::v1::RankResponse* response,
                    absl::Duration timeout = absl::InfiniteDuration());

  GrpcServer& server() { return *server_; }
  ModelRepository& repository() { return *repository_; }
  serving::v1::Ranker::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

 private:
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<GrpcServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<serving::v1::Ranker::Stub> stub_;
};

// A Rank call in flight, started on a stub's async API.
class AsyncRank {
 public:
  AsyncRank(serving::v1::Ranker::Stub& stub, serving::v1::RankRequest request,
            absl::Duration timeout = absl::InfiniteDuration());
  void Cancel() { context_.TryCancel(); }
  bool done() const { return done_.HasBeenNotified(); }
  // Waits for the answer.
  const grpc::Status& Wait();
  const serving::v1::RankResponse& response() const { return response_; }

 private:
  grpc::ClientContext context_;
  serving::v1::RankRequest request_;
  serving::v1::RankResponse response_;
  grpc::Status status_;
  absl::Notification done_;
};

}  // namespace masknet::testing

#endif  // MASKNET_TESTS_SERVER_HARNESS_H_
