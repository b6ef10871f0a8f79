// masknet_loadgen: drives Rank traffic at one or more masknet_servers and
// reports throughput, latency percentiles and errors by status code.
//
//   closed loop:  masknet_loadgen --target=localhost:50051 --concurrency=8 --candidates=64
//   open loop:    masknet_loadgen --target=localhost:50051 --rate=300 --deadline=500ms
//   feeds:        masknet_loadgen --feed_candidates=500 --candidates=64 --rate=50
//   replay:       masknet_loadgen --replay=/var/capture [--rate=300]
//
// A unit of load is one call, or with --feed_candidates one feed: that many
// candidates sent at once as calls of --candidates each. A closed loop keeps
// --concurrency units in flight; an open loop starts --rate units per second
// (Poisson arrivals by default) whatever the answers, and counts latency from
// each unit's scheduled start, so time spent waiting to be sent is not
// hidden. Only units scheduled inside the --duration window after --warmup
// are counted; those still in flight at its end are waited for. Requests
// carry random valid features built from GetModelInfo and are built before
// the run; with --replay they are calls a server captured (--capture_dir),
// sent in their order at the pace they arrived (or at --rate), from the
// first again when they run out. The load generator's own CPU time is
// reported beside every figure: on a small machine it competes with the
// server.

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "server/capture_file.h"
#include "tools/client/random_request.h"
#include "tools/client/tls_flags.h"

ABSL_FLAG(std::vector<std::string>, target, {"localhost:50051"},
          "Server addresses, comma-separated; calls are spread over them round-robin.");
ABSL_FLAG(int32_t, channels, 4,
          "gRPC channels (TCP connections) per target; calls are spread over them.");
ABSL_FLAG(int32_t, threads, 1,
          "Threads that complete calls (each polls its own completion queue) and, in a closed "
          "loop, send the next ones.");
ABSL_FLAG(std::string, model, "", "Model name; empty: the server's default model.");
ABSL_FLAG(int64_t, version, 0, "Model version; 0: the one labelled stable, else the newest.");
ABSL_FLAG(std::string, version_label, "", "A version by its label (the model's rollout.pbtxt); not with --version.");
ABSL_FLAG(int32_t, candidates, 64,
          "Candidates per call. 0 sends calls with no candidates, which measures the cost of a "
          "gRPC call itself.");
ABSL_FLAG(int32_t, feed_candidates, 0,
          "If set, a unit of load is a feed of this many candidates, sent at once as calls of "
          "--candidates each; a feed fails if any of its calls does.");
ABSL_FLAG(int32_t, concurrency, 8, "Closed loop: units in flight (used when --rate is 0).");
ABSL_FLAG(double, rate, 0, "Open loop: units started per second; 0 runs a closed loop.");
ABSL_FLAG(std::string, arrivals, "poisson", "Open loop arrivals: poisson or uniform.");
ABSL_FLAG(absl::Duration, deadline, absl::ZeroDuration(), "Deadline of every call; 0: none.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2), "Load sent before measuring, not counted.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "The measured window.");
ABSL_FLAG(int32_t, requests, 16, "Distinct random requests built before the run and reused.");
ABSL_FLAG(int64_t, max_outstanding, 20000,
          "Open loop: most calls in flight; a unit that would exceed it is not sent and counted "
          "as dropped by the load generator.");
ABSL_FLAG(uint32_t, seed, 1, "Seed for the random features and arrivals.");
ABSL_FLAG(std::string, replay, "",
          "Send the calls captured in this directory (masknet_server --capture_dir) instead of random ones, at "
          "the pace they arrived, or at --rate; --model, --version and --version_label, if set, replace what "
          "they name.");
ABSL_FLAG(int64_t, replay_calls, 100000, "With --replay: most captured calls read (the oldest first).");
ABSL_FLAG(absl::Duration, replay_max_gap, absl::Seconds(1),
          "With --replay at the recorded pace: a longer silence between two captured calls (such as "
          "between two captures) is cut to this.");
ABSL_FLAG(std::string, json, "", "Also write the results as JSON to this file.");

namespace masknet {
namespace {

using Clock = std::chrono::steady_clock;
using serving::v1::RankRequest;
using serving::v1::RankResponse;
using serving::v1::Ranker;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double ProcessCpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec * 1e-6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec * 1e-6;
}

// Latency percentiles of a set of samples, in milliseconds.
struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;

