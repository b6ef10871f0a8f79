// The in-process forward pass (feature assembly through sigmoid) for each
// reference configuration of MASKNET.md, at batch 1, 8, 64, 256 and 1024, in
// fp32 and bf16, on random valid features.
//
//   build/bench/forward_pass_benchmark [--models=DIR] [--batches=16,32,64]
//                                      [--benchmark_filter=twitter]
//
// Families: forward/<config>/<batch> (fp32), forward_bf16/... (bf16), and for
// comparison forward_onednn/<config>/<batch> (fp32 with every matmul on
// oneDNN, i.e. without the small-batch kernels, at batch 1 and 4) and
// forward_unmerged/... (fp32 with merge_layers off); matmuls/<config>/<batch>
// times oneDNN's matmuls alone (see MatmulChain), the ceiling the forward
// pass's large batches are compared with; hot_read/<config> and omp_region
// time what batch 1 is compared with (see BM_HotRead).
//
// Weights are random unless --models=DIR names exported models: then config
// <name> is loaded from DIR/<name>/models/<name>/1 (the layout
// bench/peers/peers.py writes, so ONNX Runtime and PyTorch run the same
// weights). --batches replaces every family's batch sizes. The OpenMP thread count is OpenMP's (OMP_NUM_THREADS).
//
// Counters: candidates/s, and GFLOP/s = FLOPs per candidate (2 x the
// multiply-adds of every dense layer) x candidates/s.

#include <immintrin.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "benchmark/benchmark.h"
#include "dnnl.hpp"
#include "loader/model_loader.h"
#include "model/masknet_model.h"
#include "omp.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

constexpr const char* kConfigs[] = {"paper-criteo-parallel", "paper-criteo-serial", "twitter-recap"};
constexpr int64_t kBatchSizes[] = {1, 8, 64, 256, 1024};

std::vector<int64_t>& BatchesFlag() {
  static auto* batches = new std::vector<int64_t>();
  return *batches;
}

std::string& ModelsDir() {
  static auto* dir = new std::string();
  return *dir;
}

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "forward_pass_benchmark: " << message << "\n";
  std::exit(1);
}

struct Variant {
  Precision precision = Precision::kF32;
  bool small_gemm = true;
  bool merge_layers = true;
  bool count_inputs = false;  // Run returns the input problems (a server with --data_metrics)
};

const MaskNetModel& ModelFor(const std::string& name, const Variant& variant) {
  using Key = std::tuple<std::string, Precision, bool, bool>;
  static auto* models = new std::map<Key, std::unique_ptr<MaskNetModel>>();
  auto& model = (*models)[{name, variant.precision, variant.small_gemm, variant.merge_layers}];
  if (model == nullptr) {
    ModelSpec spec;
    TensorMap weights;
    if (ModelsDir().empty()) {
      auto config = ReadModelConfig(std::string(MASKNET_BENCH_CONFIGS) + "/" + name + ".pbtxt");
      if (!config.ok()) Die(config.status().ToString());
      auto from_config = ModelSpec::FromConfig(*config);
      if (!from_config.ok()) Die(from_config.status().ToString());
      spec = *std::move(from_config);
      weights = testing::RandomWeights(spec, 1);
    } else {
      auto loaded = LoadModelVersion(ModelsDir() + "/" + name + "/models/" + name + "/1");
      if (!loaded.ok()) Die(loaded.status().ToString());
      spec = std::move(loaded->spec);
      weights = std::move(loaded->weights);
    }
    MaskNetModel::Options options;
    options.max_batch_size = 1024;
    options.precision = variant.precision;
    options.small_gemm = variant.small_gemm;
    options.merge_layers = variant.merge_layers;
    auto created = MaskNetModel::Create(std::move(spec), std::move(weights), options);
    if (!created.ok()) Die(created.status().ToString());
    model = *std::move(created);
  }
  return *model;
}

void BM_ForwardPass(benchmark::State& state, const std::string& name, Variant variant) {
  const MaskNetModel& model = ModelFor(name, variant);
  if (model.precision() != variant.precision) state.SkipWithError(model.precision_note().c_str());
  const int64_t batch = state.range(0);
  const testing::OwnedRequest request = testing::RandomRequest(model.spec().schema, static_cast<int>(batch), 3);
  const RequestFeatures features = request.view();
  const BatchSlice slice{&features, 0, batch};
  Workspace workspace;
  std::vector<float> scores(batch * model.num_tasks());
  InputCounts counts;
  InputCounts* const counted = variant.count_inputs ? &counts : nullptr;
  // A worker's workspace outlives its calls: allocate it before timing.
  if (!model.Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores), counted).ok()) {
    state.SkipWithError("the forward pass failed");
  }
  for (auto _ : state) {
    const absl::Status s = model.Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores), counted);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(scores.data());
  }
  const double flops = static_cast<double>(model.spec().FlopsPerCandidate());
  state.counters["candidates/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * batch / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["MFLOP/cand"] = flops / 1e6;
}

