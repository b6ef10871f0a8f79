// masknet_client: prints a served model's input fields and sends it a sample
// Rank call with random (valid) features.
//
//   masknet_client --target=localhost:50051 [--model=NAME] [--candidates=5]
//                  [--tls_ca=ca.pem [--tls_cert=client.pem --tls_key=client.key]]

#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/grpcpp.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "tools/client/random_request.h"
#include "tools/client/tls_flags.h"

ABSL_FLAG(std::string, target, "localhost:50051", "Server address.");
ABSL_FLAG(std::string, model, "", "Model name; empty: the server's default model.");
ABSL_FLAG(int64_t, version, 0, "Model version; 0: the one labelled stable, else the newest.");
ABSL_FLAG(std::string, version_label, "", "A version by its label (the model's rollout.pbtxt); not with --version.");
ABSL_FLAG(int32_t, candidates, 5, "Candidates in the sample Rank call (0: only describe the model).");
ABSL_FLAG(uint32_t, seed, 1, "Seed for the random feature values.");
ABSL_FLAG(int32_t, timeout_ms, 10000, "Deadline of each call.");

namespace masknet {
namespace {

using serving::v1::FeatureField;

void PrintFields(const char* scope, const google::protobuf::RepeatedPtrField<FeatureField>& fields) {
  std::printf("  %s fields (values in this order):\n", scope);
  if (fields.empty()) std::printf("    (none)\n");
  for (const FeatureField& f : fields) {
    if (f.kind() == FeatureField::DENSE) {
      const std::string embedded =
          f.embedding_dim() != 0 ? absl::StrCat(", embedded in ", f.embedding_dim()) : std::string();
      std::printf("    %-32s dense        width %u%s%s\n", f.name().c_str(), f.width(),
                  f.accepts_non_finite() ? ", NaN/Inf -> 0" : "", embedded.c_str());
    } else {
      std::printf("    %-32s categorical  %lu buckets, dim %u, up to %u id(s)%s\n", f.name().c_str(),
                  static_cast<unsigned long>(f.num_buckets()), f.width(), f.max_ids(),
                  f.allow_empty() ? ", may be empty" : "");
    }
  }
}

int Main() {
  auto credentials = ChannelCredentialsFromFlags();
  if (!credentials.ok()) {
    std::fprintf(stderr, "masknet_client: %s\n", std::string(credentials.status().message()).c_str());
    return 2;
  }
  grpc::ChannelArguments args;
  AddTlsChannelArguments(args);
  auto channel = grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), *credentials, args);
  auto stub = serving::v1::Ranker::NewStub(channel);
  const auto deadline = [] {
    return std::chrono::system_clock::now() + std::chrono::milliseconds(absl::GetFlag(FLAGS_timeout_ms));
  };

  serving::v1::GetModelInfoRequest info_request;
  info_request.set_model_name(absl::GetFlag(FLAGS_model));
  info_request.set_model_version(absl::GetFlag(FLAGS_version));
  info_request.set_model_version_label(absl::GetFlag(FLAGS_version_label));
  serving::v1::ModelInfo info;
  grpc::ClientContext info_context;
  info_context.set_deadline(deadline());
  if (grpc::Status s = stub->GetModelInfo(&info_context, info_request, &info); !s.ok()) {
    std::fprintf(stderr, "GetModelInfo failed: code %d: %s\n", static_cast<int>(s.error_code()),
                 s.error_message().c_str());
    return 1;
  }
  std::printf("model %s version %ld: %s\n", info.model_name().c_str(), static_cast<long>(info.model_version()),
              info.description().c_str());
  std::printf("  %ld parameters, %.2f MFLOP per candidate\n", static_cast<long>(info.parameter_count()),
              info.flops_per_candidate() / 1e6);
  if (!info.precision().empty()) std::printf("  precision: %s\n", info.precision().c_str());
  if (!info.version_labels().empty()) {
    std::printf("  labels: %s\n", absl::StrJoin(info.version_labels(), ", ").c_str());
  }
  const std::map<std::string, std::string> metadata(info.metadata().begin(), info.metadata().end());
  for (const auto& [key, value] : metadata) std::printf("  %s: %s\n", key.c_str(), value.c_str());
  PrintFields("context", info.context_fields());
  PrintFields("candidate", info.candidate_fields());
  std::printf("  tasks:");
  for (const std::string& t : info.tasks()) std::printf(" %s", t.c_str());
  std::printf("\n");

  const int n = absl::GetFlag(FLAGS_candidates);
  if (n <= 0) return 0;
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  const serving::v1::RankRequest request = RandomRankRequest(info, n, rng);
  serving::v1::RankResponse response;
  grpc::ClientContext context;
  context.set_deadline(deadline());
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = stub->Rank(&context, request, &response);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!status.ok()) {
    std::fprintf(stderr, "Rank failed: code %d: %s\n", static_cast<int>(status.error_code()),
                 status.error_message().c_str());
    return 1;
  }
  std::printf("\nRank: %d random candidates scored by %s version %ld in %.2f ms\n", n,
              response.model_name().c_str(), static_cast<long>(response.model_version()), ms);
  std::printf("  %10s", "candidate");
  for (const std::string& t : response.tasks()) std::printf("  %10s", t.c_str());
  std::printf("\n");
  for (const auto& c : response.candidates()) {
    std::printf("  %10ld", static_cast<long>(c.id()));
    for (float p : c.scores()) std::printf("  %10.6f", p);
    std::printf("\n");
  }
  return 0;
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Prints a served model's fields and sends it a sample Rank call.\n\n"
      "  masknet_client --target=HOST:PORT [--model=NAME] [--candidates=N]");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "masknet_client.cc") || absl::EndsWith(file, "tls_flags.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  return masknet::Main();
}
