#include "server/metrics.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "model/limits.h"
#include "prometheus/text_serializer.h"
#include "server/memory_release.h"

namespace masknet {
namespace {

using prometheus::Histogram;

// 0.5 ms to 10 s: a call, its queue wait and its batch's forward pass.
Histogram::BucketBoundaries SecondsBuckets() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10};
}

// Candidates per batch: powers of two up to the largest batch a model may
// be built for.
Histogram::BucketBoundaries BatchSizeBuckets() {
  Histogram::BucketBoundaries b;
  for (double x = 1; x <= limits::kMaxBatchSize; x *= 2) b.push_back(x);
  return b;
}

// Score histogram bounds: finer near 0, where click probabilities live.
const Histogram::BucketBoundaries& ScoreBuckets() {
  static const Histogram::BucketBoundaries* const b = new Histogram::BucketBoundaries{
      0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99};
  return *b;
}

// |canary - stable| of one candidate's score: 1e-4 (float noise of a
// re-export) to 1 (a different model).
const Histogram::BucketBoundaries& DifferenceBuckets() {
  static const Histogram::BucketBoundaries* const b =
      new Histogram::BucketBoundaries{0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1};
  return *b;
}

// A histogram's bucket bounds, and the same padded with +Inf to a power of
// two for BucketOf.
struct Buckets {
  explicit Buckets(const Histogram::BucketBoundaries& b) : bounds(b), padded(b) {
    size_t n = 1;
    while (n < bounds.size()) n *= 2;
    padded.resize(n, HUGE_VAL);
  }
  Histogram::BucketBoundaries bounds;
  std::vector<double> padded;
};

const Buckets& ScoreBucketsPadded() {
  static const Buckets* const b = new Buckets(ScoreBuckets());
  return *b;
}
const Buckets& DifferenceBucketsPadded() {
  static const Buckets* const b = new Buckets(DifferenceBuckets());
  return *b;
}

// The bucket of `x` (le): how many bounds are below it, by a binary search
// whose steps are conditional moves, not branches that scores in random
// order would mispredict. A NaN lands in the first bucket.
size_t BucketOf(const Buckets& buckets, double x) {
  const double* const first = buckets.padded.data();
  const double* base = first;
  for (size_t n = buckets.padded.size(); n > 1;) {
    const size_t half = n / 2;
    base = base[half - 1] < x ? base + half : base;
    n -= half;
  }
  return static_cast<size_t>(base - first) + (*base < x);
}

// Adds `values` (one row per candidate of `stride` values, column `column`)
// to `histogram` with one update.
void ObserveColumn(prometheus::Histogram* histogram, const Buckets& buckets, absl::Span<const float> values,
                   int stride, int column) {
  std::vector<double> counts(buckets.bounds.size() + 1, 0.0);
  double sum = 0;
  for (size_t i = column; i < values.size(); i += stride) {
    counts[BucketOf(buckets, values[i])] += 1;
    sum += values[i];
  }
  histogram->ObserveMultiple(counts, sum);
}

// absl's codes share gRPC's numbers and names (ToGrpcStatus relies on it);
// an unknown number counts as UNKNOWN.
int CodeIndex(absl::StatusCode code) {
  const int i = static_cast<int>(code);
  return i >= 0 && i < VersionMetrics::kStatusCodes ? i : static_cast<int>(absl::StatusCode::kUnknown);
}

}  // namespace

