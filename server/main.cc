// masknet_server: serves MaskNet models over gRPC.
//
//   masknet_server --model_root=models
//
// Every limit is a flag (server/flags.cc); --help lists them with their
// defaults. This file turns the flags into Server::Options, starts the
// server and stops it on SIGTERM or SIGINT.

#include <pthread.h>
#include <signal.h>

#include <string>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/flags.h"
#include "server/logging.h"
#include "server/server.h"

namespace masknet {
namespace {

// Exit codes: 0 after a signal's graceful stop; 1 when the server cannot
// start (a port, the models); 2 for invalid flags or TLS files.
int Main() {
  // absl checks every Mutex acquisition against a lock graph unless told
  // not to; the scheduler's lock is taken on every call.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  SetLogFormat(LogFormatFromFlags());
  // Block the stop signals in every thread (gRPC's and oneDNN's inherit the
  // mask); this thread receives them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A file grown past RLIMIT_FSIZE (a capture file) fails its write rather
  // than ending the process.
  signal(SIGXFSZ, SIG_IGN);

  auto server = Server::Create(ServerOptionsFromFlags());
  if (!server.ok()) {
    Log(Severity::kError, absl::StrCat("invalid flags: ", NameFlags(server.status().message())));
    return 2;
  }
  if (absl::Status started = (*server)->Start(); !started.ok()) {
    Log(Severity::kError, started.ToString());
    return 1;
  }
  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  (*server)->Stop(signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  return 0;
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves MaskNet ranking models over gRPC.\n\n  masknet_server --model_root=DIR [flags]");
  // --help lists the server's flags (absl would list those of files named
  // after the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) { return absl::EndsWith(file, "server/flags.cc"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  return masknet::Main();
}
