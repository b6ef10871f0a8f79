#ifndef MASKNET_SERVER_MEMORY_RELEASE_H_
#define MASKNET_SERVER_MEMORY_RELEASE_H_

#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace masknet {

// The heap as malloc sees it: bytes in use and bytes free (held by the
// process, whether or not their pages are still resident).
struct HeapUsage {
  int64_t in_use = 0;
  int64_t free = 0;
};
HeapUsage CurrentHeapUsage();

// The process's virtual and resident memory in bytes, from
// /proc/self/statm; zeros if it cannot be read.
struct ProcessMemory {
  int64_t virtual_bytes = 0;
  int64_t resident_bytes = 0;
};
ProcessMemory CurrentProcessMemory();
inline int64_t ResidentBytes() { return CurrentProcessMemory().resident_bytes; }

// Gives free heap memory back to the system once a burst of allocations
// has passed. glibc keeps what a flood of calls freed in its arenas, so
// without this the resident memory stays at the flood's peak. Every
// `interval` a thread looks at the heap and, when more than
// `max_idle_heap_bytes` are free and a quarter of that was in use and has
// been freed since the last release (or the free bytes grew by that much),
// returns the free pages (malloc_trim) and logs what it gave back.
class MemoryReleaser {
 public:
  struct Options {
    // Free heap memory kept once a burst of allocations (a flood of calls)
    // has passed. 0: never release.
    int64_t max_idle_heap_bytes = int64_t{64} << 20;
    // How often the heap is looked at.
    absl::Duration interval = absl::Seconds(1);

    // INVALID_ARGUMENT naming the first option out of its bounds.
    absl::Status Validate() const;
  };

  // REQUIRES: options.Validate().ok().
  explicit MemoryReleaser(const Options& options);
  ~MemoryReleaser();  // stops the thread
  MemoryReleaser(const MemoryReleaser&) = delete;
  MemoryReleaser& operator=(const MemoryReleaser&) = delete;

  // One look at the heap, as the thread takes every interval; returns
  // whether it released memory. For tests.
  bool Check() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Since the last release: the most bytes seen in use, and the free bytes
  // it left.
  int64_t peak_in_use_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t free_after_release_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace masknet

#endif  // MASKNET_SERVER_MEMORY_RELEASE_H_
