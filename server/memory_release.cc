#include "server/memory_release.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/logging.h"

namespace masknet {

HeapUsage CurrentHeapUsage() {
  const struct mallinfo2 info = mallinfo2();  // every arena
  return HeapUsage{static_cast<int64_t>(info.uordblks + info.hblkhd), static_cast<int64_t>(info.fordblks)};
}

ProcessMemory CurrentProcessMemory() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(statm >> pages_total >> pages_resident)) return {};
  const int64_t page = sysconf(_SC_PAGESIZE);
  return ProcessMemory{pages_total * page, pages_resident * page};
}

absl::Status MemoryReleaser::Options::Validate() const {
  if (max_idle_heap_bytes < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_idle_heap_bytes must not be negative, got ", max_idle_heap_bytes));
  }
  if (interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("interval must be positive, got ", absl::FormatDuration(interval)));
  }
  return absl::OkStatus();
}

MemoryReleaser::MemoryReleaser(const Options& options) : options_(options) {
  if (options_.max_idle_heap_bytes > 0) thread_ = std::thread([this] { Loop(); });
}

MemoryReleaser::~MemoryReleaser() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void MemoryReleaser::Loop() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.interval)) {
    mu_.Unlock();
    Check();
    mu_.Lock();
  }
}

bool MemoryReleaser::Check() {
  const int64_t threshold = options_.max_idle_heap_bytes;
  if (threshold <= 0) return false;
  const HeapUsage heap = CurrentHeapUsage();
  {
    absl::MutexLock lock(&mu_);
    peak_in_use_ = std::max(peak_in_use_, heap.in_use);
    // A quarter of the threshold: what a burst has to leave behind to be
    // worth a release (malloc_trim walks every arena under its lock).
    const bool burst_passed = peak_in_use_ - heap.in_use > threshold / 4;
    const bool free_grew = heap.free - free_after_release_ > threshold / 4;
    if (heap.free <= threshold || !(burst_passed || free_grew)) return false;
  }
  const int64_t resident_before = ResidentBytes();
  malloc_trim(0);
  const int64_t resident_after = ResidentBytes();
  const HeapUsage after = CurrentHeapUsage();
  {
    absl::MutexLock lock(&mu_);
    peak_in_use_ = after.in_use;
    free_after_release_ = after.free;
  }
  Log(Severity::kInfo,
      absl::StrFormat("returned free heap memory to the system: %.1f MB free in the heap, resident %.1f -> %.1f MB",
                      heap.free / 1e6, resident_before / 1e6, resident_after / 1e6),
      {{"event", "memory_released"}, {"resident_before_bytes", absl::StrCat(resident_before)},
       {"resident_after_bytes", absl::StrCat(resident_after)}});
  return true;
}

}  // namespace masknet
