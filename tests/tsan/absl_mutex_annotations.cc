// ThreadSanitizer must see every lock, but Debian's Abseil is not built with
// it: absl::Mutex (and absl::Notification) synchronise in uninstrumented code, and TSan then reports
// races between accesses made under the same mutex. Linked into the tests
// of a -fsanitize=thread build only, this file interposes the exported
// absl::Mutex and absl::CondVar entry points (the executable's definitions
// come before the shared library's, for calls from both) and tells TSan
// what each does: acquiring the mutex after a lock or wait returns,
// releasing it before an unlock or wait. The real functions are found with
// dlsym(RTLD_NEXT). Names and argument passing are those of libabsl
// 20220623 in Debian 12 (namespace absl::debian3; KernelTimeout is one
// int64_t, Duration an int64_t and a uint32_t, Time a Duration).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

struct Duration {
  int64_t hi;
  uint32_t lo;
};
struct Time {
  Duration rep;
};

template <typename Fn>
Fn Real(const char* name) {
  void* fn = dlsym(RTLD_NEXT, name);
  if (fn == nullptr) {
    std::fprintf(stderr, "absl_mutex_annotations: %s not found\n", name);
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

}  // namespace

#define MASKNET_REAL(type, name) static const auto real = Real<type>(name)

extern "C" {

// Mutex::Lock(), ReaderLock(): acquire after.
void _ZN4absl7debian35Mutex4LockEv(void* mu) {
  MASKNET_REAL(void (*)(void*), "_ZN4absl7debian35Mutex4LockEv");
  real(mu);
  __tsan_acquire(mu);
}
void _ZN4absl7debian35Mutex10ReaderLockEv(void* mu) {
  MASKNET_REAL(void (*)(void*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(mu);
  __tsan_acquire(mu);
}

// TryLock(), ReaderTryLock(): acquire when they succeed.
bool _ZN4absl7debian35Mutex7TryLockEv(void* mu) {
  MASKNET_REAL(bool (*)(void*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(mu);
  if (locked) __tsan_acquire(mu);
  return locked;
}
bool _ZN4absl7debian35Mutex13ReaderTryLockEv(void* mu) {
  MASKNET_REAL(bool (*)(void*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(mu);
  if (locked) __tsan_acquire(mu);
  return locked;
}

// Unlock(), ReaderUnlock(): release before.
void _ZN4absl7debian35Mutex6UnlockEv(void* mu) {
  MASKNET_REAL(void (*)(void*), "_ZN4absl7debian35Mutex6UnlockEv");
  __tsan_release(mu);
  real(mu);
}
void _ZN4absl7debian35Mutex12ReaderUnlockEv(void* mu) {
  MASKNET_REAL(void (*)(void*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  __tsan_release(mu);
  real(mu);
}

// LockWhen*(cond[, timeout]): acquire after (they return with the lock held
// even when the timeout passed).
bool _ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(void* mu, const void* cond) {
  MASKNET_REAL(bool (*)(void*, const void*), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  const bool result = real(mu, cond);
  __tsan_acquire(mu);
  return result;
}
bool _ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE(void* mu, const void* cond) {
  MASKNET_REAL(bool (*)(void*, const void*), "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  const bool result = real(mu, cond);
  __tsan_acquire(mu);
  return result;
}
bool _ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(void* mu, const void* cond,
                                                                               Duration timeout) {
  MASKNET_REAL(bool (*)(void*, const void*, Duration),
               "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  const bool result = real(mu, cond, timeout);
  __tsan_acquire(mu);
  return result;
}
bool _ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE(void* mu, const void* cond,
                                                                            Time deadline) {
  MASKNET_REAL(bool (*)(void*, const void*, Time),
               "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  const bool result = real(mu, cond, deadline);
  __tsan_acquire(mu);
  return result;
}

// Await*(cond[, timeout]) all end in AwaitCommon, which unlocks and locks
// again while it waits: release before, acquire after.
bool _ZN4absl7debian35Mutex11AwaitCommonERKNS0_9ConditionENS0_24synchronization_internal13KernelTimeoutE(
    void* mu, const void* cond, int64_t timeout) {
  MASKNET_REAL(bool (*)(void*, const void*, int64_t),
               "_ZN4absl7debian35Mutex11AwaitCommonERKNS0_9ConditionENS0_24synchronization_internal13KernelTimeoutE");
  __tsan_release(mu);
  const bool result = real(mu, cond, timeout);
  __tsan_acquire(mu);
  return result;
}

// CondVar::Wait*(mu[, timeout]) all end in WaitCommon: the same.
bool _ZN4absl7debian37CondVar10WaitCommonEPNS0_5MutexENS0_24synchronization_internal13KernelTimeoutE(
    void* cv, void* mu, int64_t timeout) {
  MASKNET_REAL(bool (*)(void*, void*, int64_t),
               "_ZN4absl7debian37CondVar10WaitCommonEPNS0_5MutexENS0_24synchronization_internal13KernelTimeoutE");
  __tsan_release(mu);
  const bool result = real(cv, mu, timeout);
  __tsan_acquire(mu);
  return result;
}

// Notification: Notify() releases, a wait that saw it acquires. Its waits
// return at once, without a lock, once it was notified, so the mutex inside
// does not order them. (HasBeenNotified() is inline: not covered.)
void _ZN4absl7debian312Notification6NotifyEv(void* n) {
  MASKNET_REAL(void (*)(void*), "_ZN4absl7debian312Notification6NotifyEv");
  __tsan_release(n);
  real(n);
}
void _ZNK4absl7debian312Notification19WaitForNotificationEv(const void* n) {
  MASKNET_REAL(void (*)(const void*), "_ZNK4absl7debian312Notification19WaitForNotificationEv");
  real(n);
  __tsan_acquire(const_cast<void*>(n));
}
bool _ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(const void* n,
                                                                                   Duration timeout) {
  MASKNET_REAL(bool (*)(const void*, Duration),
               "_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(n, timeout);
  if (notified) __tsan_acquire(const_cast<void*>(n));
  return notified;
}
bool _ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE(const void* n, Time deadline) {
  MASKNET_REAL(bool (*)(const void*, Time),
               "_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = real(n, deadline);
  if (notified) __tsan_acquire(const_cast<void*>(n));
  return notified;
}

}  // extern "C"
