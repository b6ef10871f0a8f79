// masknet_server: serves MaskNet models over gRPC.
//
//   masknet_server --model_root=models
//
// Every limit is a flag here; --help lists them with their defaults.

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "batching/batch_scheduler.h"
#include "loader/model_repository.h"
#include "model/limits.h"
#include "server/cpu_budget.h"
#include "server/defaults.h"
#include "server/http_endpoint.h"
#include "server/metrics.h"
#include "server/logging.h"
#include "server/memory_release.h"
#include "server/ranking_server.h"
#include "server/tls.h"

ABSL_FLAG(std::string, model_root, "",
          "Directory holding <model_name>/<version>/{model_config.pbtxt,weights.safetensors}. "
          "Required.");
ABSL_FLAG(std::string, default_model, "",
          "Model answering requests with an empty model_name. Default: the only model, when "
          "there is exactly one.");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (gRPC and HTTP).");
ABSL_FLAG(int32_t, metrics_port, masknet::defaults::kMetricsPort,
          "HTTP port for /metrics (Prometheus), /healthz and /readyz; 0 turns it off.");
ABSL_FLAG(int32_t, port, masknet::defaults::kPort,
          "gRPC port (Ranker, grpc.health.v1.Health, reflection); 0 picks a free one.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key). Empty: plaintext. Read again "
          "every --tls_reload_interval, so rotated certificates need no restart. The HTTP port stays "
          "plaintext, for the cluster's scraper and probes.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: require mTLS, refusing clients without a certificate signed by one "
          "of them. Needs --tls_cert and --tls_key.");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Minutes(1),
          "How often the TLS files are read again (at least 1s).");
ABSL_FLAG(int64_t, max_candidates, masknet::defaults::kMaxCandidates,
          "Most candidates in one Rank request; more is INVALID_ARGUMENT.");
ABSL_FLAG(int64_t, max_request_bytes, masknet::defaults::kMaxRequestBytes,
          "Largest request message accepted, in bytes (gRPC's own default of 4 MiB is too "
          "small: 500 twitter-recap candidates are ~4 MB of floats).");
ABSL_FLAG(int64_t, max_batch_size, masknet::defaults::kMaxBatchSize,
          "Most candidates in one batch (one forward pass). A batch merges calls to the same model "
          "version; a larger call is split over several batches, which run on several workers at "
          "once.");
ABSL_FLAG(absl::Duration, batch_timeout, masknet::BatchScheduler::QueueOptions().batch_timeout,
          "How long a batch that is not full waits for more calls before it runs. Under load "
          "batches fill while the workers are busy, so waiting only adds latency (README, "
          "\"Batching\").");
ABSL_FLAG(bool, batch_merging, true,
          "Whether one batch may hold several calls. Off, a batch holds part of one call only "
          "(for comparison).");
ABSL_FLAG(int32_t, num_workers, 0,
          "Scoring threads, shared by every model. 0: the CPUs this process may use (affinity and "
          "cgroup quota) divided by --intra_op_threads.");
ABSL_FLAG(std::string, precision, "fp32",
          "Matmul arithmetic of every model: fp32, or bf16 (weights and matmul inputs rounded to "
          "bfloat16, float32 accumulation; about twice the speed on CPUs with AVX512_BF16, which "
          "others fall back from to fp32 with a warning).");
ABSL_FLAG(int32_t, intra_op_threads, masknet::defaults::kIntraOpThreads,
          "OpenMP threads each worker's forward pass uses. 1 (several single-threaded workers) "
          "gives the most candidates per second; more lowers a lone large batch's latency. Set "
          "OMP_WAIT_POLICY=PASSIVE with more than 1, or idle OpenMP threads spin.");
ABSL_FLAG(int64_t, max_queued_candidates, masknet::BatchScheduler::QueueOptions().max_queued_candidates,
          "Per model version: most candidates accepted and not yet in a batch; beyond it Rank "
          "answers RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_queued_bytes, masknet::BatchScheduler::QueueOptions().max_queued_bytes,
          "Per model version: most bytes of feature values held by queued calls; beyond it Rank "
          "answers RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_calls_in_flight, masknet::defaults::kMaxCallsInFlight,
          "Rank calls held at once across every model, from arrival to answer; beyond it Rank "
          "answers RESOURCE_EXHAUSTED at once. Bounds the memory a flood of calls can hold "
          "(each holds gRPC's call state and its request).");
ABSL_FLAG(int32_t, max_concurrent_streams, masknet::defaults::kMaxConcurrentStreams,
          "Calls one client connection may have open at once (HTTP/2 "
          "SETTINGS_MAX_CONCURRENT_STREAMS); a client's further calls wait on its side. gRPC's "
          "own default is unlimited, which lets one client's flood fill the server's memory.");
