// masknet_check_model: whether masknet_server would load model versions,
// decided by the server's own loader (config, weights, the model built for
// the given limits, a warm-up run), so that there is one definition of a
// valid model. The Python exporter runs it on every version it writes.
//
//   masknet_check_model [--max_batch_size=256] [--max_workspace_bytes=...]
//                       [--precision=fp32] VERSION_DIR...
//
// Prints "<dir>: ok (...)" or the error the server would log, per version.
// Exit status: 0 when every version loads, 1 when one does not, 2 for bad
// flags.

#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "loader/model_repository.h"
#include "model/limits.h"

ABSL_FLAG(int64_t, max_batch_size, masknet::limits::kDefaultMaxBatchSize,
          "As masknet_server's --max_batch_size: the model must fit its workspace limit at this batch size.");
ABSL_FLAG(int64_t, max_workspace_bytes, masknet::limits::kDefaultMaxWorkspaceBytes,
          "As masknet_server's --max_workspace_bytes.");
ABSL_FLAG(std::string, precision, "fp32", "As masknet_server's --precision: fp32 or bf16.");

namespace masknet {
namespace {

int Main(const std::vector<char*>& dirs) {
  const int64_t batch = absl::GetFlag(FLAGS_max_batch_size);
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (dirs.empty() || batch < 1 || batch > limits::kMaxBatchSize || absl::GetFlag(FLAGS_max_workspace_bytes) < 1 ||
      (precision != "fp32" && precision != "bf16")) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  MaskNetModel::Options options;
  options.max_batch_size = batch;
  options.max_workspace_bytes = absl::GetFlag(FLAGS_max_workspace_bytes);
  options.precision = precision == "bf16" ? Precision::kBf16 : Precision::kF32;
  options.threads = 1;
  int status = 0;
  for (const char* dir : dirs) {
    auto servable = LoadServable("checked", 1, dir, options);
    if (!servable.ok()) {
      std::printf("%s\n", std::string(servable.status().message()).c_str());
      status = 1;
      continue;
    }
    const MaskNetModel& model = *(*servable)->model;
    std::printf("%s: ok (%lld parameters, %lld FLOPs per candidate, %d task(s))\n", dir,
                static_cast<long long>(model.spec().ParameterCount()),
                static_cast<long long>(model.spec().FlopsPerCandidate()), model.num_tasks());
  }
  return status;
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Checks that masknet_server would load model versions.\n"
      "usage: masknet_check_model [--max_batch_size=N] [--max_workspace_bytes=N] [--precision=fp32|bf16] "
      "VERSION_DIR...");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) { return absl::EndsWith(file, "masknet_check_model.cc"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  return masknet::Main(std::vector<char*>(args.begin() + 1, args.end()));
}
