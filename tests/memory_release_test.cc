#include "server/memory_release.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/waiting.h"

namespace masknet {
namespace {

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MASKNET_SANITIZER_MALLOC 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(MASKNET_SANITIZER_MALLOC)
constexpr bool kOwnAllocator = true;  // a sanitizer's malloc has no arenas to trim
#else
constexpr bool kOwnAllocator = false;
#endif

constexpr int64_t kThreshold = 32 << 20;

// Many small blocks (below malloc's mmap threshold), touched, as a flood of
// calls leaves them.
std::vector<std::unique_ptr<char[]>> Burst(int64_t bytes) {
  constexpr int64_t kBlock = 2048;
  std::vector<std::unique_ptr<char[]>> blocks;
  for (int64_t i = 0; i < bytes / kBlock; ++i) {
    blocks.emplace_back(new char[kBlock]);
    for (int64_t j = 0; j < kBlock; j += 512) blocks.back()[j] = static_cast<char>(i + j);
  }
  return blocks;
}

// Frees all but one block a megabyte: what outlives a flood (a connection's
// buffers, a cached message) pins the heap, so malloc cannot shrink it from
// the top and keeps the freed megabytes between the pins. Returns the pins.
std::vector<std::unique_ptr<char[]>> FreeAllButPins(std::vector<std::unique_ptr<char[]>>& blocks) {
  std::vector<std::unique_ptr<char[]>> pins;
  for (size_t i = 0; i < blocks.size(); i += 512) pins.push_back(std::move(blocks[i]));
  blocks.clear();
  return pins;
}

TEST(MemoryReleaserTest, GivesBackWhatABurstFreedOnceAndOnlyThen) {
  if (kOwnAllocator) GTEST_SKIP() << "under a sanitizer's malloc";
  MemoryReleaser::Options options;
  options.max_idle_heap_bytes = kThreshold;
  options.interval = absl::Hours(1);  // only the test's own checks
  MemoryReleaser releaser(options);
  releaser.Check();  // whatever the process held before
  EXPECT_FALSE(releaser.Check()) << "nothing happened since the last check";

  auto blocks = Burst(4 * kThreshold);
  EXPECT_FALSE(releaser.Check()) << "in use, not free";
  const int64_t resident_in_burst = ResidentBytes();
  auto pins = FreeAllButPins(blocks);
  EXPECT_GT(CurrentHeapUsage().free, 2 * kThreshold);
  EXPECT_TRUE(releaser.Check());
  const int64_t resident_after = ResidentBytes();
  EXPECT_LT(resident_after, resident_in_burst - 2 * kThreshold)
      << "resident " << resident_in_burst << " -> " << resident_after;
  EXPECT_FALSE(releaser.Check()) << "released already";

  // A second burst is given back too.
  blocks = Burst(4 * kThreshold);
  releaser.Check();
  auto more_pins = FreeAllButPins(blocks);
  EXPECT_TRUE(releaser.Check());
}

TEST(MemoryReleaserTest, ZeroKeepsEverything) {
  if (kOwnAllocator) GTEST_SKIP() << "under a sanitizer's malloc";
  MemoryReleaser::Options options;
  options.max_idle_heap_bytes = 0;
  MemoryReleaser releaser(options);
  auto blocks = Burst(2 * kThreshold);
  auto pins = FreeAllButPins(blocks);
  EXPECT_GT(CurrentHeapUsage().free, kThreshold);
  EXPECT_FALSE(releaser.Check());
}

TEST(MemoryReleaserTest, ItsThreadReleasesWithinAnInterval) {
  if (kOwnAllocator) GTEST_SKIP() << "under a sanitizer's malloc";
  MemoryReleaser::Options options;
  options.max_idle_heap_bytes = kThreshold;
  options.interval = absl::Milliseconds(20);
  MemoryReleaser releaser(options);
  auto blocks = Burst(4 * kThreshold);
  absl::SleepFor(absl::Milliseconds(100));  // seen in use
  const int64_t resident_in_burst = ResidentBytes();
  auto pins = FreeAllButPins(blocks);
  EXPECT_TRUE(testing::WaitUntil(
      absl::StrCat("resident memory to fall from ", resident_in_burst, " bytes by ", 2 * kThreshold),
      [] { return ResidentBytes(); }, [&](int64_t resident) { return resident < resident_in_burst - 2 * kThreshold; }));
}

}  // namespace
}  // namespace masknet