  static Percentiles Of(std::vector<double> seconds) {
    Percentiles p;
    if (seconds.empty()) return p;
    std::sort(seconds.begin(), seconds.end());
    auto at = [&](double q) {
      const size_t i = static_cast<size_t>(std::ceil(q * seconds.size())) - 1;
      return seconds[std::min(i, seconds.size() - 1)] * 1e3;
    };
    p.p50 = at(0.5);
    p.p90 = at(0.9);
    p.p99 = at(0.99);
    p.p999 = at(0.999);
    p.max = seconds.back() * 1e3;
    double sum = 0;
    for (double s : seconds) sum += s;
    p.mean = sum / seconds.size() * 1e3;
    return p;
  }
  std::string Json() const {
    return absl::StrFormat(R"({"p50": %.3f, "p90": %.3f, "p99": %.3f, "p999": %.3f, "max": %.3f, "mean": %.3f})",
                           p50, p90, p99, p999, max, mean);
  }
  std::string Text() const {
    return absl::StrFormat("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms", p50, p90, p99, p999, max);
  }
};

// Outcomes of the measured calls and feeds. Thread-safe.
class Results {
 public:
  void AddCall(grpc::StatusCode code, double latency, int64_t candidates) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    calls_[code].push_back(latency);
    if (code == grpc::StatusCode::OK) ok_candidates_ += candidates;
  }
  void AddFeed(bool ok, double latency) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    (ok ? feeds_ok_ : feeds_failed_).push_back(latency);
  }
  void AddDropped() { ++dropped_; }

  struct Snapshot {
    std::map<grpc::StatusCode, std::vector<double>> calls;
    int64_t ok_candidates;
    std::vector<double> feeds_ok, feeds_failed;
    int64_t dropped;
  };
  Snapshot Take() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return {calls_, ok_candidates_, feeds_ok_, feeds_failed_, dropped_.load()};
  }

 private:
  absl::Mutex mu_;
  std::map<grpc::StatusCode, std::vector<double>> calls_ ABSL_GUARDED_BY(mu_);
  int64_t ok_candidates_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<double> feeds_ok_ ABSL_GUARDED_BY(mu_), feeds_failed_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> dropped_{0};
};

// gRPC's name for a code (absl's codes share its numbers and names).
std::string CodeName(grpc::StatusCode code) { return absl::StatusCodeToString(static_cast<absl::StatusCode>(code)); }

// The traffic: units of one or more calls, started by a closed or an open
// loop, their outcomes recorded in Results when they fall in the window.
class LoadGenerator {
 public:
  struct Options {
    int candidates;
    int feed_candidates;
    int concurrency;
    double rate;
    bool poisson;
    absl::Duration deadline;
    int64_t max_outstanding;
    uint32_t seed;
    // Captured calls to send instead of random ones, with the seconds from
    // the first one's arrival to each one's; with rate 0, at that pace.
    std::vector<RankRequest> replay;
    std::vector<double> replay_offsets;
  };

  LoadGenerator(const Options& options, std::vector<std::unique_ptr<Ranker::Stub>> stubs,
                const serving::v1::ModelInfo& info, int distinct_requests, int threads)
      : options_(options), stubs_(std::move(stubs)) {
    for (int i = 0; i < threads; ++i) queues_.push_back(std::make_unique<grpc::CompletionQueue>());
    if (!options.replay.empty()) {
      unit_sizes_ = {0};  // one call per unit; its size is the captured call's
      return;
    }
    std::mt19937_64 rng(options.seed);
    // A feed of F candidates is calls of `candidates`, then one of the rest.
    std::vector<int> sizes;
    if (options.feed_candidates > 0) {
      for (int left = options.feed_candidates; left > 0; left -= options.candidates) {
        sizes.push_back(std::min(left, options.candidates));
      }
    } else {
      sizes.push_back(options.candidates);
    }
    for (int size : sizes) {
      if (requests_.count(size)) continue;
      for (int i = 0; i < distinct_requests; ++i) requests_[size].push_back(RandomRankRequest(info, size, rng));
    }
    unit_sizes_ = sizes;
  }

