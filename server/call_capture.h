#ifndef MASKNET_SERVER_CALL_CAPTURE_H_
#define MASKNET_SERVER_CALL_CAPTURE_H_

// Captures a sample of Rank calls (request, response, the version that
// answered, when) to files, off the request path, for replay
// (masknet_loadgen --replay) and offline comparison (masknet_compare).
//
// A call's worker serializes the record and hands it over; a writer thread
// appends it to the current file (server/capture_file.h), which is renamed
// into place and a new one begun once it holds file_bytes; the oldest files
// are deleted so that all of them together, the current one full, hold at
// most max_bytes (files left by an earlier run count too). When the writer falls behind by
// file_bytes, further records are dropped; when a write fails (a full disk),
// capture stops. Either way the calls go on, and the metrics count it.
//
// Thread-safe.

#include <atomic>
#include <cstdint>
#include <deque>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/metrics.h"

namespace masknet {

// Whether to take one event of many, each with probability `fraction`
// (>= 1: always; <= 0: never). Thread-safe: one generator per thread. The
// sampling of calls for capture and for shadow scoring.
bool Sampled(double fraction);

class CallCapture {
 public:
  // Largest capture_file_bytes: readers hold a file in memory, and protobuf
  // reads streams below 2 GiB.
  static constexpr int64_t kMaxFileBytes = int64_t{1} << 30;

  struct Options {
    // Where capture files go; created if missing. Empty: no capture.
    std::string dir;
    // Share of the calls answered OK that are captured, in (0, 1].
    double fraction = 0.01;
    // Most bytes all capture files in `dir` hold; the oldest go beyond it.
    int64_t max_bytes = int64_t{1} << 30;
    // A file is complete, and a new one begun, once it holds this much; also
    // the most bytes of records handed to the writer and not yet written. At
    // most max_bytes and kMaxFileBytes.
    int64_t file_bytes = int64_t{64} << 20;

    // INVALID_ARGUMENT naming the first option out of its bounds.
    absl::Status Validate() const;
  };

  // Creates `options.dir` if missing, reads what earlier runs left there,
  // and begins a file (so that a directory that cannot be written fails
  // here). Errors: INVALID_ARGUMENT (options), UNAVAILABLE naming the
  // directory. `metrics` (may be null) must outlive the capture.
  static absl::StatusOr<std::unique_ptr<CallCapture>> Start(const Options& options, ServerMetrics* metrics);

  // Writes the records handed over, completes the file, stops the writer.
  ~CallCapture();
  CallCapture(const CallCapture&) = delete;
  CallCapture& operator=(const CallCapture&) = delete;

  // Whether to capture a call (with probability `fraction`).
  bool Sample() const;

  // Hands one record (AppendCaptureRecord) to the writer; never waits for
  // the disk. Dropped (and counted) when the writer is file_bytes behind or
  // capture has stopped.
  void Add(std::string record) ABSL_LOCKS_EXCLUDED(mu_);

  // Whether capture has stopped after a failed write.
  bool stopped() const { return stopped_.load(std::memory_order_relaxed); }

 private:
  CallCapture(const Options& options, ServerMetrics* metrics) : options_(options), metrics_(metrics) {}

  void WriterLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Writer thread only, below.
  absl::Status Write(const std::string& record);
  absl::Status BeginFile();
  absl::Status CompleteFile();
  // Deletes the oldest complete files until they and a full current file
  // fit in max_bytes.
  void Evict();
  void Stop(const absl::Status& why);

  const Options options_;
  ServerMetrics* const metrics_;
  std::atomic<bool> stopped_{false};

  absl::Mutex mu_;
  absl::CondVar wake_;
  std::deque<std::string> pending_ ABSL_GUARDED_BY(mu_);
  int64_t pending_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;

  // The writer's (and Start's, before it runs).
  std::ofstream file_;
  std::string part_path_;
  int64_t file_written_ = 0;
  std::deque<std::pair<std::string, int64_t>> complete_;  // oldest first, with sizes
  int64_t complete_bytes_ = 0;                            // of complete_
  int64_t sequence_ = 0;
  std::thread writer_;
};

}  // namespace masknet

#endif  // MASKNET_SERVER_CALL_CAPTURE_H_
