#include "server/server.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/cpu_budget.h"
#include "server/logging.h"

namespace masknet {
namespace {

// ", <precision>, N parameters, ..." of a loaded version, and its precision
// warning if any; "" when it is no longer served.
std::string DescribeLoaded(const RepositoryEvent& e, const ModelRepository& repository) {
  auto servable = repository.Find(e.name, e.version);
  if (!servable.ok()) return "";
  const MaskNetModel& model = *(*servable)->model;
  if (!model.precision_note().empty()) {
    Log(Severity::kWarning, absl::StrCat("model '", e.name, "' version ", e.version, ": ", model.precision_note()));
  }
  std::vector<std::string> kernels;
  for (const auto& [impl, count] : model.MatmulImplementations()) kernels.push_back(absl::StrCat(impl, " x", count));
  return absl::StrCat(": ", PrecisionName(model.precision()), ", ", model.spec().ParameterCount(), " parameters, ",
                      model.spec().FlopsPerCandidate(), " FLOP per candidate, ", model.workspace_bytes() >> 20,
                      " MiB workspace per worker; matmuls: ", absl::StrJoin(kernels, ", "));
}

// Logs what happened to a model version; `repository` (null while it
// loads) describes a loaded one.
void LogEvent(const RepositoryEvent& e, const ModelRepository* repository) {
  const std::string version = absl::StrCat(e.version);
  switch (e.kind) {
    case RepositoryEvent::Kind::kLoaded:
      Log(Severity::kInfo,
          absl::StrCat("loaded model '", e.name, "' version ", e.version,
                       repository != nullptr ? DescribeLoaded(e, *repository) : ""),
          {{"event", "model_loaded"}, {"model", e.name}, {"version", version},
           {"load_seconds", absl::StrFormat("%.3f", absl::ToDoubleSeconds(e.load_time))}});
      break;
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
    case RepositoryEvent::Kind::kLabelsChanged:
      Log(Severity::kInfo, absl::StrCat("model '", e.name, "' version labels: ", DescribeRollout(e.rollout)),
          {{"event", "model_labels_changed"}, {"model", e.name}, {"labels", DescribeLabels(e.rollout.labels)},
           {"shadow_fraction", absl::StrCat(e.rollout.shadow_fraction)}});
      break;
    case RepositoryEvent::Kind::kLabelsRejected:
      Log(Severity::kError,
          absl::StrCat("cannot apply the version labels of model '", e.name, "'; its labels stay ",
                       DescribeRollout(e.rollout), ": ", e.status.message()),
          {{"event", "model_labels_rejected"}, {"model", e.name}, {"labels", DescribeLabels(e.rollout.labels)}});
      break;
  }
}

absl::Status CheckPort(absl::string_view name, int port) {
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must be in [0, 65535], got ", port));
  }
  return absl::OkStatus();
}

absl::Status CheckNotNegative(absl::string_view name, absl::Duration d) {
  if (d < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(name, " must not be negative, got ", absl::FormatDuration(d)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Server::Options::Validate() const {
  for (const absl::Status& s :
       {CheckPort("port", port), CheckPort("metrics_port", metrics_port), repository.Validate(),
        CheckNotNegative("model_poll_interval", model_poll_interval), CheckNotNegative("drain_delay", drain_delay),
        CheckNotNegative("shutdown_grace_period", shutdown_grace_period), memory.Validate(),
        capture.dir.empty() ? absl::OkStatus() : capture.Validate()}) {
    if (!s.ok()) return s;
  }
  if (repository.model.threads < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be at least 1 (each worker's OpenMP threads), got ", repository.model.threads));
  }
  if (num_workers < 0 || num_workers > BatchScheduler::kMaxWorkers) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_workers must be in [0, ", BatchScheduler::kMaxWorkers, "], got ", num_workers));
  }
  if (shadow_workers < -1 || shadow_workers > RankerService::Options::kMaxShadowWorkers) {
    return absl::InvalidArgumentError(absl::StrCat("shadow_workers must be in [-1, ",
                                                   RankerService::Options::kMaxShadowWorkers, "], got ",
                                                   shadow_workers));
  }
  GrpcServer::Options resolved = grpc;  // as Create will set it
  resolved.service.scheduler.num_workers = std::max(1, num_workers);
  resolved.service.shadow_workers = std::max(0, shadow_workers);
  return resolved.Validate();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(Options options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  auto credentials = MakeServerCredentials(options.tls);
  if (!credentials.ok()) return credentials.status();
  options.grpc.credentials = *std::move(credentials);
  options.grpc.address = absl::StrCat(options.host, ":", options.port);
  const int usable_cpus = UsableCpus();  // reads the cgroup files once
  if (options.num_workers == 0) options.num_workers = std::max(1, usable_cpus / options.repository.model.threads);
  options.grpc.service.scheduler.num_workers = options.num_workers;
  if (options.shadow_workers < 0) options.shadow_workers = usable_cpus < AffinityCpus() ? 0 : 1;
  options.grpc.service.shadow_workers = options.shadow_workers;
  options.repository.allow_empty = options.model_poll_interval > absl::ZeroDuration();
  return std::unique_ptr<Server>(new Server(std::move(options)));
}

absl::Status Server::Start() {
  const int usable_cpus = UsableCpus();
  const int threads = options_.repository.model.threads;
  const absl::Duration poll = options_.model_poll_interval;
  Log(Severity::kInfo,
      absl::StrCat(options_.num_workers, " scoring worker(s) x ", threads, " OpenMP thread(s) and ",
                   options_.shadow_workers, " shadow worker(s) (SCHED_IDLE); ", usable_cpus,
                   " CPU(s) usable by this process; model root '", options_.repository.root, "' ",
                   poll > absl::ZeroDuration() ? absl::StrCat("scanned every ", absl::FormatDuration(poll))
                                               : std::string("read once"),
                   ", keeping ", options_.repository.keep_versions, " version(s) per model"));
  if (options_.num_workers * threads > usable_cpus) {
    Log(Severity::kWarning, absl::StrCat(options_.num_workers * threads, " scoring threads on ", usable_cpus,
                                         " usable CPU(s) oversubscribe them"));
  }
  metrics_.SetWorkers(options_.num_workers);

  if (options_.metrics_port != 0) {
    HttpEndpoint::Options http;
    http.host = options_.host;
    http.port = options_.metrics_port;
    http.ready = [this](std::string* why) { return Ready(why); };
    http.metrics = [this] { return ScrapeMetrics(); };
    auto started = HttpEndpoint::Start(http);
    if (!started.ok()) return started.status();
    http_ = *std::move(started);
    Log(Severity::kInfo, absl::StrCat("HTTP /metrics, /healthz, /readyz on ", options_.host, ":", http_->port()));
  }

  ModelRepository::Options repository = options_.repository;
  repository.on_event = [this](const RepositoryEvent& e) { OnRepositoryEvent(e); };
  std::vector<std::string> warnings;
  const absl::Time load_start = absl::Now();
  auto loaded = ModelRepository::Load(repository, &warnings);
  for (const std::string& w : warnings) Log(Severity::kWarning, w);
  std::vector<RepositoryEvent> events;
  {
    absl::MutexLock lock(&mu_);
    events.swap(load_events_);
  }
  for (const RepositoryEvent& e : events) LogEvent(e, loaded.ok() ? loaded->get() : nullptr);
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(), absl::StrCat("cannot load models: ", loaded.status().message()));
  }
  repository_ = *std::move(loaded);
  const std::string default_model = repository_->default_model();
  Log(Severity::kInfo, absl::StrCat("models loaded in ", absl::FormatDuration(absl::Now() - load_start),
                                    default_model.empty() ? "; no default model"
                                                          : absl::StrCat("; default model '", default_model, "'")));

  if (!options_.capture.dir.empty()) {
    auto capture = CallCapture::Start(options_.capture, &metrics_);
    if (!capture.ok()) return capture.status();
    capture_ = *std::move(capture);
    Log(Severity::kInfo, absl::StrCat("capturing ", options_.capture.fraction * 100, "% of the calls to '",
                                      options_.capture.dir, "' (files of ", options_.capture.file_bytes >> 20,
                                      " MiB, at most ", options_.capture.max_bytes >> 20, " MiB in all)"));
  }
  GrpcServer::Options grpc = options_.grpc;
  grpc.service.metrics = &metrics_;
  grpc.service.capture = capture_.get();
  auto started = GrpcServer::Start(repository_.get(), grpc);
  if (!started.ok()) return started.status();
  grpc_ = *std::move(started);
  {
    absl::MutexLock lock(&mu_);
    repository_up_ = true;
    grpc_up_ = true;
  }
  LogServing();
  if (poll > absl::ZeroDuration()) watcher_ = std::make_unique<RepositoryWatcher>(repository_.get(), poll);
  releaser_ = std::make_unique<MemoryReleaser>(options_.memory);
  return WritePortsFile();
}

absl::Status Server::WritePortsFile() const {
  if (options_.ports_file.empty()) return absl::OkStatus();
  const std::string& path = options_.ports_file;
  const std::string temporary = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << "{\"grpc\": " << grpc_port() << ", \"http\": " << metrics_port() << "}\n";
    out.close();
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write the ports file '", temporary, "'"));
  }
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) {
    std::filesystem::remove(temporary, ec);
    return absl::UnavailableError(absl::StrCat("cannot write the ports file '", path, "': ", ec.message()));
  }
  return absl::OkStatus();
}

void Server::LogServing() const {
  const ServerTlsOptions& tls = options_.tls;
  Log(Severity::kInfo, absl::StrCat("serving on ", options_.host, ":", grpc_->port(),
                                    tls.cert.empty()        ? " (plaintext)"
                                    : tls.client_ca.empty() ? " (TLS)"
                                                            : " (mTLS: client certificates required)",
                                    repository_->ready() ? "" : "; not ready until a model version is published"));
}

void Server::Stop(absl::string_view reason) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  watcher_.reset();  // no swaps, and no health changes, from here
  if (grpc_ != nullptr) grpc_->SetServing(false);  // and it stays so: Shutdown comes next
  const absl::Duration drain = options_.drain_delay;
  if (drain > absl::ZeroDuration()) {
    Log(Severity::kInfo,
        absl::StrCat("received ", reason, "; NOT_SERVING, still answering calls for ", absl::FormatDuration(drain)));
    absl::SleepFor(drain);
  }
  Log(Severity::kInfo, absl::StrCat("received ", reason, "; finishing calls in flight"));
  if (grpc_ != nullptr) grpc_->Shutdown(options_.shutdown_grace_period);
  http_.reset();  // before the gRPC server and the repository its handlers read
  capture_.reset();  // every call is answered: what they captured is written
  if (!options_.ports_file.empty()) {
    std::error_code ignored;  // a ports file that cannot be removed is only stale
    std::filesystem::remove(options_.ports_file, ignored);
  }
  Log(Severity::kInfo, "stopped");
}

