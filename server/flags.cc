#include "server/flags.h"

#include <cctype>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "model/masknet_model.h"

ABSL_FLAG(std::string, model_root, "",
          "Directory holding <model_name>/<version>/{model_config.pbtxt,weights.safetensors}. "
          "Required.");
ABSL_FLAG(std::string, default_model, "",
          "Model answering requests with an empty model_name. Default: the only model, when "
          "there is exactly one.");
ABSL_FLAG(std::string, host, masknet::Server::Options().host, "Address to listen on (gRPC and HTTP).");
ABSL_FLAG(int32_t, metrics_port, masknet::Server::Options().metrics_port,
          "HTTP port for /metrics (Prometheus), /healthz and /readyz; 0 turns it off.");
ABSL_FLAG(int32_t, port, masknet::Server::Options().port,
          "gRPC port (Ranker, grpc.health.v1.Health, reflection); 0 picks a free one.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key). Empty: plaintext. Read again "
          "every --tls_reload_interval, so rotated certificates need no restart. The HTTP port stays "
          "plaintext, for the cluster's scraper and probes.");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: require mTLS, refusing clients without a certificate signed by one "
          "of them. Needs --tls_cert and --tls_key.");
ABSL_FLAG(absl::Duration, tls_reload_interval, masknet::Server::Options().tls.reload_interval,
          "How often the TLS files are read again (at least 1s).");
ABSL_FLAG(int64_t, max_candidates, masknet::Server::Options().grpc.service.max_candidates,
          "Most candidates in one Rank request; more is INVALID_ARGUMENT.");
ABSL_FLAG(int64_t, max_request_bytes, masknet::Server::Options().grpc.max_request_bytes,
          "Largest request message accepted, in bytes (gRPC's own default of 4 MiB is too "
          "small: 500 twitter-recap candidates are ~4 MB of floats).");
ABSL_FLAG(int64_t, max_batch_size, masknet::Server::Options().repository.model.max_batch_size,
          "Most candidates in one batch (one forward pass). A batch merges calls to the same model "
          "version; a larger call is split over several batches, which run on several workers at "
          "once.");
ABSL_FLAG(absl::Duration, batch_timeout, masknet::Server::Options().grpc.service.queue.batch_timeout,
          "How long a batch that is not full waits for more calls before it runs. Under load "
          "batches fill while the workers are busy, so waiting only adds latency (README, "
          "\"Batching\").");
ABSL_FLAG(bool, batch_merging, masknet::Server::Options().grpc.service.queue.merge_tasks,
          "Whether one batch may hold several calls. Off, a batch holds part of one call only "
          "(for comparison).");
ABSL_FLAG(int32_t, num_workers, masknet::Server::Options().num_workers,
          "Scoring threads, shared by every model. 0: the CPUs this process may use (affinity and "
          "cgroup quota) divided by --intra_op_threads.");
ABSL_FLAG(masknet::Precision, precision, masknet::Server::Options().repository.model.precision,
          "Matmul arithmetic of every model: fp32; bf16 (weights and matmul inputs rounded to "
          "bfloat16, float32 accumulation; needs AVX512_BF16, else fp32 with a warning); or int8 "
          "(int8 weights, each candidate's matmul inputs quantized on their own, int32 "
          "accumulation; needs AVX512_VNNI, else bf16 or fp32 with a warning).");
ABSL_FLAG(int32_t, intra_op_threads, masknet::Server::Options().repository.model.threads,
          "OpenMP threads each worker's forward pass uses. 1 (several single-threaded workers) "
          "gives the most candidates per second; more lowers a lone large batch's latency. Set "
          "OMP_WAIT_POLICY=PASSIVE with more than 1, or idle OpenMP threads spin.");
ABSL_FLAG(int64_t, max_queued_candidates, masknet::Server::Options().grpc.service.queue.max_queued_candidates,
          "Per model version: most candidates accepted and not yet in a batch; beyond it Rank "
          "answers RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, max_queued_bytes, masknet::Server::Options().grpc.service.queue.max_queued_bytes,
          "Per model version: most bytes of feature values held by queued calls; beyond it Rank "
          "answers RESOURCE_EXHAUSTED.");
