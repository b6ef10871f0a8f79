#ifndef MASKNET_SERVER_CALL_RECORDER_H_
#define MASKNET_SERVER_CALL_RECORDER_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "loader/model_repository.h"
#include "server/metrics.h"

namespace masknet {

// What the Ranker service records of every answered call: metrics, and log
// lines for internal errors and (rate-limited) overload. Thread-safe.
class CallRecorder {
 public:
  // `metrics` (null: none) must outlive the recorder.
  explicit CallRecorder(ServerMetrics* metrics) : metrics_(metrics) {}

  CallRecorder(const CallRecorder&) = delete;
  CallRecorder& operator=(const CallRecorder&) = delete;

  // Records a call answered with `status`: into `version_metrics` when the
  // call found its model version (then `servable` is that version), else
  // into the server's unresolved-call counters.
  void Record(VersionMetrics* version_metrics, const Servable* servable, const absl::Status& status,
              int64_t candidates, absl::Duration latency) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Overload is logged when it starts, then at most every kOverloadLogPeriod
  // with the number of calls refused since.
  static constexpr absl::Duration kOverloadLogPeriod = absl::Seconds(10);

  void RecordOverload(const Servable* servable, const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);

  ServerMetrics* const metrics_;
  absl::Mutex mu_;
  absl::Time last_log_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace masknet

#endif  // MASKNET_SERVER_CALL_RECORDER_H_