// oneDNN's matmuls alone: every dense layer of the model, in order (the
// blocks' aggregation, projection and hidden layers, the MLP, each task
// head), as a plain oneDNN matmul with its bias, its fused post-op (ReLU, or
// the mask-multiply's binary multiply) and the weight layout oneDNN prefers,
// each reading the previous layer's output where the widths agree; nothing
// else: no feature assembly, LayerNorms or sigmoid, no merged layers or own
// kernels. fp32, built for OpenMP's thread count.
class MatmulChain {
 public:
  MatmulChain(const ModelSpec& spec, int64_t rows) : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    const int64_t d = spec.schema.instance_width();
    const dnnl::memory instance = Buffer({rows, d});
    for (const MaskBlockSpec& b : spec.blocks) {
      Add(rows, d, b.aggregation_size, Post::kRelu, true, instance);
      Add(rows, b.aggregation_size, b.masked_width, Post::kMultiply, true);
      Add(rows, b.masked_width, b.output_size, Post::kNone, b.hidden_bias);
    }
    for (const DenseLayerSpec& l : spec.mlp) Add(rows, l.input_width, l.output_size, l.relu ? Post::kRelu : Post::kNone, true);
    for (const TaskSpec& t : spec.tasks) {
      for (const DenseLayerSpec& l : t.layers) Add(rows, l.input_width, l.output_size, l.relu ? Post::kRelu : Post::kNone, true);
    }
  }

  void Run() {
    for (Layer& l : layers_) l.primitive.execute(stream_, l.args);
    stream_.wait();
  }

 private:
  enum class Post { kNone, kRelu, kMultiply };
  struct Layer {
    dnnl::matmul primitive;
    std::unordered_map<int, dnnl::memory> args;
  };

  dnnl::memory Buffer(const dnnl::memory::desc& md) {
    dnnl::memory m(md, engine_);
    float* p = static_cast<float*>(m.get_data_handle());
    for (size_t i = 0; i < md.get_size() / sizeof(float); ++i) p[i] = 0.01f * static_cast<float>(i % 13) - 0.06f;
    return m;
  }
  dnnl::memory Buffer(const dnnl::memory::dims& dims) {
    return Buffer(dnnl::memory::desc(dims, dnnl::memory::data_type::f32, dnnl::memory::format_tag::ab));
  }

  void Add(int64_t rows, int64_t k, int64_t n, Post post, bool bias, dnnl::memory src = {}) {
    using dnnl::memory;
    if (!src && !layers_.empty() && layers_.back().args.at(DNNL_ARG_DST).get_desc().dims()[1] == k) {
      src = layers_.back().args.at(DNNL_ARG_DST);
    }
    if (!src) src = Buffer({rows, k});
    const memory::desc weights_any({k, n}, memory::data_type::f32, memory::format_tag::any);
    const memory::desc bias_md = bias ? memory::desc({1, n}, memory::data_type::f32, memory::format_tag::ab)
                                      : memory::desc();
    const memory::desc dst_md({rows, n}, memory::data_type::f32, memory::format_tag::ab);
    dnnl::post_ops ops;
    if (post == Post::kRelu) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    if (post == Post::kMultiply) ops.append_binary(dnnl::algorithm::binary_mul, dst_md);
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src.get_desc(), weights_any, bias_md, dst_md), attr,
                                    engine_);
    Layer layer{dnnl::matmul(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, Buffer(pd.weights_desc())},
                                   {DNNL_ARG_DST, Buffer(dst_md)}}};
    if (bias) layer.args.emplace(DNNL_ARG_BIAS, Buffer(bias_md));
    if (post == Post::kMultiply) layer.args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, Buffer(dst_md));
    layers_.push_back(std::move(layer));
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::vector<Layer> layers_;
};