ABSL_FLAG(int64_t, max_idle_heap_bytes, masknet::defaults::kMaxIdleHeapBytes,
          "Free heap memory the server keeps once a burst of allocations (a flood of calls) has "
          "passed; beyond it the free pages go back to the system within a second. 0: keep all.");
ABSL_FLAG(bool, admit_by_deadline, true,
          "Refuse at once (RESOURCE_EXHAUSTED) a call that, by the measured cost of recent "
          "batches, would miss its deadline behind the work queued ahead of it.");
ABSL_FLAG(double, deadline_headroom, masknet::BatchScheduler::QueueOptions().deadline_headroom,
          "With --admit_by_deadline: the share of a call's time to its deadline kept free for "
          "estimation error; a call is admitted if its estimated finish falls within the rest.");
ABSL_FLAG(int64_t, max_workspace_bytes, masknet::defaults::kMaxWorkspaceBytes,
          "Most scratch memory one model may need for a batch of --max_batch_size candidates; "
          "a model needing more fails to load.");
ABSL_FLAG(absl::Duration, model_poll_interval, masknet::defaults::kModelPollInterval,
          "How often the model root is scanned for new and removed versions; a new version is "
          "loaded, checked and warmed up beside the others, then swapped in. 0: read once at "
          "start (the root must then hold a model).");
ABSL_FLAG(int32_t, keep_versions, masknet::ModelRepository::kDefaultKeepVersions,
          "Newest loadable versions of each model kept loaded (callers may pin any of them with "
          "model_version).");
ABSL_FLAG(bool, fail_on_model_error, false,
          "At start-up, a model whose versions all fail to load stops the server (exit 1). "
          "Default: it is logged (load_failed) and the other models serve; it is retried when its "
          "files change.");
ABSL_FLAG(std::string, log_format, "text", "Event log on stderr: text or json (one object per line).");
ABSL_FLAG(absl::Duration, drain_delay, absl::ZeroDuration(),
          "On SIGTERM or SIGINT: how long to keep serving while health reports NOT_SERVING, so "
          "that load balancers and health-checking clients stop sending first (Kubernetes: a few "
          "seconds, within terminationGracePeriodSeconds).");
ABSL_FLAG(absl::Duration, shutdown_grace_period, absl::Seconds(masknet::defaults::kShutdownGraceSeconds),
          "On SIGTERM or SIGINT: how long calls in flight may take to finish before they are "
          "cancelled.");

