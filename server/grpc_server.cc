#include "server/grpc_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace masknet {

absl::Status GrpcServer::Options::Validate() const {
  constexpr int64_t kMaxMessageBytes = (int64_t{1} << 31) - 1;  // gRPC's limits are ints
  if (max_request_bytes < 1024 || max_request_bytes > kMaxMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_request_bytes must be in [1024, ", kMaxMessageBytes, "], got ", max_request_bytes));
  }
  if (max_concurrent_streams < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_concurrent_streams must be at least 1, got ", max_concurrent_streams));
  }
  if (absl::Status s = service.Validate(); !s.ok()) return s;
  if (service.queue.max_queued_bytes < max_request_bytes) {
    return absl::InvalidArgumentError(
        "max_queued_bytes must be at least max_request_bytes, or a full-size request could never be accepted");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(const ModelRepository* repository,
                                                                    const Options& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<GrpcServer> server(new GrpcServer());
  server->service_ = std::make_unique<RankerService>(repository, options.service);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address,
                           options.credentials != nullptr ? options.credentials : grpc::InsecureServerCredentials(),
                           &server->port_);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_request_bytes));
  // Responses are far smaller than requests (a few floats per candidate).
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_request_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  builder.RegisterService(server->service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address));
  }
  server->SetServing(repository->ready());
  return server;
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus(serving::v1::Ranker::service_full_name(), serving);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || server_ == nullptr) return;
    shut_down_ = true;
  }
  server_->GetHealthCheckService()->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  service_->Shutdown();
}

}  // namespace masknet