VersionMetrics::VersionMetrics(ServerMetrics* owner, const std::string& model, const std::string& version,
                               bool queued, const std::vector<std::string>& tasks, const FeatureSchema* schema)
    : owner_(owner), model_(model), version_(version) {
  const prometheus::Labels labels = {{"model", model}, {"version", version}};
  latency_ = &owner->latency_.Add(labels, SecondsBuckets());
  if (!queued) return;
  queue_wait_ = &owner->queue_wait_.Add(labels, SecondsBuckets());
  compute_ = &owner->compute_.Add(labels, SecondsBuckets());
  batch_size_ = &owner->batch_size_.Add(labels, BatchSizeBuckets());
  queued_ = &owner->queued_.Add(labels);
  for (const std::string& task : tasks) {
    scores_.push_back(&owner->scores_.Add({{"model", model}, {"version", version}, {"task", task}}, ScoreBuckets()));
  }
  if (schema == nullptr) return;
  for (size_t i = 0; i < schema->fields().size(); ++i) {
    const FieldSpec& field = schema->fields()[i];
    for (int p = 0; p < kInputProblems; ++p) {
      const auto problem = static_cast<InputProblem>(p);
      if (!CanHaveProblem(field, problem)) continue;
      input_problems_.emplace_back(
          i * kInputProblems + p, &owner->input_problems_.Add({{"model", model},
                                                               {"version", version},
                                                               {"field", field.config.name()},
                                                               {"problem", InputProblemName(problem)}}));
    }
  }
}

void VersionMetrics::RemoveSeries() {
  for (size_t i = 0; i < calls_.size(); ++i) {
    if (prometheus::Counter* c = calls_[i].load()) owner_->calls_.Remove(c);
    if (prometheus::Counter* c = candidates_[i].load()) owner_->candidates_.Remove(c);
  }
  owner_->latency_.Remove(latency_);
  if (queued_ == nullptr) return;
  owner_->queue_wait_.Remove(queue_wait_);
  owner_->compute_.Remove(compute_);
  owner_->batch_size_.Remove(batch_size_);
  owner_->queued_.Remove(queued_);
  for (prometheus::Histogram* h : scores_) owner_->scores_.Remove(h);
  for (const auto& [index, counter] : input_problems_) owner_->input_problems_.Remove(counter);
}

std::pair<prometheus::Counter*, prometheus::Counter*> VersionMetrics::CountersFor(absl::StatusCode code) {
  const int i = CodeIndex(code);
  prometheus::Counter* calls = calls_[i].load(std::memory_order_acquire);
  if (calls == nullptr) {
    absl::MutexLock lock(&mu_);
    calls = calls_[i].load();
    if (calls == nullptr) {
      const prometheus::Labels labels = {
          {"model", model_}, {"version", version_}, {"code", absl::StatusCodeToString(static_cast<absl::StatusCode>(i))}};
      candidates_[i] = &owner_->candidates_.Add(labels);
      calls = &owner_->calls_.Add(labels);
      calls_[i].store(calls, std::memory_order_release);
    }
  }
  return {calls, candidates_[i].load()};
}

void VersionMetrics::CountCall(absl::StatusCode code, int64_t candidates, absl::Duration latency) {
  const auto [calls, candidate_counter] = CountersFor(code);
  calls->Increment();
  candidate_counter->Increment(static_cast<double>(candidates));
  latency_->Observe(absl::ToDoubleSeconds(latency));
}

void VersionMetrics::ObserveQueueWait(absl::Duration wait) { queue_wait_->Observe(absl::ToDoubleSeconds(wait)); }

void VersionMetrics::ObserveBatch(int64_t candidates, absl::Duration compute) {
  batch_size_->Observe(static_cast<double>(candidates));
  compute_->Observe(absl::ToDoubleSeconds(compute));
}

void VersionMetrics::ObserveScores(absl::Span<const float> scores) {
  const int tasks = static_cast<int>(scores_.size());
  for (int task = 0; task < tasks; ++task) ObserveColumn(scores_[task], ScoreBucketsPadded(), scores, tasks, task);
}

void VersionMetrics::ObserveInputProblems(const InputCounts& counts) {
  for (const auto& [index, counter] : input_problems_) {
    if (index < counts.size() && counts[index] > 0) counter->Increment(static_cast<double>(counts[index]));
  }
}

void VersionMetrics::SetQueuedCandidates(int64_t candidates) { queued_->Set(static_cast<double>(candidates)); }

