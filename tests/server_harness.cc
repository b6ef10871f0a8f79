#include "tests/server_harness.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace masknet::testing {

ServerHarness::ServerHarness(const std::string& root, GrpcServer::Options options, int64_t max_batch_size) {
  std::vector<std::string> warnings;
  ModelRepository::Options repo_options;
  repo_options.root = root;
  repo_options.model.max_batch_size = max_batch_size;
  repo_options.model.threads = 1;
  auto repo = ModelRepository::Load(repo_options, &warnings);
  EXPECT_TRUE(repo.ok()) << repo.status();
  repository_ = *std::move(repo);
  options.address = "127.0.0.1:0";
  auto server = GrpcServer::Start(repository_.get(), options);
  EXPECT_TRUE(server.ok()) << server.status();
  server_ = *std::move(server);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                       grpc::InsecureChannelCredentials(), args);
  stub_ = serving::v1::Ranker::NewStub(channel_);
}

grpc::Status ServerHarness::Rank(const serving::v1::RankRequest& request, serving::v1::RankResponse* response,
                                 absl::Duration timeout) {
  grpc::ClientContext context;
  if (timeout != absl::InfiniteDuration()) context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return stub_->Rank(&context, request, response);
}

AsyncRank::AsyncRank(serving::v1::Ranker::Stub& stub, serving::v1::RankRequest request, absl::Duration timeout)
    : request_(std::move(request)) {
  if (timeout != absl::InfiniteDuration()) context_.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  stub.async()->Rank(&context_, &request_, &response_, [this](grpc::Status status) {
    status_ = std::move(status);
    done_.Notify();
  });
}

const grpc::Status& AsyncRank::Wait() {
  done_.WaitForNotification();
  return status_;
}

}  // namespace masknet::testing
