#include "server/call_recorder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/logging.h"

namespace masknet {

void CallRecorder::Record(VersionMetrics* version_metrics, const Servable* servable, const absl::Status& status,
                          int64_t candidates, absl::Duration latency) {
  if (version_metrics != nullptr) {
    version_metrics->CountCall(status.code(), candidates, latency);
  } else if (metrics_ != nullptr) {
    metrics_->CountUnresolvedCall(status.code(), latency);
  }
  if (status.code() == absl::StatusCode::kInternal) {
    Log(Severity::kError, absl::StrCat("Rank call failed: ", status.message()),
        {{"event", "internal_error"}, {"model", servable != nullptr ? servable->name : ""},
         {"version", servable != nullptr ? absl::StrCat(servable->version) : ""}});
  } else if (status.code() == absl::StatusCode::kResourceExhausted) {
    RecordOverload(servable, status);
  }
}

void CallRecorder::RecordOverload(const Servable* servable, const absl::Status& status) {
  const absl::Time now = absl::Now();
  int64_t refused;
  {
    absl::MutexLock lock(&mu_);
    ++refused_;
    if (now - last_log_ < kOverloadLogPeriod) return;
    last_log_ = now;
    refused = std::exchange(refused_, 0);
  }
  Log(Severity::kWarning,
      absl::StrCat("overloaded: refused ", refused, " call(s) with RESOURCE_EXHAUSTED since the last report; latest: ",
                   status.message()),
      {{"event", "overload"}, {"model", servable != nullptr ? servable->name : ""}, {"refused", absl::StrCat(refused)}});
}

}  // namespace masknet
