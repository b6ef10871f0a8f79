#ifndef MASKNET_SERVER_METRICS_H_
#define MASKNET_SERVER_METRICS_H_

// The server's Prometheus metrics (prometheus-cpp), in one registry.
//
// Names follow Prometheus conventions: a `masknet_` prefix, base units
// (seconds, bytes), `_total` counters; the process_* family is the standard
// one. Per model version series carry `model` and `version` labels and are
// removed when the version's last user lets go, so that months of daily
// versions do not pile up series. Calls that never reached a model version
// (an unknown model, a bad version number) count with model="" so that a
// client cannot create series with made-up names.
//
// Thread-safe.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loader/model_repository.h"
#include "model/feature_assembly.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace masknet {

class ServerMetrics;

// The series of one model version. Obtained from ServerMetrics::ForVersion;
// shared by the version's calls and queue.
class VersionMetrics {
 public:
  // Status codes counted, by number: absl's and gRPC's codes are 0 (OK)
  // to 16 (UNAUTHENTICATED).
  static constexpr int kStatusCodes = static_cast<int>(absl::StatusCode::kUnauthenticated) + 1;

  VersionMetrics(const VersionMetrics&) = delete;
  VersionMetrics& operator=(const VersionMetrics&) = delete;

  // A call answered with `code`, `candidates` candidates in it, `latency`
  // from its arrival to its answer.
  void CountCall(absl::StatusCode code, int64_t candidates, absl::Duration latency);
  // Time from a call's acceptance to its first batch.
  void ObserveQueueWait(absl::Duration wait);
  // One batch: its candidates and the forward pass's time.
  void ObserveBatch(int64_t candidates, absl::Duration compute);
  // The scores of one batch, one per task per candidate in the task order
  // ForVersion was given: one update of each task's histogram.
  void ObserveScores(absl::Span<const float> scores);
  // Whether the version counts input problems (ForVersion had a schema).
  bool counts_inputs() const { return !input_problems_.empty(); }
  // One batch's input problems (InputCounts of the schema ForVersion was
  // given): adds each non-zero count to its field's counter.
  void ObserveInputProblems(const InputCounts& counts);
  void SetQueuedCandidates(int64_t candidates);

 private:
  friend class ServerMetrics;
  // `queued`: whether the version has a queue (false for calls that never
  // reached a version: they get only call counts and latency).
  VersionMetrics(ServerMetrics* owner, const std::string& model, const std::string& version, bool queued,
                 const std::vector<std::string>& tasks, const FeatureSchema* schema);
  // Removes the series from the registry (ServerMetrics::Release does,
  // under its lock, unless a newer holder of the same labels shares them).
  void RemoveSeries();
  // The counters of calls and candidates answered with `code`, made on
  // first use.
  std::pair<prometheus::Counter*, prometheus::Counter*> CountersFor(absl::StatusCode code) ABSL_LOCKS_EXCLUDED(mu_);

  ServerMetrics* owner_;
  const std::string model_, version_;
  absl::Mutex mu_;  // guards creating the per-code counters
  std::array<std::atomic<prometheus::Counter*>, kStatusCodes> calls_{};
  std::array<std::atomic<prometheus::Counter*>, kStatusCodes> candidates_{};
  prometheus::Histogram* latency_;
  prometheus::Histogram* queue_wait_ = nullptr;  // these four: null when not `queued`
  prometheus::Histogram* compute_ = nullptr;
  prometheus::Histogram* batch_size_ = nullptr;
  prometheus::Gauge* queued_ = nullptr;
  std::vector<prometheus::Histogram*> scores_;  // by task; empty when not `queued`
  // (index into InputCounts, its counter), for every problem a field can have.
  std::vector<std::pair<size_t, prometheus::Counter*>> input_problems_;
};

// The series of shadow scoring between two versions of a model: the one
// labelled `stable`, which answers, and the one labelled `canary`, which
// scores a sample of the same calls in the background. Obtained from
// ServerMetrics::ForShadow; shared by the pair's shadow calls.
class ShadowMetrics {
 public:
  enum class Outcome { kScored = 0, kDropped = 1, kFailed = 2 };

  ShadowMetrics(const ShadowMetrics&) = delete;
  ShadowMetrics& operator=(const ShadowMetrics&) = delete;

  // The tasks both versions have, as (stable's index, canary's index), in
  // stable's task order.
  const std::vector<std::pair<int, int>>& tasks() const { return tasks_; }

  void Count(Outcome outcome) { calls_[static_cast<int>(outcome)]->Increment(); }
  // One call scored by both: `stable` holds stable_tasks scores per
  // candidate, `canary` canary_tasks per candidate, for the same candidates.
  // Updates, per task both have, the score histograms of each version and
  // the histogram of |canary - stable| per candidate.
  void ObserveScored(absl::Span<const float> stable, int stable_tasks, absl::Span<const float> canary,
                     int canary_tasks);

 private:
  friend class ServerMetrics;
  ShadowMetrics(ServerMetrics* owner, const std::string& model, int64_t stable_version, int64_t canary_version,
                const std::vector<std::string>& stable_tasks, const std::vector<std::string>& canary_tasks);
  // As VersionMetrics::RemoveSeries.
  void RemoveSeries();