ShadowMetrics::ShadowMetrics(ServerMetrics* owner, const std::string& model, int64_t stable_version,
                             int64_t canary_version, const std::vector<std::string>& stable_tasks,
                             const std::vector<std::string>& canary_tasks)
    : owner_(owner) {
  const std::string stable = absl::StrCat(stable_version), canary = absl::StrCat(canary_version);
  const prometheus::Labels pair = {{"model", model}, {"stable_version", stable}, {"canary_version", canary}};
  for (const auto& [outcome, index] : {std::pair{"scored", Outcome::kScored}, std::pair{"dropped", Outcome::kDropped},
                                       std::pair{"failed", Outcome::kFailed}}) {
    prometheus::Labels labels = pair;
    labels["outcome"] = outcome;
    calls_[static_cast<int>(index)] = &owner->shadow_calls_.Add(labels);
  }
  for (size_t i = 0; i < stable_tasks.size(); ++i) {
    const auto found = std::find(canary_tasks.begin(), canary_tasks.end(), stable_tasks[i]);
    if (found == canary_tasks.end()) continue;
    tasks_.emplace_back(static_cast<int>(i), static_cast<int>(found - canary_tasks.begin()));
    prometheus::Labels labels = pair;
    labels["task"] = stable_tasks[i];
    difference_.push_back(&owner->shadow_difference_.Add(labels, DifferenceBuckets()));
    labels["scored_by"] = "stable";
    stable_scores_.push_back(&owner->shadow_scores_.Add(labels, ScoreBuckets()));
    labels["scored_by"] = "canary";
    canary_scores_.push_back(&owner->shadow_scores_.Add(labels, ScoreBuckets()));
  }
}

void ShadowMetrics::RemoveSeries() {
  for (prometheus::Counter* c : calls_) owner_->shadow_calls_.Remove(c);
  for (prometheus::Histogram* h : difference_) owner_->shadow_difference_.Remove(h);
  for (prometheus::Histogram* h : stable_scores_) owner_->shadow_scores_.Remove(h);
  for (prometheus::Histogram* h : canary_scores_) owner_->shadow_scores_.Remove(h);
}

void ShadowMetrics::ObserveScored(absl::Span<const float> stable, int stable_tasks, absl::Span<const float> canary,
                                  int canary_tasks) {
  Count(Outcome::kScored);
  const size_t candidates = stable.size() / stable_tasks;
  std::vector<float> difference(candidates);
  for (size_t t = 0; t < tasks_.size(); ++t) {
    const auto [s, c] = tasks_[t];
    ObserveColumn(stable_scores_[t], ScoreBucketsPadded(), stable, stable_tasks, s);
    ObserveColumn(canary_scores_[t], ScoreBucketsPadded(), canary, canary_tasks, c);
    for (size_t i = 0; i < candidates; ++i) {
      difference[i] = std::abs(canary[i * canary_tasks + c] - stable[i * stable_tasks + s]);
    }
    ObserveColumn(difference_[t], DifferenceBucketsPadded(), difference, 1, 0);
  }
}