namespace masknet {
namespace {

// Logs what happened to a model version.
void LogEvent(const RepositoryEvent& e, const ModelRepository* repository) {
  const std::string version = absl::StrCat(e.version);
  switch (e.kind) {
    case RepositoryEvent::Kind::kLoaded: {
      std::string details;
      if (repository != nullptr) {
        if (auto servable = repository->Find(e.name, e.version); servable.ok()) {
          const MaskNetModel& model = *(*servable)->model;
          if (!model.precision_note().empty()) {
            Log(Severity::kWarning,
                absl::StrCat("model '", e.name, "' version ", e.version, ": ", model.precision_note()));
          }
          std::vector<std::string> kernels;
          for (const auto& [impl, count] : model.MatmulImplementations()) kernels.push_back(absl::StrCat(impl, " x", count));
          details = absl::StrCat(": ", PrecisionName(model.precision()), ", ", model.spec().ParameterCount(),
                                 " parameters, ",
                                 model.spec().FlopsPerCandidate(), " FLOP per candidate, ",
                                 model.workspace_bytes() >> 20, " MiB workspace per worker; matmuls: ",
                                 absl::StrJoin(kernels, ", "));
        }
      }
      Log(Severity::kInfo, absl::StrCat("loaded model '", e.name, "' version ", e.version, details),
          {{"event", "model_loaded"}, {"model", e.name}, {"version", version},
           {"load_seconds", absl::StrFormat("%.3f", absl::ToDoubleSeconds(e.load_time))}});
      break;
    }
    case RepositoryEvent::Kind::kUnloaded:
      Log(Severity::kInfo, absl::StrCat("unloaded model '", e.name, "' version ", e.version),
          {{"event", "model_unloaded"}, {"model", e.name}, {"version", version}});
      break;
    case RepositoryEvent::Kind::kLoadFailed:
      Log(Severity::kError,
          absl::StrCat("cannot load model '", e.name, "' version ", e.version, "; what served keeps serving: ",
                       e.status.message()),
          {{"event", "model_load_failed"}, {"model", e.name}, {"version", version},
           {"code", absl::StatusCodeToString(e.status.code())}});
      break;
    case RepositoryEvent::Kind::kScanFailed:
      Log(Severity::kWarning, absl::StrCat("cannot scan the model repository; nothing changes: ", e.status.message()),
          {{"event", "repository_scan_failed"}, {"path", e.name}});
      break;
  }
}

// Most workers, and most OpenMP threads per worker.
constexpr int32_t kMaxThreads = 1024;

// Returns the first invalid flag's complaint, or "".
std::string CheckFlags() {
  if (absl::GetFlag(FLAGS_model_root).empty()) return "--model_root is required";
  const int32_t port = absl::GetFlag(FLAGS_port);
  if (port < 0 || port > 65535) return absl::StrCat("--port must be in [0, 65535], got ", port);
  const int32_t metrics_port = absl::GetFlag(FLAGS_metrics_port);
  if (metrics_port < 0 || metrics_port > 65535) {
    return absl::StrCat("--metrics_port must be in [0, 65535], got ", metrics_port);
  }
  if (absl::GetFlag(FLAGS_max_candidates) < 1) return "--max_candidates must be at least 1";
  const int64_t bytes = absl::GetFlag(FLAGS_max_request_bytes);
  if (bytes < 1024 || bytes > (int64_t{1} << 31) - 1) {
    return absl::StrCat("--max_request_bytes must be in [1024, 2147483647], got ", bytes);
  }
  const int64_t batch = absl::GetFlag(FLAGS_max_batch_size);
  if (batch < 1 || batch > limits::kMaxBatchSize) {
    return absl::StrCat("--max_batch_size must be in [1, ", limits::kMaxBatchSize, "], got ", batch);
  }
  if (absl::GetFlag(FLAGS_max_workspace_bytes) < 1) return "--max_workspace_bytes must be positive";
  const absl::Duration timeout = absl::GetFlag(FLAGS_batch_timeout);
  if (timeout < absl::ZeroDuration() || timeout > absl::Seconds(1)) {
    return absl::StrCat("--batch_timeout must be in [0, 1s], got ", absl::FormatDuration(timeout));
  }
  const int32_t workers = absl::GetFlag(FLAGS_num_workers);
  if (workers < 0 || workers > kMaxThreads) {
    return absl::StrCat("--num_workers must be in [0, ", kMaxThreads, "], got ", workers);
  }
  const int32_t threads = absl::GetFlag(FLAGS_intra_op_threads);
  if (threads < 1 || threads > kMaxThreads) {
    return absl::StrCat("--intra_op_threads must be in [1, ", kMaxThreads, "], got ", threads);
  }
  if (const std::string p = absl::GetFlag(FLAGS_precision); p != "fp32" && p != "bf16") {
    return absl::StrCat("--precision must be fp32 or bf16, got '", p, "'");
  }
  const double headroom = absl::GetFlag(FLAGS_deadline_headroom);
  if (!(headroom >= 0 && headroom < 1)) {
    return absl::StrCat("--deadline_headroom must be in [0, 1), got ", headroom);
  }
  if (absl::GetFlag(FLAGS_max_queued_candidates) < absl::GetFlag(FLAGS_max_candidates)) {
    return "--max_queued_candidates must be at least --max_candidates, or a full-size request "
           "could never be accepted";
  }
  if (absl::GetFlag(FLAGS_max_queued_bytes) < bytes) {
    return "--max_queued_bytes must be at least --max_request_bytes, or a full-size request "
           "could never be accepted";
  }
  if (absl::GetFlag(FLAGS_max_calls_in_flight) < 1) return "--max_calls_in_flight must be at least 1";
  if (absl::GetFlag(FLAGS_max_concurrent_streams) < 1) return "--max_concurrent_streams must be at least 1";
  if (absl::GetFlag(FLAGS_max_idle_heap_bytes) < 0) return "--max_idle_heap_bytes must not be negative";
  if (absl::GetFlag(FLAGS_model_poll_interval) < absl::ZeroDuration()) {
    return "--model_poll_interval must not be negative";
  }
  if (absl::GetFlag(FLAGS_keep_versions) < 1) return "--keep_versions must be at least 1";
  LogFormat format;
  if (!ParseLogFormat(absl::GetFlag(FLAGS_log_format), &format)) {
    return absl::StrCat("--log_format must be text or json, got '", absl::GetFlag(FLAGS_log_format), "'");
  }
  if (absl::GetFlag(FLAGS_drain_delay) < absl::ZeroDuration()) return "--drain_delay must not be negative";
  if (absl::GetFlag(FLAGS_shutdown_grace_period) < absl::ZeroDuration()) {
    return "--shutdown_grace_period must not be negative";
  }
  return "";
}

int Main() {
  // absl checks every Mutex acquisition against a lock graph unless told
  // not to; the scheduler's lock is taken on every call.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (std::string problem = CheckFlags(); !problem.empty()) {
    Log(Severity::kError, absl::StrCat("invalid flags: ", problem));
    return 2;
  }
  LogFormat format = LogFormat::kText;
  ParseLogFormat(absl::GetFlag(FLAGS_log_format), &format);
  SetLogFormat(format);
  // Block the stop signals in every thread (gRPC's and oneDNN's inherit the
  // mask); this thread receives them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  ServerTlsOptions tls;
  tls.cert = absl::GetFlag(FLAGS_tls_cert);
  tls.key = absl::GetFlag(FLAGS_tls_key);
  tls.client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  tls.reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  auto credentials = MakeServerCredentials(tls);
  if (!credentials.ok()) {
    Log(Severity::kError, std::string(credentials.status().message()));
    return 2;
  }

