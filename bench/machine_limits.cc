// machine_limits: this machine's arithmetic peaks (fp32 FMA, and the bf16
// and int8 dot-product instructions where the CPU has them) and memory read
// bandwidth, measured now, so that every benchmark can report its figures as a share
// of what the machine can do in the same run (the CPU kind changes between
// sessions, and other tenants share caches and memory).
//
//   build/bench/machine_limits [--threads=N] [--seconds=S]
//
// Prints one JSON object: the CPU model, the vector width used, fp32 GFLOP/s
// on one core and on N threads at once, the same for bf16 (vdpbf16ps) and
// int8 GOP/s (vpdpbusd; null without AVX512_BF16 or AVX512_VNNI), and GB/s
// reading a 1 GiB buffer with N threads. An operation is a multiply or an
// add: a multiply-add counts 2.

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

bool HasAvx512() { return __builtin_cpu_supports("avx512f"); }
bool HasVnni() { return HasAvx512() && __builtin_cpu_supports("avx512vnni"); }
bool HasBf16() { return HasAvx512() && __builtin_cpu_supports("avx512bf16"); }

// Independent accumulators: enough to cover the latency of an FMA (or a
// dot-product instruction) times the units that run it (4 cycles x 2 units
// on current cores) with room to spare.
constexpr int kChains = 16;
constexpr int64_t kInner = 1 << 14;

// One block of kInner x kChains multiply-accumulate instructions on the
// accumulators `acc` (kept in registers inside the block). Each kind of
// instruction has its own block; Rate times them.
__attribute__((target("avx512f"))) void FmaBlock512(__m512* acc) {
  __m512 a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = acc[i];
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int64_t k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_fmadd_ps(a[i], x, y);
  }
  for (int i = 0; i < kChains; ++i) acc[i] = a[i];
}

__attribute__((target("avx2,fma"))) void FmaBlock256(__m256* acc) {
  __m256 a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = acc[i];
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int64_t k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) a[i] = _mm256_fmadd_ps(a[i], x, y);
  }
  for (int i = 0; i < kChains; ++i) acc[i] = a[i];
}

// vpdpbusd: 64 u8 x s8 products summed into 16 int32 lanes per instruction.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void VnniBlock(__m512i* acc) {
  __m512i a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = acc[i];
  const __m512i u = _mm512_set1_epi8(3), s = _mm512_set1_epi8(-2);
  for (int64_t k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_dpbusd_epi32(a[i], u, s);
  }
  for (int i = 0; i < kChains; ++i) acc[i] = a[i];
}

// vdpbf16ps: 32 bf16 x bf16 products summed pairwise into 16 f32 lanes.
__attribute__((target("avx512f,avx512bf16"))) void Bf16Block(__m512* acc) {
  __m512 a[kChains];
  for (int i = 0; i < kChains; ++i) a[i] = acc[i];
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380);
  for (int64_t k = 0; k < kInner; ++k) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) a[i] = _mm512_dpbf16_ps(a[i], x, y);
  }
  for (int i = 0; i < kChains; ++i) acc[i] = a[i];
}

// Runs `block` on `acc` for `seconds`; returns blocks per second. The
// accumulators' bytes are written to stderr if they add to an unlikely
// value, so that the work cannot be optimized away.
template <typename Vector>
double Rate(double seconds, void (*block)(Vector*)) {
  alignas(64) Vector acc[kChains];
  std::memset(acc, 0, sizeof(acc));
  int64_t blocks = 0;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  while (Clock::now() < end) {
    block(acc);
    ++blocks;
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  unsigned sink = 0;
  const auto* bytes = reinterpret_cast<const unsigned char*>(acc);
  for (size_t i = 0; i < sizeof(acc); ++i) sink += bytes[i];
  if (sink == 42) std::fprintf(stderr, " ");
  return blocks / elapsed;
}

// Operations (2 per multiply-add) per second of one thread.
constexpr double kOpsPerBlock = kInner * kChains * 2.0;
double FmaLoop(double seconds) {
  return HasAvx512() ? Rate(seconds, FmaBlock512) * kOpsPerBlock * 16 : Rate(seconds, FmaBlock256) * kOpsPerBlock * 8;
}
double VnniLoop(double seconds) { return Rate(seconds, VnniBlock) * kOpsPerBlock * 64; }
double Bf16Loop(double seconds) { return Rate(seconds, Bf16Block) * kOpsPerBlock * 32; }

// Operations/s of `threads` threads running `loop` at once, best of `runs`.
double Peak(double (*loop)(double), int threads, double seconds, int runs) {
  double best = 0;
  for (int r = 0; r < runs; ++r) {
    std::vector<double> rates(threads);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] { rates[t] = loop(seconds); });
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
  const double one = Peak(FmaLoop, 1, seconds, 3);
  const double all = Peak(FmaLoop, threads, seconds, 3);
  // A peak the CPU lacks the instruction for is printed as null.
  auto peak_json = [&](bool has, double (*loop)(double), int n) {
    if (!has) return std::string("null");
    char text[32];
    std::snprintf(text, sizeof(text), "%.1f", Peak(loop, n, seconds, 3) / 1e9);
    return std::string(text);
  };
  const std::string int8_one = peak_json(HasVnni(), VnniLoop, 1);
  const std::string int8_all = peak_json(HasVnni(), VnniLoop, threads);
  const std::string bf16_one = peak_json(HasBf16(), Bf16Loop, 1);
  const std::string bf16_all = peak_json(HasBf16(), Bf16Loop, threads);
  const double bandwidth = ReadBandwidth(threads, 3);
  std::printf(
      "{\"cpu\": \"%s\", \"vector_bits\": %d, \"threads\": %d, \"fma_gflops_one_core\": %.1f, "
      "\"fma_gflops_all\": %.1f, \"bf16_gflops_one_core\": %s, \"bf16_gflops_all\": %s, "
      "\"int8_gops_one_core\": %s, \"int8_gops_all\": %s, \"read_gb_per_s\": %.2f}\n",
      CpuModel().c_str(), HasAvx512() ? 512 : 256, threads, one / 1e9, all / 1e9, bf16_one.c_str(),
      bf16_all.c_str(), int8_one.c_str(), int8_all.c_str(), bandwidth / 1e9);
  return 0;
}
