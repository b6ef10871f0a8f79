#ifndef MASKNET_TESTS_WAITING_H_
#define MASKNET_TESTS_WAITING_H_

// Waiting for something to happen: the one wait of every C++ test.
//
// A test that waits for another thread (a worker taking a batch, a watcher
// loading a version, a child process logging its port) must not guess how
// long that takes: on a loaded machine, under a sanitizer, it can take
// hundreds of times longer than on an idle one. WaitUntil polls until the
// thing holds and returns at once; only if it never holds does the test wait
// out kWaitTimeout, and then it fails with what it waited for and what it
// last saw, instead of hanging until ctest kills it.
//
//   ASSERT_TRUE(WaitUntil("the blocker to leave the queue",
//                         [&] { return queue->stats().queued_candidates; },
//                         [](int64_t n) { return n == 0; }));

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace masknet::testing {

// How long a wait for something that should happen promptly may take before
// it fails: generous, because a wait returns as soon as the thing happens.
inline constexpr absl::Duration kWaitTimeout = absl::Seconds(120);

namespace internal {
// A wait looks again after 1 ms, then ever less often, up to every 20 ms:
// prompt for what happens at once, light on the machine (an HTTP scrape, a
// log read) for what takes long.
inline absl::Duration NextInterval(absl::Duration interval) {
  return std::min(2 * interval, absl::Milliseconds(20));
}
inline constexpr absl::Duration kFirstInterval = absl::Milliseconds(1);
}  // namespace internal

// Calls `observe()` until `done(value)` holds for the value it returns.
// Succeeds then, or fails once `timeout` has passed: "timed out after 2m
// waiting for <what>; last saw <value>" (the value printed with
// absl::StrCat).
template <typename Observe, typename Done>
::testing::AssertionResult WaitUntil(absl::string_view what, Observe observe, Done done,
                                     absl::Duration timeout = kWaitTimeout) {
  const absl::Time give_up = absl::Now() + timeout;
  for (absl::Duration interval = internal::kFirstInterval;; interval = internal::NextInterval(interval)) {
    const auto value = observe();
    if (done(value)) return ::testing::AssertionSuccess();
    if (absl::Now() >= give_up) {
      return ::testing::AssertionFailure()
             << "timed out after " << absl::FormatDuration(timeout) << " waiting for " << what << "; last saw "
             << absl::StrCat(value);
    }
    absl::SleepFor(interval);
  }
}

// The same for a condition with no value to show: succeeds once `done()`
// holds, fails with "timed out after 2m waiting for <what>".
template <typename Done>
::testing::AssertionResult WaitUntil(absl::string_view what, Done done, absl::Duration timeout = kWaitTimeout) {
  const absl::Time give_up = absl::Now() + timeout;
  for (absl::Duration interval = internal::kFirstInterval; !done(); interval = internal::NextInterval(interval)) {
    if (absl::Now() >= give_up) {
      return ::testing::AssertionFailure()
             << "timed out after " << absl::FormatDuration(timeout) << " waiting for " << what;
    }
    absl::SleepFor(interval);
  }
  return ::testing::AssertionSuccess();
}

}  // namespace masknet::testing

#endif  // MASKNET_TESTS_WAITING_H_