  // Runs warmup then the measured window, waits for the units in flight,
  // and returns the measured wall and CPU seconds.
  void Run(absl::Duration warmup, absl::Duration duration, double* wall_seconds, double* cpu_seconds) {
    std::vector<std::thread> pollers;
    for (auto& cq : queues_) pollers.emplace_back([this, q = cq.get()] { Poll(q); });
    const Clock::time_point start = Clock::now();
    window_begin_ = start + absl::ToChronoNanoseconds(warmup);
    window_end_ = window_begin_ + absl::ToChronoNanoseconds(duration);
    double cpu_begin = 0;
    if (options_.rate > 0 || !options_.replay.empty()) {
      OpenLoop(&cpu_begin);
    } else {
      for (int i = 0; i < options_.concurrency; ++i) StartUnit(Clock::now(), queues_[i % queues_.size()].get());
      std::this_thread::sleep_until(window_begin_);
      cpu_begin = ProcessCpuSeconds();
      std::this_thread::sleep_until(window_end_);
    }
    stopping_ = true;
    const double cpu_end = ProcessCpuSeconds();
    *wall_seconds = Seconds(window_end_ - window_begin_);
    *cpu_seconds = cpu_end - cpu_begin;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int64_t* n) { return *n == 0; }, &units_in_flight_));
    }
    for (auto& cq : queues_) cq->Shutdown();
    for (std::thread& t : pollers) t.join();
  }

  Results& results() { return results_; }

 private:
  struct Unit;
  struct Call {
    grpc::ClientContext context;
    RankResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<RankResponse>> reader;
    Unit* unit;
    int64_t candidates;
  };
  struct Unit {
    Clock::time_point scheduled;
    std::atomic<int> remaining{0};
    std::atomic<bool> failed{false};
  };

  void OpenLoop(double* cpu_begin) {
    std::mt19937_64 rng(options_.seed + 1);
    std::exponential_distribution<double> gap(options_.rate > 0 ? options_.rate : 1.0);
    const Clock::time_point origin = Clock::now();
    Clock::time_point next = origin;
    // Replay at the recorded pace: the captured arrivals, again and again.
    const std::vector<double>& offsets = options_.replay_offsets;
    const bool recorded_pace = options_.rate == 0;
    const double span = recorded_pace ? offsets.back() + std::max(1e-3, offsets.back() / offsets.size()) : 0;
    int64_t sent = 0;
    bool measuring = false;
    while (next < window_end_) {
      std::this_thread::sleep_until(next);
      if (!measuring && next >= window_begin_) {
        measuring = true;
        *cpu_begin = ProcessCpuSeconds();
      }
      if (outstanding_calls_.load() + static_cast<int64_t>(unit_sizes_.size()) > options_.max_outstanding) {
        if (InWindow(next)) results_.AddDropped();
      } else {
        StartUnit(next, queues_[next_queue_++ % queues_.size()].get(), sent);
      }
      ++sent;
      if (recorded_pace) {
        const double at = static_cast<double>(sent / offsets.size()) * span + offsets[sent % offsets.size()];
        next = origin + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at));
      } else {
        const double seconds = options_.poisson ? gap(rng) : 1.0 / options_.rate;
        next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
      }
    }
    std::this_thread::sleep_until(window_end_);
  }

  bool InWindow(Clock::time_point t) const { return t >= window_begin_ && t < window_end_; }

  // Completes calls on one completion queue (and, in a closed loop, sends
  // the units that replace them on it).
  void Poll(grpc::CompletionQueue* cq) {
    void* tag;
    bool ok;
    while (cq->Next(&tag, &ok)) CallDone(static_cast<Call*>(tag), cq);
  }

  // `replay_index`: with replay in the open loop, which captured call
  // (whose arrival the schedule followed); else the next one.
  void StartUnit(Clock::time_point scheduled, grpc::CompletionQueue* cq, int64_t replay_index = -1) {
    {
      absl::MutexLock lock(&mu_);
      ++units_in_flight_;
    }
    auto* unit = new Unit();
    unit->scheduled = scheduled;
    unit->remaining = static_cast<int>(unit_sizes_.size());
    const uint64_t n = next_call_.fetch_add(unit_sizes_.size());
    for (size_t i = 0; i < unit_sizes_.size(); ++i) {
      const uint64_t replayed = replay_index >= 0 ? static_cast<uint64_t>(replay_index) : n + i;
      const RankRequest& request = options_.replay.empty()
                                       ? requests_.at(unit_sizes_[i])[(n + i) % requests_.at(unit_sizes_[i]).size()]
                                       : options_.replay[replayed % options_.replay.size()];
      auto* call = new Call();
      call->unit = unit;
      call->candidates = request.candidates_size();
      if (options_.deadline > absl::ZeroDuration()) {
        call->context.set_deadline(std::chrono::system_clock::now() +
                                   absl::ToChronoNanoseconds(options_.deadline) -
                                   std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - scheduled));
      }
      Ranker::Stub& stub = *stubs_[(n + i) % stubs_.size()];
      ++outstanding_calls_;
      call->reader = stub.AsyncRank(&call->context, request, cq);
      call->reader->Finish(&call->response, &call->status, call);
    }
  }

  void CallDone(Call* call, grpc::CompletionQueue* cq) {
    const grpc::Status& status = call->status;
    --outstanding_calls_;
    Unit* unit = call->unit;
    const Clock::time_point now = Clock::now();
    const bool measured = InWindow(unit->scheduled);
    if (measured) results_.AddCall(status.error_code(), Seconds(now - unit->scheduled), call->candidates);
    if (!status.ok()) unit->failed = true;
    delete call;
    if (--unit->remaining > 0) return;
    if (measured && options_.feed_candidates > 0) results_.AddFeed(!unit->failed, Seconds(now - unit->scheduled));
    delete unit;
    if (options_.rate == 0 && !stopping_) StartUnit(Clock::now(), cq);
    absl::MutexLock lock(&mu_);
    --units_in_flight_;
  }

  const Options options_;
  const std::vector<std::unique_ptr<Ranker::Stub>> stubs_;
  std::map<int, std::vector<RankRequest>> requests_;  // by candidates per call
  std::vector<int> unit_sizes_;                       // candidates of each call of a unit
  Clock::time_point window_begin_, window_end_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_call_{0};
  std::atomic<int64_t> outstanding_calls_{0};
  std::vector<std::unique_ptr<grpc::CompletionQueue>> queues_;
  uint64_t next_queue_ = 0;  // the open loop's round-robin over queues_
  absl::Mutex mu_;
  int64_t units_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  Results results_;
};

