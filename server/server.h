#ifndef MASKNET_SERVER_SERVER_H_
#define MASKNET_SERVER_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loader/model_repository.h"
#include "net/tls.h"
#include "server/call_capture.h"
#include "server/grpc_server.h"
#include "server/http_endpoint.h"
#include "server/memory_release.h"
#include "server/metrics.h"

namespace masknet {

// The whole server, as masknet_server runs it: the composition root. It owns
// the model repository and its watcher, the metrics, the HTTP endpoint
// (/metrics, /healthz, /readyz), the gRPC server (the Ranker service and its
// batching workers, health, reflection) and the memory releaser, and it
// wires them: repository events reach the metrics, the log and gRPC health;
// readiness is one answer for /readyz, the metrics and gRPC health.
// (TensorFlow Serving's model_servers/server.h is the model.)
//
//   auto server = Server::Create(options);  // checks options and TLS files
//   if (server.ok()) status = (*server)->Start();  // HTTP, models, gRPC
//   ...
//   (*server)->Stop("SIGTERM");  // drain, finish calls in flight, stop
//
// Create and Start run on one thread; Stop on that thread or another, once
// Start has returned.
class Server {
 public:
  struct Options {
    // A server's workers run one OpenMP thread each by default: several
    // single-threaded workers score the most candidates per second.
    Options() { repository.model.threads = 1; }

    // Address of both ports.
    std::string host = "0.0.0.0";
    // gRPC port; 0 picks a free one (grpc_port()).
    int port = 50051;
    // HTTP port of /metrics, /healthz and /readyz; 0 turns it off.
    int metrics_port = 8080;
    // TLS of the gRPC port (the HTTP port stays plaintext).
    ServerTlsOptions tls;
    // The model root, the models' build options, versions kept. The
    // server sets allow_empty (from model_poll_interval) and on_event.
    // repository.model.threads: each worker's OpenMP threads (at least 1).
    ModelRepository::Options repository;
    // How often the root is scanned for new and removed versions; 0: read
    // once at start (the root must then hold a model).
    // A retrained model is picked up within it; scanning a few directories
    // is cheap.
    absl::Duration model_poll_interval = absl::Seconds(10);
    // Scoring workers, shared by every model; 0: the CPUs this process may
    // use divided by repository.model.threads.
    int num_workers = 0;
    // Shadow workers (RankerService::Options::shadow_workers); -1: 1, or 0
    // where a cgroup CPU quota is below the CPUs this process may run on
    // (a SCHED_IDLE thread's time counts against the quota, and could get
    // the callers' threads throttled).
    int shadow_workers = -1;
    // The gRPC server and the Ranker service. The server sets address
    // (host:port), credentials (tls), service.scheduler.num_workers
    // (num_workers), service.shadow_workers (shadow_workers) and
    // service.metrics.
    GrpcServer::Options grpc;
    MemoryReleaser::Options memory;
    // Capture of a sample of calls to files (capture.dir empty: none).
    CallCapture::Options capture;
    // Where Start, once serving, writes the bound ports as JSON,
    // {"grpc": P, "http": Q} (http 0: off), for whoever started the server
    // with port 0: written beside it and renamed into place, so a reader
    // never sees half of it; removed by Stop. Empty: none.
    std::string ports_file;
    // Stop: how long to keep answering calls while health reports
    // NOT_SERVING, so that load balancers stop sending first.
    absl::Duration drain_delay = absl::ZeroDuration();
    // Stop: how long calls in flight may take to finish before they are
    // cancelled.
    absl::Duration shutdown_grace_period = absl::Seconds(25);

    // INVALID_ARGUMENT naming the first option out of its bounds, its
    // components' included (by their own names, e.g. "max_batch_size").
    absl::Status Validate() const;
  };

  // Checks `options` and reads the TLS files; starts nothing. Errors:
  // INVALID_ARGUMENT naming the option or TLS flag that is wrong.
  static absl::StatusOr<std::unique_ptr<Server>> Create(Options options);

  // Starts the HTTP endpoint (live, not ready), loads the models, starts
  // the gRPC server, the watcher and the memory releaser, and logs each step.
  // Errors (what started is stopped again): UNAVAILABLE when a port cannot
  // be bound or the ports file cannot be written; the repository's error
  // when the models cannot be loaded.
  absl::Status Start();

  // Graceful stop, `reason` (e.g. "SIGTERM") logged: no more model swaps;
  // health turns NOT_SERVING; calls are still answered for drain_delay;
  // then new calls are refused, calls in flight finish within
  // shutdown_grace_period, and everything stops. Idempotent.
  void Stop(absl::string_view reason);

  // Stops at once (Stop with no drain and no grace), if Stop was not called.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound ports, once started (0 for a port turned off).
  int grpc_port() const { return grpc_ != nullptr ? grpc_->port() : 0; }
  int metrics_port() const { return http_ != nullptr ? http_->port() : 0; }

  // Whether the server is ready for traffic; if not, sets *why. Thread-safe.
  bool Ready(std::string* why) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit Server(Options options) : options_(std::move(options)) {}

  // The repository's callback: counts, logs and updates health.
  void OnRepositoryEvent(const RepositoryEvent& event) ABSL_LOCKS_EXCLUDED(mu_);
  // The body of /metrics.
  std::string ScrapeMetrics();
  // The "serving on" line.
  void LogServing() const;
  // Writes options_.ports_file (if set).
  absl::Status WritePortsFile() const;

  const Options options_;  // resolved: num_workers > 0, shadow_workers >= 0, credentials made
  ServerMetrics metrics_;
  std::unique_ptr<HttpEndpoint> http_;
  std::unique_ptr<ModelRepository> repository_;
  std::unique_ptr<CallCapture> capture_;  // outlives the gRPC server, whose calls write to it
  std::unique_ptr<GrpcServer> grpc_;
  std::unique_ptr<RepositoryWatcher> watcher_;
  std::unique_ptr<MemoryReleaser> releaser_;

  mutable absl::Mutex mu_;
  // What Ready reads: set once each part is up, cleared by Stop.
  bool repository_up_ ABSL_GUARDED_BY(mu_) = false;
  bool grpc_up_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Events reported while Load runs, logged once it returns (the log line
  // of a loaded version describes it from the repository).
  std::vector<RepositoryEvent> load_events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace masknet

#endif  // MASKNET_SERVER_SERVER_H_