  const int usable_cpus = UsableCpus();
  const int intra_op_threads = absl::GetFlag(FLAGS_intra_op_threads);
  int num_workers = absl::GetFlag(FLAGS_num_workers);
  if (num_workers == 0) num_workers = std::max(1, usable_cpus / intra_op_threads);
  const absl::Duration poll_interval = absl::GetFlag(FLAGS_model_poll_interval);
  Log(Severity::kInfo,
      absl::StrCat(num_workers, " scoring worker(s) x ", intra_op_threads, " OpenMP thread(s); ", usable_cpus,
                   " CPU(s) usable by this process; model root '", absl::GetFlag(FLAGS_model_root), "' ",
                   poll_interval > absl::ZeroDuration()
                       ? absl::StrCat("scanned every ", absl::FormatDuration(poll_interval))
                       : std::string("read once"),
                   ", keeping ", absl::GetFlag(FLAGS_keep_versions), " version(s) per model"));
  if (num_workers * intra_op_threads > usable_cpus) {
    Log(Severity::kWarning, absl::StrCat(num_workers * intra_op_threads, " scoring threads on ", usable_cpus,
                                         " usable CPU(s) oversubscribe them"));
  }

  // Events of the repository reach the server (health) once it exists.
  std::atomic<RankingServer*> running_server{nullptr};
  std::atomic<ModelRepository*> running_repository{nullptr};
  std::atomic<bool> draining{false};
  ServerMetrics metrics;
  metrics.SetWorkers(num_workers);
  auto ready = [&](std::string* why) {
    ModelRepository* repository = running_repository.load();
    if (draining) {
      *why = "shutting down";
    } else if (repository == nullptr || running_server.load() == nullptr) {
      *why = "loading models";
    } else if (!repository->ready()) {
      *why = "no model version loaded yet";
    } else {
      return true;
    }
    return false;
  };
  std::unique_ptr<HttpEndpoint> http;
  if (absl::GetFlag(FLAGS_metrics_port) != 0) {
    HttpEndpoint::Options http_options;
    http_options.host = absl::GetFlag(FLAGS_host);
    http_options.port = absl::GetFlag(FLAGS_metrics_port);
    http_options.ready = ready;
    http_options.metrics = [&] {
      if (RankingServer* server = running_server.load()) server->service().RefreshGauges();
      if (ModelRepository* repository = running_repository.load()) {
        std::map<std::string, int> versions;
        for (const auto& [name, version] : repository->List()) ++versions[name];
        metrics.SetVersionsLoaded(versions);
      }
      std::string unused;
      metrics.SetReady(ready(&unused));
      return metrics.Serialize();
    };
    auto started = HttpEndpoint::Start(http_options);
    if (!started.ok()) {
      Log(Severity::kError, started.status().ToString());
      return 1;
    }
    http = *std::move(started);
    Log(Severity::kInfo, absl::StrCat("HTTP /metrics, /healthz, /readyz on ", absl::GetFlag(FLAGS_host), ":",
                                      http->port()));
  }
  ModelRepository::Options repo_options;
  repo_options.root = absl::GetFlag(FLAGS_model_root);
  repo_options.default_model = absl::GetFlag(FLAGS_default_model);
  repo_options.model.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  repo_options.model.max_workspace_bytes = absl::GetFlag(FLAGS_max_workspace_bytes);
  repo_options.model.threads = intra_op_threads;
  repo_options.model.precision = absl::GetFlag(FLAGS_precision) == "bf16" ? Precision::kBf16 : Precision::kF32;
  repo_options.keep_versions = absl::GetFlag(FLAGS_keep_versions);
  repo_options.fail_on_model_error = absl::GetFlag(FLAGS_fail_on_model_error);
  repo_options.allow_empty = poll_interval > absl::ZeroDuration();
  std::vector<RepositoryEvent> initial_events;  // logged once Load returns
  repo_options.on_event = [&](const RepositoryEvent& e) {
    ModelRepository* repository = running_repository.load();
    metrics.CountRepositoryEvent(e);
    if (repository == nullptr) {  // Load, on this thread
      initial_events.push_back(e);
      return;
    }
    LogEvent(e, repository);
    RankingServer* server = running_server.load();
    if (server != nullptr && repository != nullptr && !draining) server->SetServing(repository->ready());
  };
  std::vector<std::string> warnings;
  const absl::Time load_start = absl::Now();
  auto repository = ModelRepository::Load(repo_options, &warnings);
  for (const std::string& w : warnings) Log(Severity::kWarning, w);
  if (!repository.ok()) {
    for (const RepositoryEvent& e : initial_events) LogEvent(e, nullptr);
    Log(Severity::kError, absl::StrCat("cannot load models: ", repository.status().ToString()));
    return 1;
  }
  running_repository = repository->get();
  for (const RepositoryEvent& e : initial_events) LogEvent(e, repository->get());
  const std::string default_model = (*repository)->default_model();
  Log(Severity::kInfo, absl::StrCat("models loaded in ", absl::FormatDuration(absl::Now() - load_start),
                                    default_model.empty() ? "; no default model"
                                                          : absl::StrCat("; default model '", default_model, "'")));