ServerMetrics::ServerMetrics()
    : calls_(prometheus::BuildCounter()
                 .Name("masknet_rank_calls_total")
                 .Help("Rank calls answered, by model version and gRPC status code.")
                 .Register(registry_)),
      candidates_(prometheus::BuildCounter()
                      .Name("masknet_rank_candidates_total")
                      .Help("Candidates in the Rank calls answered, by model version and gRPC status code.")
                      .Register(registry_)),
      latency_(prometheus::BuildHistogram()
                   .Name("masknet_rank_latency_seconds")
                   .Help("Time from a Rank call's arrival to its answer, in the server.")
                   .Register(registry_)),
      queue_wait_(prometheus::BuildHistogram()
                      .Name("masknet_queue_wait_seconds")
                      .Help("Time from a call's acceptance into its model version's queue to its first batch.")
                      .Register(registry_)),
      compute_(prometheus::BuildHistogram()
                   .Name("masknet_batch_compute_seconds")
                   .Help("Time of one batch's forward pass, feature assembly to scores.")
                   .Register(registry_)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("masknet_batch_size_candidates")
                      .Help("Candidates in one batch.")
                      .Register(registry_)),
      queued_(prometheus::BuildGauge()
                  .Name("masknet_queued_candidates")
                  .Help("Candidates accepted and not yet in a batch, by model version.")
                  .Register(registry_)),
      scores_(prometheus::BuildHistogram()
                  .Name("masknet_scores")
                  .Help("Scores served (probabilities), by model version and task.")
                  .Register(registry_)),
      input_problems_(prometheus::BuildCounter()
                          .Name("masknet_input_problems_total")
                          .Help("Feature values of the calls scored that feature assembly mended or found outside "
                                "the model's range, by field and problem: non_finite_replaced (NaN or Inf replaced "
                                "by 0), clamped (changed by the field's clamp), out_of_vocabulary (an id outside "
                                "[0, num_buckets) of a MODULO field, wrapped), empty_ids (an empty id list).")
                          .Register(registry_)),
      versions_loaded_(prometheus::BuildGauge()
                           .Name("masknet_model_versions_loaded")
                           .Help("Versions of a model loaded and serving.")
                           .Register(registry_)),
      model_loads_(prometheus::BuildCounter()
                       .Name("masknet_model_loads_total")
                       .Help("Attempts to load a model version, by result (ok or failed).")
                       .Register(registry_)),
      model_unloads_(prometheus::BuildCounter()
                         .Name("masknet_model_unloads_total")
                         .Help("Model versions unloaded.")
                         .Register(registry_)),
      version_labels_(prometheus::BuildGauge()
                          .Name("masknet_model_version_label")
                          .Help("The version a label of a model names (its rollout.pbtxt).")
                          .Register(registry_)),
      label_errors_(prometheus::BuildCounter()
                        .Name("masknet_model_label_errors_total")
                        .Help("Rollout files whose labels could not be applied (each distinct error once).")
                        .Register(registry_)),
      shadow_fraction_(prometheus::BuildGauge()
                           .Name("masknet_model_shadow_fraction")
                           .Help("The shadow_fraction of a model's rollout.pbtxt in force: the share of the calls "
                                 "answered by `stable` that `canary` also scores.")
                           .Register(registry_)),
      shadow_calls_(prometheus::BuildCounter()
                        .Name("masknet_shadow_calls_total")
                        .Help("Calls answered by a model's stable version and sampled for shadow scoring by its "
                              "canary, by outcome: scored, dropped (no worker free in time, or the shadow queue "
                              "full), failed (the canary could not score them).")
                        .Register(registry_)),
      shadow_scores_(prometheus::BuildHistogram()
                         .Name("masknet_shadow_scores")
                         .Help("Scores of the shadowed calls' candidates, by task, as stable answered them and "
                               "as canary scored them (scored_by).")
                         .Register(registry_)),
      shadow_difference_(prometheus::BuildHistogram()
                             .Name("masknet_shadow_score_difference")
                             .Help("|canary - stable| of each shadowed candidate's score, by task.")
                             .Register(registry_)) {
  ready_ = &prometheus::BuildGauge()
                .Name("masknet_ready")
                .Help("1 when a model is loaded and the server is not draining, else 0.")
                .Register(registry_)
                .Add({});
  workers_ = &prometheus::BuildGauge()
                  .Name("masknet_scoring_workers")
                  .Help("Scoring threads shared by every model.")
                  .Register(registry_)
                  .Add({});
  calls_in_flight_ = &prometheus::BuildGauge()
                          .Name("masknet_calls_in_flight")
                          .Help("Rank calls received and not yet answered, across every model "
                                "(--max_calls_in_flight bounds it).")
                          .Register(registry_)
                          .Add({});
  auto& captured = prometheus::BuildCounter()
                       .Name("masknet_capture_calls_total")
                       .Help("Calls sampled for capture (--capture_dir), by result: written, or dropped (the "
                             "writer behind by --capture_file_bytes, or capture stopped).")
                       .Register(registry_);
  capture_written_ = &captured.Add({{"result", "written"}});
  capture_dropped_ = &captured.Add({{"result", "dropped"}});
  capture_errors_ = &prometheus::BuildCounter()
                         .Name("masknet_capture_errors_total")
                         .Help("Capture writes that failed (a full disk); capture stops, calls go on.")
                         .Register(registry_)
                         .Add({});
  heap_in_use_ = &prometheus::BuildGauge()
                      .Name("masknet_heap_in_use_bytes")
                      .Help("Heap memory in use (malloc's view, every arena).")
                      .Register(registry_)
                      .Add({});
  heap_free_ = &prometheus::BuildGauge()
                    .Name("masknet_heap_free_bytes")
                    .Help("Heap memory freed and kept by malloc, resident or not; beyond "
                          "--max_idle_heap_bytes it is returned to the system after a burst.")
                    .Register(registry_)
                    .Add({});
  resident_memory_ = &prometheus::BuildGauge()
                          .Name("process_resident_memory_bytes")
                          .Help("Resident memory size in bytes.")
                          .Register(registry_)
                          .Add({});
  virtual_memory_ = &prometheus::BuildGauge()
                         .Name("process_virtual_memory_bytes")
                         .Help("Virtual memory size in bytes.")
                         .Register(registry_)
                         .Add({});
  start_time_ = &prometheus::BuildGauge()
                     .Name("process_start_time_seconds")
                     .Help("Start time of the process since unix epoch in seconds.")
                     .Register(registry_)
                     .Add({});
  cpu_seconds_ = &prometheus::BuildCounter()
                      .Name("process_cpu_seconds_total")
                      .Help("Total user and system CPU time spent in seconds.")
                      .Register(registry_)
                      .Add({});
  start_time_->Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  unresolved_.reset(new VersionMetrics(this, "", "", /*queued=*/false, {}, nullptr));
}