void BM_Matmuls(benchmark::State& state, const std::string& name) {
  const ModelSpec& spec = ModelFor(name, Variant{}).spec();
  const int64_t batch = state.range(0);
  MatmulChain chain(spec, batch);
  chain.Run();
  for (auto _ : state) chain.Run();
  const double flops = static_cast<double>(spec.FlopsPerCandidate());
  state.counters["candidates/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * batch / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

// What batch 1 cannot go below on this machine, in two parts (see
// docs/benchmarks.md). hot_read/<config>: OpenMP's threads, in one parallel
// region, each sum its half of a buffer as large as the model's fp32
// weights, which stays in cache between iterations as the weights do
// between calls. omp_region: one empty OpenMP parallel region, the
// fork/join a layer that splits its columns over the threads pays.
// Sum of data[lo, hi): AVX-512 loads where the CPU has them, as the
// kernels read the weights, from two streams at once (the halves of the
// range), which on the machines we saw reads faster than one stream or four.
__attribute__((target("avx512f"))) float SumAvx512(const float* data, int64_t lo, int64_t hi) {
  const int64_t half = (hi - lo) / 2 / 64 * 64;
  const float* first = data + lo;
  const float* second = first + half;
  __m512 acc[8];
  for (__m512& a : acc) a = _mm512_setzero_ps();
  for (int64_t i = 0; i < half; i += 64) {
    for (int j = 0; j < 4; ++j) {
      acc[j] = _mm512_add_ps(acc[j], _mm512_loadu_ps(first + i + 16 * j));
      acc[4 + j] = _mm512_add_ps(acc[4 + j], _mm512_loadu_ps(second + i + 16 * j));
    }
  }
  for (int j = 1; j < 8; ++j) acc[0] = _mm512_add_ps(acc[0], acc[j]);
  // Not _mm512_reduce_add_ps: GCC 12 warns inside it (bug 105593).
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  float sum = 0;
  for (float x : lanes) sum += x;
  for (int64_t i = lo + 2 * half; i < hi; ++i) sum += data[i];
  return sum;
}

float SumPlain(const float* data, int64_t lo, int64_t hi) {
  float s[8] = {};
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8) {
    for (int j = 0; j < 8; ++j) s[j] += data[i + j];
  }
  for (; i < hi; ++i) s[0] += data[i];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

void BM_HotRead(benchmark::State& state, const std::string& name) {
  const MaskNetModel& model = ModelFor(name, Variant{});
  // A candidate's multiply-adds: each reads one weight.
  const int64_t n = model.spec().FlopsPerCandidate() / 2;
  // Cache-line aligned, as the weights are (unaligned 64-byte loads that
  // split lines read markedly slower).
  const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  std::unique_ptr<float, decltype(&std::free)> data(static_cast<float*>(std::aligned_alloc(64, bytes)), &std::free);
  for (int64_t i = 0; i < n; ++i) data.get()[i] = static_cast<float>(i & 7);
  const auto sum = __builtin_cpu_supports("avx512f") ? SumAvx512 : SumPlain;
  float sink = 0;
  for (auto _ : state) {
#pragma omp parallel reduction(+ : sink)
    {
      const int64_t t = omp_get_thread_num(), threads = omp_get_num_threads();
      sink += sum(data.get(), n * t / threads, n * (t + 1) / threads);
    }
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(n * sizeof(float)) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["layers"] = model.NumDenseLayers();
}

void BM_OmpRegion(benchmark::State& state) {
  int sink = 0;
  for (auto _ : state) {
#pragma omp parallel reduction(+ : sink)
    sink += omp_get_thread_num();
    benchmark::DoNotOptimize(sink);
  }
}

void Register() {
  struct Family {
    const char* prefix;
    Variant variant;
    std::vector<int64_t> batches;
  };
  const std::vector<int64_t> all(std::begin(kBatchSizes), std::end(kBatchSizes));
  const Family families[] = {
      {"forward/", {Precision::kF32, true, true}, all},
      {"forward_bf16/", {Precision::kBf16, true, true}, all},
      {"forward_int8/", {Precision::kInt8, true, true}, all},
      {"forward_onednn/", {Precision::kF32, false, true}, {1, 4}},
      {"forward_unmerged/", {Precision::kF32, true, false}, all},
      {"forward_counted/", {Precision::kF32, true, true, true}, {1, 64, 256}},
  };
  for (const Family& family : families) {
    for (const char* name : kConfigs) {
      auto* b = benchmark::RegisterBenchmark((std::string(family.prefix) + name).c_str(), BM_ForwardPass,
                                             std::string(name), family.variant);
      for (int64_t batch : BatchesFlag().empty() ? family.batches : BatchesFlag()) b->Arg(batch);
      b->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(1.0);
    }
  }
  for (const char* name : kConfigs) {
    auto* b = benchmark::RegisterBenchmark((std::string("matmuls/") + name).c_str(), BM_Matmuls, std::string(name));
    for (int64_t batch : BatchesFlag().empty() ? std::vector<int64_t>{64, 256, 1024} : BatchesFlag()) b->Arg(batch);
    b->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(1.0);
  }
  for (const char* name : kConfigs) {
    benchmark::RegisterBenchmark((std::string("hot_read/") + name).c_str(), BM_HotRead, std::string(name))
        ->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(1.0);
  }
  benchmark::RegisterBenchmark("omp_region", BM_OmpRegion)->UseRealTime()->MinTime(1.0);
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) {
  // Our own flag first; the rest are Google Benchmark's.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--models=", 9) == 0) {
      masknet::ModelsDir() = argv[i] + 9;
    } else if (std::strncmp(argv[i], "--batches=", 10) == 0) {
      for (const absl::string_view item : absl::StrSplit(argv[i] + 10, ',')) {
        int64_t batch = 0;
        if (!absl::SimpleAtoi(item, &batch) || batch < 1 || batch > 1024) {
          masknet::Die(absl::StrCat("--batches: '", item, "' is not a batch size in [1, 1024]"));
        }
        masknet::BatchesFlag().push_back(batch);
      }
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_argc = static_cast<int>(rest.size());
  masknet::Register();
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