  ServerMetrics* owner_;
  std::vector<std::pair<int, int>> tasks_;
  std::array<prometheus::Counter*, 3> calls_{};
  std::vector<prometheus::Histogram*> stable_scores_, canary_scores_, difference_;  // by common task
};

class ServerMetrics {
 public:
  ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The series of one model version: score histograms for `tasks`, and
  // input-problem counters for the fields of `schema` (none when null);
  // made on first use, removed when the last holder releases it.
  std::shared_ptr<VersionMetrics> ForVersion(const std::string& model, int64_t version,
                                             const std::vector<std::string>& tasks, const FeatureSchema* schema)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The shadow series of model `model`'s pair of versions, with each
  // version's task names; made on first use, removed when the last holder
  // releases it.
  std::shared_ptr<ShadowMetrics> ForShadow(const std::string& model, int64_t stable_version, int64_t canary_version,
                                           const std::vector<std::string>& stable_tasks,
                                           const std::vector<std::string>& canary_tasks) ABSL_LOCKS_EXCLUDED(mu_);

  // A call answered before it reached a model version.
  void CountUnresolvedCall(absl::StatusCode code, absl::Duration latency);

  // A repository event: counts loads by result, unloads and rejected labels;
  // sets the version-label gauges.
  void CountRepositoryEvent(const RepositoryEvent& event) ABSL_LOCKS_EXCLUDED(mu_);
  // Versions loaded now, by model; models missing from `versions` lose
  // their series.
  void SetVersionsLoaded(const std::map<std::string, int>& versions) ABSL_LOCKS_EXCLUDED(mu_);
  void SetReady(bool ready) { ready_->Set(ready ? 1 : 0); }
  void SetWorkers(int workers) { workers_->Set(workers); }
  void SetCallsInFlight(int64_t calls) { calls_in_flight_->Set(static_cast<double>(calls)); }
  // A sampled call's capture record: written, or dropped (the writer behind,
  // or capture stopped).
  void CountCapture(bool written) { (written ? capture_written_ : capture_dropped_)->Increment(); }
  // A capture write that failed (capture stops).
  void CountCaptureError() { capture_errors_->Increment(); }

  // The registry in Prometheus text format, after refreshing the process_*
  // series.
  std::string Serialize();

 private:
  friend class VersionMetrics;
  friend class ShadowMetrics;

  // The deleter of what ForVersion and ForShadow hand out: removes its
  // series unless `slots` already holds a newer holder of `key` (which
  // shares them), then deletes it.
  template <typename T, typename Key>
  void Release(std::map<Key, std::weak_ptr<T>>& slots, const Key& key, T* metrics) ABSL_LOCKS_EXCLUDED(mu_);

  prometheus::Registry registry_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Counter>& candidates_;
  prometheus::Family<prometheus::Histogram>& latency_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Histogram>& compute_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Gauge>& queued_;
  prometheus::Family<prometheus::Histogram>& scores_;
  prometheus::Family<prometheus::Counter>& input_problems_;
  prometheus::Family<prometheus::Gauge>& versions_loaded_;
  prometheus::Family<prometheus::Counter>& model_loads_;
  prometheus::Family<prometheus::Counter>& model_unloads_;
  prometheus::Family<prometheus::Gauge>& version_labels_;
  prometheus::Family<prometheus::Counter>& label_errors_;
  prometheus::Family<prometheus::Gauge>& shadow_fraction_;
  prometheus::Family<prometheus::Counter>& shadow_calls_;
  prometheus::Family<prometheus::Histogram>& shadow_scores_;
  prometheus::Family<prometheus::Histogram>& shadow_difference_;
  prometheus::Gauge* ready_;
  prometheus::Gauge* workers_;
  prometheus::Gauge* calls_in_flight_;
  prometheus::Counter* capture_written_;
  prometheus::Counter* capture_dropped_;
  prometheus::Counter* capture_errors_;
  prometheus::Gauge* heap_in_use_;
  prometheus::Gauge* heap_free_;
  prometheus::Gauge* resident_memory_;
  prometheus::Gauge* virtual_memory_;
  prometheus::Gauge* start_time_;
  prometheus::Counter* cpu_seconds_;
  double reported_cpu_seconds_ = 0;  // what cpu_seconds_ holds (a counter only adds)
  absl::Mutex scrape_mu_;            // one scrape at a time updates the process series

  absl::Mutex mu_;
  std::map<std::pair<std::string, int64_t>, std::weak_ptr<VersionMetrics>> versions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, prometheus::Gauge*> versions_loaded_by_model_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<prometheus::Gauge*>> version_labels_by_model_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, prometheus::Gauge*> shadow_fraction_by_model_ ABSL_GUARDED_BY(mu_);
  std::map<std::tuple<std::string, int64_t, int64_t>, std::weak_ptr<ShadowMetrics>> shadows_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<VersionMetrics> unresolved_;  // model="", version=""
};

}  // namespace masknet

#endif  // MASKNET_SERVER_METRICS_H_