std::shared_ptr<VersionMetrics> ServerMetrics::ForVersion(const std::string& model, int64_t version,
                                                          const std::vector<std::string>& tasks,
                                                          const FeatureSchema* schema) {
  absl::MutexLock lock(&mu_);
  const auto key = std::make_pair(model, version);
  std::weak_ptr<VersionMetrics>& slot = versions_[key];
  if (auto existing = slot.lock()) return existing;
  std::shared_ptr<VersionMetrics> made(
      new VersionMetrics(this, model, absl::StrCat(version), /*queued=*/true, tasks, schema),
      [this, key](VersionMetrics* m) { Release(versions_, key, m); });
  slot = made;
  for (auto it = versions_.begin(); it != versions_.end();) {  // forget released ones
    it = it->second.expired() ? versions_.erase(it) : std::next(it);
  }
  return made;
}

std::shared_ptr<ShadowMetrics> ServerMetrics::ForShadow(const std::string& model, int64_t stable_version,
                                                        int64_t canary_version,
                                                        const std::vector<std::string>& stable_tasks,
                                                        const std::vector<std::string>& canary_tasks) {
  absl::MutexLock lock(&mu_);
  const auto key = std::make_tuple(model, stable_version, canary_version);
  std::weak_ptr<ShadowMetrics>& slot = shadows_[key];
  if (auto existing = slot.lock()) return existing;
  std::shared_ptr<ShadowMetrics> made(
      new ShadowMetrics(this, model, stable_version, canary_version, stable_tasks, canary_tasks),
      [this, key](ShadowMetrics* m) { Release(shadows_, key, m); });
  slot = made;
  std::erase_if(shadows_, [](const auto& entry) { return entry.second.expired(); });
  return made;
}