ABSL_FLAG(int64_t, shadow_max_queued_candidates, masknet::Server::Options().grpc.service.shadow_max_queued_candidates,
          "Shadow scoring (a model's rollout.pbtxt shadow_fraction): most candidates of shadow calls "
          "queued for one canary version; a shadow call beyond it is dropped and counted "
          "(masknet_shadow_calls_total{outcome=\"dropped\"}), never a caller's call.");
ABSL_FLAG(int64_t, shadow_max_batch_size, masknet::Server::Options().grpc.service.shadow_max_batch_size,
          "Shadow scoring: most candidates in one shadow batch (and at most --max_batch_size). With "
          "--shadow_workers=0 a shadow batch starts only while a scoring worker is idle; this "
          "bounds how long a caller's batch that arrives meanwhile may wait behind it.");
ABSL_FLAG(absl::Duration, shadow_max_delay, masknet::Server::Options().grpc.service.shadow_max_delay,
          "Shadow scoring: how long a shadow call may wait for a free worker before it is dropped "
          "and counted; one that the shadow work queued ahead (at --shadow_cpu_share's pace) would "
          "keep waiting longer is dropped when its call is sampled.");
ABSL_FLAG(int32_t, shadow_workers, masknet::Server::Options().shadow_workers,
          "Shadow scoring: threads that run shadow batches alone, under SCHED_IDLE, so that the "
          "kernel gives them only the CPU time the callers' threads leave. 0: the scoring workers "
          "run shadow batches when no caller's batch is ready and another worker stays idle (a "
          "shadow batch then competes with gRPC's threads for the cores). -1: 1, or 0 where a "
          "cgroup CPU quota is below the CPUs this process may run on (an idle-priority thread's "
          "time counts against the quota).");
ABSL_FLAG(double, shadow_cpu_share, masknet::Server::Options().grpc.service.shadow_cpu_share,
          "Shadow scoring: the most CPU time shadow batches take, as a share of the scoring "
          "workers' (--num_workers cores), in (0, 1]: a shadow batch that took t seconds of CPU "
          "lets the next start no sooner than t / (share * num_workers) after it started; shadow "
          "calls it would keep waiting past --shadow_max_delay are dropped and counted. Bounds what "
          "SCHED_IDLE does not: the other hardware thread of a core, and the caches and memory "
          "bandwidth cores share. 1: no bound.");
ABSL_FLAG(bool, data_metrics, masknet::Server::Options().grpc.service.data_metrics,
          "Export, per model version, the histograms of the scores served (masknet_scores) and the "
          "counts of feature values mended or out of range, per field (masknet_input_problems_total); "
          "both are updated once per batch.");
ABSL_FLAG(std::string, capture_dir, masknet::Server::Options().capture.dir,
          "Capture a sample of the calls answered OK (request, response, the version that "
          "answered) to length-delimited CapturedCall files in this directory, for "
          "masknet_loadgen --replay and masknet_compare; written off the request path. Empty: no "
          "capture.");
ABSL_FLAG(double, capture_fraction, masknet::Server::Options().capture.fraction,
          "With --capture_dir: the share of the calls answered OK that are captured, in (0, 1].");
ABSL_FLAG(int64_t, capture_max_bytes, masknet::Server::Options().capture.max_bytes,
          "With --capture_dir: most bytes all capture files there hold; the oldest are deleted "
          "beyond it.");
ABSL_FLAG(int64_t, capture_file_bytes, masknet::Server::Options().capture.file_bytes,
          "With --capture_dir: a capture file is completed (renamed from .binpb.part to .binpb) and "
          "a new one begun once it holds this much; also the most bytes of records waiting for the "
          "writer (beyond it records are dropped and counted, never a call).");
ABSL_FLAG(int64_t, max_calls_in_flight, masknet::Server::Options().grpc.service.max_calls_in_flight,
          "Rank calls held at once across every model, from arrival to answer; beyond it Rank "
          "answers RESOURCE_EXHAUSTED at once. Bounds the memory a flood of calls can hold "
          "(each holds gRPC's call state and its request).");
ABSL_FLAG(int32_t, max_concurrent_streams, masknet::Server::Options().grpc.max_concurrent_streams,
          "Calls one client connection may have open at once (HTTP/2 "
          "SETTINGS_MAX_CONCURRENT_STREAMS); a client's further calls wait on its side. gRPC's "
          "own default is unlimited, which lets one client's flood fill the server's memory.");