// Returns the first invalid flag's complaint, or "".
std::string CheckFlags() {
  if (absl::GetFlag(FLAGS_target).empty()) return "--target is required";
  if (absl::GetFlag(FLAGS_channels) < 1 || absl::GetFlag(FLAGS_channels) > 256) {
    return "--channels must be in [1, 256]";
  }
  const int candidates = absl::GetFlag(FLAGS_candidates);
  if (candidates < 0) return "--candidates must not be negative";
  const int feed = absl::GetFlag(FLAGS_feed_candidates);
  if (feed < 0) return "--feed_candidates must not be negative";
  if (feed > 0 && candidates == 0) return "--feed_candidates needs --candidates of at least 1";
  if (absl::GetFlag(FLAGS_rate) < 0) return "--rate must not be negative";
  if (absl::GetFlag(FLAGS_rate) == 0 && absl::GetFlag(FLAGS_concurrency) < 1) {
    return "--concurrency must be at least 1";
  }
  const std::string arrivals = absl::GetFlag(FLAGS_arrivals);
  if (arrivals != "poisson" && arrivals != "uniform") return "--arrivals must be poisson or uniform";
  if (absl::GetFlag(FLAGS_deadline) < absl::ZeroDuration()) return "--deadline must not be negative";
  if (absl::GetFlag(FLAGS_warmup) < absl::ZeroDuration()) return "--warmup must not be negative";
  if (absl::GetFlag(FLAGS_duration) <= absl::ZeroDuration()) return "--duration must be positive";
  if (absl::GetFlag(FLAGS_requests) < 1) return "--requests must be at least 1";
  if (absl::GetFlag(FLAGS_threads) < 1 || absl::GetFlag(FLAGS_threads) > 64) return "--threads must be in [1, 64]";
  if (absl::GetFlag(FLAGS_max_outstanding) < 1) return "--max_outstanding must be at least 1";
  if (!absl::GetFlag(FLAGS_replay).empty() && feed > 0) return "--replay sends the captured calls: not with --feed_candidates";
  if (absl::GetFlag(FLAGS_replay_calls) < 1) return "--replay_calls must be at least 1";
  if (absl::GetFlag(FLAGS_replay_max_gap) <= absl::ZeroDuration()) return "--replay_max_gap must be positive";
  return "";
}

