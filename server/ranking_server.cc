#include "server/ranking_server.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace masknet {

absl::StatusOr<std::unique_ptr<RankingServer>> RankingServer::Start(const ModelRepository* repository,
                                                                    const Options& options) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  std::unique_ptr<RankingServer> server(new RankingServer());
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

RankingServer::~RankingServer() { Shutdown(absl::ZeroDuration()); }

void RankingServer::SetServing(bool serving) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus(serving::v1::Ranker::service_full_name(), serving);
}

void RankingServer::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_ || server_ == nullptr) return;
    shut_down_ = true;
  }
  server_->GetHealthCheckService()->Shutdown();
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  service_->Shutdown();
}

void RankingServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace masknet