ABSL_FLAG(int64_t, max_idle_heap_bytes, masknet::Server::Options().memory.max_idle_heap_bytes,
          "Free heap memory the server keeps once a burst of allocations (a flood of calls) has "
          "passed; beyond it the free pages go back to the system within a second. 0: keep all.");
ABSL_FLAG(bool, admit_by_deadline, masknet::Server::Options().grpc.service.queue.admit_by_deadline,
          "Refuse at once (RESOURCE_EXHAUSTED) a call that, by the measured cost of recent "
          "batches, would miss its deadline behind the work queued ahead of it.");
ABSL_FLAG(double, deadline_headroom, masknet::Server::Options().grpc.service.queue.deadline_headroom,
          "With --admit_by_deadline: the share of a call's time to its deadline kept free for "
          "estimation error; a call is admitted if its estimated finish falls within the rest.");
ABSL_FLAG(int64_t, max_workspace_bytes, masknet::Server::Options().repository.model.max_workspace_bytes,
          "Most scratch memory one model may need for a batch of --max_batch_size candidates; "
          "a model needing more fails to load.");
ABSL_FLAG(absl::Duration, model_poll_interval, masknet::Server::Options().model_poll_interval,
          "How often the model root is scanned for new and removed versions; a new version is "
          "loaded, checked and warmed up beside the others, then swapped in. 0: read once at "
          "start (the root must then hold a model).");
ABSL_FLAG(int32_t, keep_versions, masknet::Server::Options().repository.keep_versions,
          "Newest loadable versions of each model kept loaded (callers may pin any of them with "
          "model_version); versions a label of the model's rollout.pbtxt names stay loaded besides.");
ABSL_FLAG(bool, fail_on_model_error, masknet::Server::Options().repository.fail_on_model_error,
          "At start-up, a model whose versions all fail to load stops the server (exit 1). "
          "Default: it is logged (load_failed) and the other models serve; it is retried when its "
          "files change.");
ABSL_FLAG(masknet::LogFormat, log_format, masknet::LogFormat::kText, "Event log on stderr: text or json (one object per line).");
ABSL_FLAG(absl::Duration, drain_delay, masknet::Server::Options().drain_delay,
          "On SIGTERM or SIGINT: how long to keep serving while health reports NOT_SERVING, so "
          "that load balancers and health-checking clients stop sending first (Kubernetes: a few "
          "seconds, within terminationGracePeriodSeconds).");
ABSL_FLAG(std::string, ports_file, masknet::Server::Options().ports_file,
          "Once serving, write the bound ports to this file as JSON, {\"grpc\": P, \"http\": Q} "
          "(http 0: off), for whoever starts the server with --port=0; written whole (renamed "
          "into place) and removed on stop. Empty: none.");
ABSL_FLAG(absl::Duration, shutdown_grace_period, masknet::Server::Options().shutdown_grace_period,
          "On SIGTERM or SIGINT: how long calls in flight may take to finish before they are "
          "cancelled.");

