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

ABSL_FLAG(int64_t, max_batch_size, masknet::MaskNetModel::Options().max_batch_size,
          "As masknet_server's --max_batch_size: the model must fit its workspace limit at this batch size.");
ABSL_FLAG(int64_t, max_workspace_bytes, masknet::MaskNetModel::Options().max_workspace_bytes,
          "As masknet_server's --max_workspace_bytes.");
ABSL_FLAG(masknet::Precision, precision, masknet::Precision::kF32, "As masknet_server's --precision: fp32, bf16 or int8.");

namespace masknet {
namespace {

int Main(const std::vector<char*>& dirs) {
  MaskNetModel::Options options;
  options.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.max_workspace_bytes = absl::GetFlag(FLAGS_max_workspace_bytes);
  options.precision = absl::GetFlag(FLAGS_precision);
  options.threads = 1;
  if (dirs.empty()) {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  if (absl::Status s = options.Validate(); !s.ok()) {
    std::fprintf(stderr, "masknet_check_model: invalid flags: --%s\n", std::string(s.message()).c_str());
    return 2;
  }
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