int Main() {
  if (std::string problem = CheckFlags(); !problem.empty()) {
    std::fprintf(stderr, "masknet_loadgen: invalid flags: %s\n", problem.c_str());
    return 2;
  }
  auto credentials = ChannelCredentialsFromFlags();
  if (!credentials.ok()) {
    std::fprintf(stderr, "masknet_loadgen: %s\n", std::string(credentials.status().message()).c_str());
    return 2;
  }
  std::vector<std::unique_ptr<Ranker::Stub>> stubs;
  const std::vector<std::string> targets = absl::GetFlag(FLAGS_target);
  // Round-robin over targets first, then over each target's channels.
  for (int c = 0; c < absl::GetFlag(FLAGS_channels); ++c) {
    for (const std::string& target : targets) {
      grpc::ChannelArguments args;
      args.SetMaxSendMessageSize(-1);
      args.SetMaxReceiveMessageSize(-1);
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
      AddTlsChannelArguments(args);
      stubs.push_back(Ranker::NewStub(grpc::CreateCustomChannel(target, *credentials, args)));
    }
  }
  serving::v1::GetModelInfoRequest info_request;
  info_request.set_model_name(absl::GetFlag(FLAGS_model));
  info_request.set_model_version(absl::GetFlag(FLAGS_version));
  info_request.set_model_version_label(absl::GetFlag(FLAGS_version_label));
  serving::v1::ModelInfo info;
  grpc::ClientContext info_context;
  info_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  if (grpc::Status s = stubs[0]->GetModelInfo(&info_context, info_request, &info); !s.ok()) {
    std::fprintf(stderr, "masknet_loadgen: GetModelInfo from %s failed: %s: %s\n", targets[0].c_str(),
                 CodeName(s.error_code()).c_str(), s.error_message().c_str());
    return 1;
  }

  LoadGenerator::Options options;
  options.candidates = absl::GetFlag(FLAGS_candidates);
  options.feed_candidates = absl::GetFlag(FLAGS_feed_candidates);
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.rate = absl::GetFlag(FLAGS_rate);
  options.poisson = absl::GetFlag(FLAGS_arrivals) == "poisson";
  options.deadline = absl::GetFlag(FLAGS_deadline);
  options.max_outstanding = absl::GetFlag(FLAGS_max_outstanding);
  options.seed = absl::GetFlag(FLAGS_seed);
  if (const std::string dir = absl::GetFlag(FLAGS_replay); !dir.empty()) {
    auto captured = ReadCaptureDir(dir, absl::GetFlag(FLAGS_replay_calls));
    if (!captured.ok()) {
      std::fprintf(stderr, "masknet_loadgen: --replay: %s\n", std::string(captured.status().message()).c_str());
      return 1;
    }
    if (captured->empty()) {
      std::fprintf(stderr, "masknet_loadgen: --replay: no captured calls in '%s'\n", dir.c_str());
      return 1;
    }
    // Files hold calls in the order they were answered: send them in the order they arrived.
    std::stable_sort(captured->begin(), captured->end(), [](const auto& a, const auto& b) {
      return a.arrival_unix_micros() < b.arrival_unix_micros();
    });
    const int64_t first = (*captured)[0].arrival_unix_micros();
    const double max_gap = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_replay_max_gap));
    double offset = 0;  // from the first call, silences longer than --replay_max_gap cut
    int64_t previous = first;
    for (serving::v1::CapturedCall& call : *captured) {
      RankRequest& request = *call.mutable_request();
      if (!absl::GetFlag(FLAGS_model).empty()) request.set_model_name(absl::GetFlag(FLAGS_model));
      if (absl::GetFlag(FLAGS_version) != 0 || !absl::GetFlag(FLAGS_version_label).empty()) {
        request.set_model_version(absl::GetFlag(FLAGS_version));
        request.set_model_version_label(absl::GetFlag(FLAGS_version_label));
      }
      offset += std::min(max_gap, std::max<double>(0, (call.arrival_unix_micros() - previous) * 1e-6));
      previous = call.arrival_unix_micros();
      options.replay_offsets.push_back(offset);
      options.replay.push_back(std::move(request));
    }
    if (options.rate == 0 && options.replay_offsets.back() == 0) {
      std::fprintf(stderr, "masknet_loadgen: --replay: the captured calls arrived at one instant (or there is one): "
                           "give --rate\n");
      return 2;
    }
  }
  LoadGenerator generator(options, std::move(stubs), info, absl::GetFlag(FLAGS_requests),
                          absl::GetFlag(FLAGS_threads));
  double wall = 0, cpu = 0;
  generator.Run(absl::GetFlag(FLAGS_warmup), absl::GetFlag(FLAGS_duration), &wall, &cpu);
  const Results::Snapshot r = generator.results().Take();

  // Summary.
  int64_t calls = 0, ok = 0;
  for (const auto& [code, latencies] : r.calls) calls += latencies.size();
  const auto ok_it = r.calls.find(grpc::StatusCode::OK);
  if (ok_it != r.calls.end()) ok = ok_it->second.size();
  const Percentiles ok_latency = Percentiles::Of(ok_it != r.calls.end() ? ok_it->second : std::vector<double>{});
  std::string mode = options.rate > 0 ? absl::StrFormat("open loop, %.1f %s/s", options.rate,
                                                        options.feed_candidates ? "feeds" : "calls")
                                      : absl::StrCat("closed loop, concurrency ", options.concurrency);
  if (!options.replay.empty()) {
    mode = absl::StrCat("replay of ", options.replay.size(), " captured calls, ",
                        options.rate > 0 ? absl::StrFormat("%.1f calls/s", options.rate) : "at their recorded pace");
  }
  std::printf("masknet_loadgen: %s; %d candidates/call%s; %s measured\n", mode.c_str(), options.candidates,
              options.feed_candidates ? absl::StrCat(", feeds of ", options.feed_candidates).c_str() : "",
              absl::FormatDuration(absl::GetFlag(FLAGS_duration)).c_str());
  std::printf("  calls: %ld sent, %ld ok: %.1f calls/s, %.0f candidates/s\n", static_cast<long>(calls),
              static_cast<long>(ok), ok / wall, r.ok_candidates / wall);
  std::printf("  latency of ok calls: %s\n", ok_latency.Text().c_str());
  for (const auto& [code, latencies] : r.calls) {
    if (code == grpc::StatusCode::OK) continue;
    std::printf("  %s: %zu calls; %s\n", CodeName(code).c_str(), latencies.size(),
                Percentiles::Of(latencies).Text().c_str());
  }
  if (r.dropped > 0) std::printf("  dropped by the load generator (--max_outstanding): %ld units\n", static_cast<long>(r.dropped));
  Percentiles feed_latency;
  if (options.feed_candidates > 0) {
    feed_latency = Percentiles::Of(r.feeds_ok);
    std::printf("  feeds: %zu ok, %zu failed: %.1f feeds/s; latency of ok feeds: %s\n", r.feeds_ok.size(),
                r.feeds_failed.size(), r.feeds_ok.size() / wall, feed_latency.Text().c_str());
  }
  std::printf("  load generator CPU: %.2f cores\n", cpu / wall);

  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::vector<std::string> errors;
    for (const auto& [code, latencies] : r.calls) {
      if (code == grpc::StatusCode::OK) continue;
      errors.push_back(absl::StrFormat(R"("%s": {"count": %d, "latency_ms": %s})", CodeName(code),
                                       latencies.size(), Percentiles::Of(latencies).Json()));
    }
    std::string json = absl::StrFormat(
        R"({"mode": "%s", "concurrency": %d, "rate": %.3f, "candidates_per_call": %d, "feed_candidates": %d,)"
        R"( "deadline_ms": %.3f, "duration_s": %.3f,)"
        R"( "calls": {"sent": %d, "ok": %d, "ok_per_s": %.3f}, "candidates_per_s": %.3f,)"
        R"( "latency_ms": %s, "errors": {%s}, "dropped_units": %d,)",
        !options.replay.empty() ? "replay" : options.rate > 0 ? "open" : "closed", options.concurrency, options.rate, options.candidates,
        options.feed_candidates, absl::ToDoubleMilliseconds(options.deadline), wall, calls, ok, ok / wall,
        r.ok_candidates / wall, ok_latency.Json(), absl::StrJoin(errors, ", "), r.dropped);
    if (options.feed_candidates > 0) {
      absl::StrAppendFormat(&json, R"( "feeds": {"ok": %d, "failed": %d, "ok_per_s": %.3f, "latency_ms": %s},)",
                            r.feeds_ok.size(), r.feeds_failed.size(), r.feeds_ok.size() / wall,
                            feed_latency.Json());
    }
    absl::StrAppendFormat(&json, R"( "loadgen_cpu_seconds": %.3f, "loadgen_cpu_cores": %.3f})", cpu, cpu / wall);
    std::ofstream out(path);
    out << json << "\n";
    if (!out) {
      std::fprintf(stderr, "masknet_loadgen: cannot write %s\n", path.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Drives Rank traffic at masknet_servers and reports throughput, latency and errors.\n\n"
      "  masknet_loadgen --target=HOST:PORT[,HOST:PORT...] [--concurrency=N | --rate=R] [flags]");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "masknet_loadgen.cc") || absl::EndsWith(file, "tls_flags.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  return masknet::Main();
}