Server::~Server() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  // Each part before what it reads: the watcher and the HTTP handlers read
  // the repository and the gRPC server; the service borrows the repository.
  watcher_.reset();
  http_.reset();
  grpc_.reset();
  capture_.reset();
  releaser_.reset();
  repository_.reset();
}

bool Server::Ready(std::string* why) const {
  absl::MutexLock lock(&mu_);
  if (stopping_) {
    *why = "shutting down";
  } else if (!repository_up_ || !grpc_up_) {
    *why = "loading models";
  } else if (!repository_->ready()) {
    *why = "no model version loaded yet";
  } else {
    return true;
  }
  return false;
}

std::string Server::ScrapeMetrics() {
  bool repository_up = false, grpc_up = false;
  {
    absl::MutexLock lock(&mu_);
    repository_up = repository_up_;
    grpc_up = grpc_up_;
  }
  // Stop resets the HTTP endpoint, waiting for this handler, before the
  // parts it reads go.
  if (grpc_up) grpc_->service().RefreshGauges();
  if (repository_up) {
    std::map<std::string, int> versions;
    for (const auto& [name, version] : repository_->List()) ++versions[name];
    metrics_.SetVersionsLoaded(versions);
  }
  std::string unused;
  metrics_.SetReady(Ready(&unused));
  return metrics_.Serialize();
}

void Server::OnRepositoryEvent(const RepositoryEvent& e) {
  metrics_.CountRepositoryEvent(e);
  {
    absl::MutexLock lock(&mu_);
    if (!repository_up_) {  // Load, on Start's thread: logged once it returns
      load_events_.push_back(e);
      return;
    }
  }
  LogEvent(e, repository_.get());
  bool serving = false;
  {
    absl::MutexLock lock(&mu_);
    serving = grpc_up_ && !stopping_;
  }
  if (serving) grpc_->SetServing(repository_->ready());
}

}  // namespace masknet
