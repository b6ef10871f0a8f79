// machine_limits: this machine's fp32 FMA peak and memory read bandwidth,
// measured now, so that every benchmark can report its figures as a share
// of what the machine can do in the same run (the CPU kind changes between
// sessions, and other tenants share caches and memory).
//
//   build/bench/machine_limits [--threads=N] [--seconds=S]
//
// Prints one JSON object: the CPU model, the vector width used, GFLOP/s on
// one core and on N threads at once, and GB/s reading a 1 GiB buffer with N
// threads.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// Independent accumulators: enough to cover the FMA latency times the FMA
// units (4 cycles x 2 units on current cores) with room to spare.
constexpr int kChains = 16;
constexpr int64_t kInner = 1 << 14;

__attribute__((target("avx512f"))) double FmaLoop512(double seconds) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + i * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  int64_t iterations = 0;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  const auto start = Clock::now();
  while (Clock::now() < end) {
    for (int64_t k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
    iterations += kInner;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  float sink = 0;
  for (int i = 0; i < kChains; ++i) sink += _mm512_reduce_add_ps(acc[i]);
  if (sink == 42.0f) std::fprintf(stderr, " ");
  return iterations * kChains * 16 * 2 / elapsed;
}

__attribute__((target("avx2,fma"))) double FmaLoop256(double seconds) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + i * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  int64_t iterations = 0;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  const auto start = Clock::now();
  while (Clock::now() < end) {
    for (int64_t k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
      for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    }
    iterations += kInner;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  float lanes[8], sink = 0;
  for (int i = 0; i < kChains; ++i) {
    _mm256_storeu_ps(lanes, acc[i]);
    for (float x : lanes) sink += x;
  }
  if (sink == 42.0f) std::fprintf(stderr, " ");
  return iterations * kChains * 8 * 2 / elapsed;
}

bool HasAvx512() { return __builtin_cpu_supports("avx512f"); }

// FLOP/s of `threads` threads running the FMA loop at once, best of `runs`.
double FmaPeak(int threads, double seconds, int runs) {
  double best = 0;
  for (int r = 0; r < runs; ++r) {
    std::vector<double> rates(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] { rates[t] = HasAvx512() ? FmaLoop512(seconds) : FmaLoop256(seconds); });
    }
    for (auto& th : pool) th.join();
    double total = 0;
    for (double x : rates) total += x;
    best = std::max(best, total);
  }
  return best;
}

// Bytes/s of `threads` threads summing disjoint parts of a 1 GiB buffer,
// best of `runs` passes.
double ReadBandwidth(int threads, int runs) {
  const size_t n = (size_t{1} << 30) / sizeof(float);
  float* data = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  // Touch every page from the thread that will read it.
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      const size_t lo = n * t / threads, hi = n * (t + 1) / threads;
      for (size_t i = lo; i < hi; ++i) data[i] = static_cast<float>(i & 7);
    });
  }
  for (auto& th : pool) th.join();
  double best = 0;
  std::atomic<double> sink{0};
  for (int r = 0; r < runs; ++r) {
    pool.clear();
    const auto start = Clock::now();
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        const size_t lo = n * t / threads, hi = n * (t + 1) / threads;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (size_t i = lo; i + 8 <= hi; i += 8) {
          s0 += data[i];
          s1 += data[i + 1];
          s2 += data[i + 2];
          s3 += data[i + 3];
          s4 += data[i + 4];
          s5 += data[i + 5];
          s6 += data[i + 6];
          s7 += data[i + 7];
        }
        sink = sink + (s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7);
      });
    }
    for (auto& th : pool) th.join();
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, n * sizeof(float) / elapsed);
  }
  std::free(data);
  if (sink == 42.0) std::fprintf(stderr, " ");
  return best;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? "" : line.substr(colon + 2);
    }
  }
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  int threads = static_cast<int>(std::thread::hardware_concurrency());
  double seconds = 0.5;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else if (std::strncmp(argv[i], "--seconds=", 10) == 0) {
      seconds = std::atof(argv[i] + 10);
    } else {
      std::fprintf(stderr, "usage: machine_limits [--threads=N] [--seconds=S]\n");
      return 2;
    }
  }
  if (threads < 1 || seconds <= 0) {
    std::fprintf(stderr, "machine_limits: --threads must be >= 1 and --seconds > 0\n");
    return 2;
  }
  const double one = FmaPeak(1, seconds, 3);
  const double all = FmaPeak(threads, seconds, 3);
  const double bandwidth = ReadBandwidth(threads, 3);
  std::printf(
      "{\"cpu\": \"%s\", \"vector_bits\": %d, \"threads\": %d, \"fma_gflops_one_core\": %.1f, "
      "\"fma_gflops_all\": %.1f, \"read_gb_per_s\": %.2f}\n",
      CpuModel().c_str(), HasAvx512() ? 512 : 256, threads, one / 1e9, all / 1e9, bandwidth / 1e9);
  return 0;
}
