#ifndef MASKNET_SERVER_GRPC_SERVER_H_
#define MASKNET_SERVER_GRPC_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "loader/model_repository.h"
#include "server/ranker_service.h"

namespace masknet {

// The gRPC server: the Ranker service, grpc.health.v1.Health and server
// reflection on one port. Owns the service; borrows the repository.
class GrpcServer {
 public:
  struct Options {
    // host:port; port 0 picks a free port (see port()).
    std::string address = "0.0.0.0:50051";
    // Largest request message. gRPC's own 4 MiB is too small: 500
    // twitter-recap candidates are ~4 MB.
    int64_t max_request_bytes = int64_t{64} << 20;
    // Calls one client connection may have open at once (HTTP/2
    // SETTINGS_MAX_CONCURRENT_STREAMS): a client with more waits on its own
    // side, where its calls cost the server nothing.
    // gRPC's own default is unlimited.
    int max_concurrent_streams = 1000;
    // TLS or mTLS (see MakeServerCredentials); null: plaintext.
    std::shared_ptr<grpc::ServerCredentials> credentials;
    RankerService::Options service;

    // INVALID_ARGUMENT naming the first option out of its bounds (the
    // service's included).
    absl::Status Validate() const;
  };

  // Starts serving; health answers SERVING if the repository is ready (see
  // SetServing for later changes). `repository` must outlive the server.
  // Errors: INVALID_ARGUMENT when options.Validate() fails; UNAVAILABLE when
  // the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const ModelRepository* repository,
                                                              const Options& options);
  ~GrpcServer();

  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // The bound port.
  int port() const { return port_; }

  RankerService& service() { return *service_; }

  // Sets what grpc.health.v1.Health answers (SERVING or NOT_SERVING) for the
  // server and the Ranker service. Ignored once Shutdown began. Thread-safe.
  void SetServing(bool serving) ABSL_LOCKS_EXCLUDED(mu_);

  // Graceful stop: health turns NOT_SERVING, new calls are refused, calls in
  // flight finish (those still running after `grace` are cancelled), then
  // the scoring workers stop. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  GrpcServer() = default;

  std::unique_ptr<RankerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  mutable absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace masknet

#endif  // MASKNET_SERVER_GRPC_SERVER_H_
