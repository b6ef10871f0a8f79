#include "server/call_capture.h"

#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/capture_file.h"
#include "server/logging.h"

namespace masknet {

namespace fs = std::filesystem;

absl::Status CallCapture::Options::Validate() const {
  if (!(fraction > 0 && fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("capture_fraction must be in (0, 1], got ", fraction));
  }
  if (file_bytes < 1 || file_bytes > kMaxFileBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("capture_file_bytes must be in [1, ", kMaxFileBytes, "], got ", file_bytes));
  }
  if (max_bytes < file_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("capture_max_bytes must be at least capture_file_bytes (",
                                                   file_bytes, "), got ", max_bytes));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CallCapture>> CallCapture::Start(const Options& options, ServerMetrics* metrics) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create capture_dir '", options.dir, "': ", ec.message()));
  std::unique_ptr<CallCapture> capture(new CallCapture(options, metrics));
  auto files = ListCaptureFiles(options.dir);
  if (!files.ok()) return files.status();
  for (const std::string& file : *files) {  // an earlier run's, complete or cut short: all count
    const int64_t size = static_cast<int64_t>(fs::file_size(file, ec));
    if (ec) continue;
    capture->complete_.emplace_back(file, size);
    capture->complete_bytes_ += size;
  }
  if (absl::Status s = capture->BeginFile(); !s.ok()) return s;
  capture->Evict();
  capture->writer_ = std::thread([c = capture.get()] { c->WriterLoop(); });
  return capture;
}

CallCapture::~CallCapture() {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    wake_.Signal();
  }
  if (writer_.joinable()) writer_.join();
  if (!stopped()) (void)CompleteFile();
}

bool Sampled(double fraction) {
  if (fraction >= 1) return true;
  if (fraction <= 0) return false;
  thread_local absl::BitGen random;
  return absl::Bernoulli(random, fraction);
}

bool CallCapture::Sample() const { return Sampled(options_.fraction); }

void CallCapture::Add(std::string record) {
  const int64_t size = static_cast<int64_t>(record.size());
  bool taken = false;
  if (!stopped()) {
    absl::MutexLock lock(&mu_);
    if (pending_bytes_ + size <= options_.file_bytes) {
      pending_bytes_ += size;
      pending_.push_back(std::move(record));
      wake_.Signal();
      taken = true;
    }
  }
  if (!taken && metrics_ != nullptr) metrics_->CountCapture(/*written=*/false);
}

void CallCapture::WriterLoop() {
  std::deque<std::string> batch;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      while (pending_.empty() && !closing_) wake_.Wait(&mu_);
      if (pending_.empty()) return;
      batch.swap(pending_);  // their bytes stay counted until written
    }
    int64_t batch_bytes = 0;
    for (const std::string& record : batch) batch_bytes += static_cast<int64_t>(record.size());
    for (const std::string& record : batch) {
      if (stopped()) {
        if (metrics_ != nullptr) metrics_->CountCapture(/*written=*/false);
        continue;
      }
      if (absl::Status s = Write(record); !s.ok()) {
        Stop(s);
        if (metrics_ != nullptr) metrics_->CountCapture(/*written=*/false);
        continue;
      }
      if (metrics_ != nullptr) metrics_->CountCapture(/*written=*/true);
    }
    batch.clear();
    if (!stopped()) {
      file_.flush();
      if (!file_) Stop(absl::UnavailableError(absl::StrCat("cannot write capture file '", part_path_, "'")));
    }
    absl::MutexLock lock(&mu_);
    pending_bytes_ -= batch_bytes;
  }
}

absl::Status CallCapture::Write(const std::string& record) {
  if (file_written_ > 0 && file_written_ + static_cast<int64_t>(record.size()) > options_.file_bytes) {
    if (absl::Status s = CompleteFile(); !s.ok()) return s;
    if (absl::Status s = BeginFile(); !s.ok()) return s;
    Evict();
  }
  file_.write(record.data(), static_cast<std::streamsize>(record.size()));
  if (!file_) return absl::UnavailableError(absl::StrCat("cannot write capture file '", part_path_, "'"));
  file_written_ += static_cast<int64_t>(record.size());
  return absl::OkStatus();
}

absl::Status CallCapture::BeginFile() {
  const std::string name = absl::StrCat("calls-", absl::FormatTime("%Y%m%dT%H%M%E6SZ", absl::Now(), absl::UTCTimeZone()),
                                        "-", getpid(), "-", sequence_++, kCapturePartSuffix);
  part_path_ = (fs::path(options_.dir) / name).string();
  file_.open(part_path_, std::ios::binary | std::ios::trunc);
  file_written_ = 0;
  if (!file_) return absl::UnavailableError(absl::StrCat("cannot create capture file '", part_path_, "'"));
  return absl::OkStatus();
}

absl::Status CallCapture::CompleteFile() {
  file_.close();
  if (!file_) return absl::UnavailableError(absl::StrCat("cannot write capture file '", part_path_, "'"));
  const std::string path = part_path_.substr(0, part_path_.size() - std::string(".part").size());
  std::error_code ec;
  if (file_written_ == 0) {  // nothing to keep
    fs::remove(part_path_, ec);
    return absl::OkStatus();
  }
  fs::rename(part_path_, path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot rename capture file '", part_path_, "': ", ec.message()));
  complete_.emplace_back(path, file_written_);
  complete_bytes_ += file_written_;
  return absl::OkStatus();
}

void CallCapture::Evict() {
  // Room for the file being begun to grow to file_bytes.
  while (!complete_.empty() && complete_bytes_ + options_.file_bytes > options_.max_bytes) {
    const auto [path, size] = complete_.front();
    std::error_code ec;
    if (!fs::remove(path, ec) && ec) {
      Log(Severity::kWarning,
          absl::StrCat("cannot delete capture file '", path, "' (", ec.message(),
                       "); capture files may hold more than --capture_max_bytes"),
          {{"event", "capture_evict_failed"}});
      return;  // tried again at the next file
    }
    complete_.pop_front();
    complete_bytes_ -= size;
  }
}

void CallCapture::Stop(const absl::Status& why) {
  if (stopped_.exchange(true)) return;
  file_.close();
  if (metrics_ != nullptr) metrics_->CountCaptureError();
  Log(Severity::kError,
      absl::StrCat("call capture stopped; calls go on uncaptured (restart the server to capture again): ",
                   why.message()),
      {{"event", "capture_stopped"}, {"dir", options_.dir}});
}

}  // namespace masknet