namespace masknet {

Server::Options ServerOptionsFromFlags() {
  Server::Options o;
  o.host = absl::GetFlag(FLAGS_host);
  o.port = absl::GetFlag(FLAGS_port);
  o.metrics_port = absl::GetFlag(FLAGS_metrics_port);
  o.tls.cert = absl::GetFlag(FLAGS_tls_cert);
  o.tls.key = absl::GetFlag(FLAGS_tls_key);
  o.tls.client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  o.tls.reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  o.repository.root = absl::GetFlag(FLAGS_model_root);
  o.repository.default_model = absl::GetFlag(FLAGS_default_model);
  o.repository.keep_versions = absl::GetFlag(FLAGS_keep_versions);
  o.repository.fail_on_model_error = absl::GetFlag(FLAGS_fail_on_model_error);
  o.repository.model.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  o.repository.model.max_workspace_bytes = absl::GetFlag(FLAGS_max_workspace_bytes);
  o.repository.model.threads = absl::GetFlag(FLAGS_intra_op_threads);
  o.repository.model.precision = absl::GetFlag(FLAGS_precision);
  o.model_poll_interval = absl::GetFlag(FLAGS_model_poll_interval);
  o.num_workers = absl::GetFlag(FLAGS_num_workers);
  o.grpc.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  o.grpc.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  o.grpc.service.max_candidates = absl::GetFlag(FLAGS_max_candidates);
  o.grpc.service.max_calls_in_flight = absl::GetFlag(FLAGS_max_calls_in_flight);
  o.grpc.service.shadow_max_queued_candidates = absl::GetFlag(FLAGS_shadow_max_queued_candidates);
  o.grpc.service.shadow_max_delay = absl::GetFlag(FLAGS_shadow_max_delay);
  o.grpc.service.shadow_max_batch_size = absl::GetFlag(FLAGS_shadow_max_batch_size);
  o.grpc.service.shadow_cpu_share = absl::GetFlag(FLAGS_shadow_cpu_share);
  o.shadow_workers = absl::GetFlag(FLAGS_shadow_workers);
  o.grpc.service.data_metrics = absl::GetFlag(FLAGS_data_metrics);
  BatchScheduler::QueueOptions& queue = o.grpc.service.queue;
  queue.batch_timeout = absl::GetFlag(FLAGS_batch_timeout);
  queue.merge_tasks = absl::GetFlag(FLAGS_batch_merging);
  queue.max_queued_candidates = absl::GetFlag(FLAGS_max_queued_candidates);
  queue.max_queued_bytes = absl::GetFlag(FLAGS_max_queued_bytes);
  queue.admit_by_deadline = absl::GetFlag(FLAGS_admit_by_deadline);
  queue.deadline_headroom = absl::GetFlag(FLAGS_deadline_headroom);
  o.memory.max_idle_heap_bytes = absl::GetFlag(FLAGS_max_idle_heap_bytes);
  o.drain_delay = absl::GetFlag(FLAGS_drain_delay);
  o.shutdown_grace_period = absl::GetFlag(FLAGS_shutdown_grace_period);
  o.ports_file = absl::GetFlag(FLAGS_ports_file);
  o.capture.dir = absl::GetFlag(FLAGS_capture_dir);
  o.capture.fraction = absl::GetFlag(FLAGS_capture_fraction);
  o.capture.max_bytes = absl::GetFlag(FLAGS_capture_max_bytes);
  o.capture.file_bytes = absl::GetFlag(FLAGS_capture_file_bytes);
  return o;
}

LogFormat LogFormatFromFlags() { return absl::GetFlag(FLAGS_log_format); }

std::string NameFlags(absl::string_view message) {
  // The options whose flags are named otherwise; every other option a flag
  // sets has the flag's name.
  static const auto* const renamed = new absl::flat_hash_map<std::string, std::string>{
      {"root", "model_root"}, {"threads", "intra_op_threads"}, {"merge_tasks", "batch_merging"}};
  static const auto* const same = new absl::flat_hash_set<std::string>{
      "host", "port", "metrics_port", "default_model", "keep_versions", "fail_on_model_error",
      "max_batch_size", "max_workspace_bytes", "precision", "model_poll_interval", "num_workers",
      "max_request_bytes", "max_concurrent_streams", "max_candidates", "max_calls_in_flight", "batch_timeout",
      "max_queued_candidates", "max_queued_bytes", "admit_by_deadline", "deadline_headroom",
      "max_idle_heap_bytes", "drain_delay", "shutdown_grace_period", "shadow_max_queued_candidates",
      "shadow_max_delay", "shadow_max_batch_size", "shadow_workers", "shadow_cpu_share", "capture_dir",
      "capture_fraction", "capture_max_bytes", "capture_file_bytes"};
  auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  std::string out;
  size_t i = 0;
  while (i < message.size()) {
    if (!is_word(message[i])) {
      out += message[i++];
      continue;
    }
    size_t end = i;
    while (end < message.size() && is_word(message[end])) ++end;
    const std::string word(message.substr(i, end - i));
    // An option is the message's first word, or a word with an underscore
    // ("OpenMP threads" is no option).
    const bool option = (i == 0 || word.find('_') != std::string::npos) && !(i > 0 && message[i - 1] == '-');
    if (auto it = renamed->find(word); it != renamed->end() && option) {
      absl::StrAppend(&out, "--", it->second);
    } else if (same->contains(word) && option) {
      absl::StrAppend(&out, "--", word);
    } else {
      out += word;
    }
    i = end;
  }
  return out;
}

}  // namespace masknet