  RankingServer::Options options;
  options.address = absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_port));
  options.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  options.credentials = *credentials;
  options.service.max_candidates = absl::GetFlag(FLAGS_max_candidates);
  options.service.max_calls_in_flight = absl::GetFlag(FLAGS_max_calls_in_flight);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.service.scheduler.num_workers = num_workers;
  options.service.queue.batch_timeout = absl::GetFlag(FLAGS_batch_timeout);
  options.service.queue.merge_tasks = absl::GetFlag(FLAGS_batch_merging);
  options.service.queue.max_queued_candidates = absl::GetFlag(FLAGS_max_queued_candidates);
  options.service.queue.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  options.service.queue.admit_by_deadline = absl::GetFlag(FLAGS_admit_by_deadline);
  options.service.queue.deadline_headroom = absl::GetFlag(FLAGS_deadline_headroom);
  options.service.metrics = &metrics;
  auto server = RankingServer::Start(repository->get(), options);
  if (!server.ok()) {
    Log(Severity::kError, server.status().ToString());
    return 1;
  }
  running_server = server->get();
  Log(Severity::kInfo, absl::StrCat("serving on ", absl::GetFlag(FLAGS_host), ":", (*server)->port(),
                                    tls.cert.empty()             ? " (plaintext)"
                                    : tls.client_ca.empty()      ? " (TLS)"
                                                                 : " (mTLS: client certificates required)",
                                    (*repository)->ready() ? "" : "; not ready until a model version is published"));
  std::unique_ptr<RepositoryWatcher> watcher;
  if (poll_interval > absl::ZeroDuration()) {
    watcher = std::make_unique<RepositoryWatcher>(repository->get(), poll_interval);
  }

  MemoryReleaser::Options release_options;
  release_options.max_idle_heap_bytes = absl::GetFlag(FLAGS_max_idle_heap_bytes);
  const MemoryReleaser releaser(release_options);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  const absl::Duration drain = absl::GetFlag(FLAGS_drain_delay);
  watcher.reset();  // no swaps, and no health changes, from here
  draining = true;
  (*server)->SetServing(false);  // and it stays so: Shutdown comes next
  if (drain > absl::ZeroDuration()) {
    Log(Severity::kInfo, absl::StrCat("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT",
                                      "; NOT_SERVING, still answering calls for ", absl::FormatDuration(drain)));
    absl::SleepFor(drain);
  }
  Log(Severity::kInfo, absl::StrCat("received ", signal_number == SIGTERM ? "SIGTERM" : "SIGINT",
                                    "; finishing calls in flight"));
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace_period));
  http.reset();  // before the server and metrics its handlers read
  running_server = nullptr;
  Log(Severity::kInfo, "stopped");
  return 0;
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves MaskNet ranking models over gRPC.\n\n  masknet_server --model_root=DIR [flags]");
  // --help lists this file's flags (absl matches files named after the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) { return absl::EndsWith(file, "server/main.cc"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  return masknet::Main();
}