template <typename T, typename Key>
void ServerMetrics::Release(std::map<Key, std::weak_ptr<T>>& slots, const Key& key, T* metrics) {
  {
    absl::MutexLock lock(&mu_);
    // A holder made since for the same labels shares the series (Family::Add
    // returns those that exist): they stay.
    const auto slot = slots.find(key);
    if (slot == slots.end() || slot->second.expired()) metrics->RemoveSeries();
  }
  delete metrics;
}

void ServerMetrics::CountUnresolvedCall(absl::StatusCode code, absl::Duration latency) {
  unresolved_->CountCall(code, 0, latency);
}

void ServerMetrics::CountRepositoryEvent(const RepositoryEvent& event) {
  switch (event.kind) {
    case RepositoryEvent::Kind::kLoaded:
      model_loads_.Add({{"model", event.name}, {"result", "ok"}}).Increment();
      break;
    case RepositoryEvent::Kind::kLoadFailed:
      model_loads_.Add({{"model", event.name}, {"result", "failed"}}).Increment();
      break;
    case RepositoryEvent::Kind::kUnloaded:
      model_unloads_.Add({{"model", event.name}}).Increment();
      break;
    case RepositoryEvent::Kind::kScanFailed:
      break;
    case RepositoryEvent::Kind::kLabelsRejected:
      label_errors_.Add({{"model", event.name}}).Increment();
      break;
    case RepositoryEvent::Kind::kLabelsChanged: {
      absl::MutexLock lock(&mu_);
      std::vector<prometheus::Gauge*>& gauges = version_labels_by_model_[event.name];
      for (prometheus::Gauge* gauge : gauges) version_labels_.Remove(gauge);
      gauges.clear();
      for (const auto& [label, version] : event.rollout.labels) {
        gauges.push_back(&version_labels_.Add({{"model", event.name}, {"label", label}}));
        gauges.back()->Set(static_cast<double>(version));
      }
      if (gauges.empty()) version_labels_by_model_.erase(event.name);
      prometheus::Gauge*& fraction = shadow_fraction_by_model_[event.name];
      if (event.rollout.shadow_fraction > 0) {
        if (fraction == nullptr) fraction = &shadow_fraction_.Add({{"model", event.name}});
        fraction->Set(event.rollout.shadow_fraction);
      } else {
        if (fraction != nullptr) shadow_fraction_.Remove(fraction);
        shadow_fraction_by_model_.erase(event.name);
      }
      break;
    }
  }
}

void ServerMetrics::SetVersionsLoaded(const std::map<std::string, int>& versions) {
  absl::MutexLock lock(&mu_);
  for (auto it = versions_loaded_by_model_.begin(); it != versions_loaded_by_model_.end();) {
    if (versions.contains(it->first)) {
      ++it;
    } else {
      versions_loaded_.Remove(it->second);
      it = versions_loaded_by_model_.erase(it);
    }
  }
  for (const auto& [model, count] : versions) {
    prometheus::Gauge*& gauge = versions_loaded_by_model_[model];
    if (gauge == nullptr) gauge = &versions_loaded_.Add({{"model", model}});
    gauge->Set(count);
  }
}

std::string ServerMetrics::Serialize() {
  {
    absl::MutexLock lock(&scrape_mu_);
    if (const ProcessMemory memory = CurrentProcessMemory(); memory.resident_bytes > 0) {
      virtual_memory_->Set(static_cast<double>(memory.virtual_bytes));
      resident_memory_->Set(static_cast<double>(memory.resident_bytes));
    }
    const HeapUsage heap = CurrentHeapUsage();
    heap_in_use_->Set(static_cast<double>(heap.in_use));
    heap_free_->Set(static_cast<double>(heap.free));
    rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) == 0) {
      const double cpu = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 + usage.ru_stime.tv_sec +
                         usage.ru_stime.tv_usec * 1e-6;
      if (cpu > reported_cpu_seconds_) {
        cpu_seconds_->Increment(cpu - reported_cpu_seconds_);
        reported_cpu_seconds_ = cpu;
      }
    }
  }
  return prometheus::TextSerializer().Serialize(registry_.Collect());
}

}  // namespace masknet
