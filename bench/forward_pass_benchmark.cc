// The in-process forward pass (feature assembly through sigmoid) for each
// reference configuration of MASKNET.md, at batch 1, 8, 64, 256 and 1024, in
// fp32 and bf16, on random valid features.
//
//   build/bench/forward_pass_benchmark [--models=DIR] [--benchmark_filter=twitter]
//
// Families: forward/<config>/<batch> (fp32), forward_bf16/... (bf16), and for
// comparison forward_onednn/<config>/<batch> (fp32 with every matmul on
// oneDNN, i.e. without the small-batch kernels, at batch 1 and 4) and
// forward_unmerged/... (fp32 with merge_layers off).
//
// Weights are random unless --models=DIR names exported models: then config
// <name> is loaded from DIR/<name>/models/<name>/1 (the layout
// bench/peers/peers.py writes, so ONNX Runtime and PyTorch run the same
// weights). The OpenMP thread count is OpenMP's (OMP_NUM_THREADS).
//
// Counters: candidates/s, and GFLOP/s = FLOPs per candidate (2 x the
// multiply-adds of every dense layer) x candidates/s.

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "benchmark/benchmark.h"
#include "loader/model_loader.h"
#include "model/masknet_model.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

constexpr const char* kConfigs[] = {"paper-criteo-parallel", "paper-criteo-serial", "twitter-recap"};
constexpr int64_t kBatchSizes[] = {1, 8, 64, 256, 1024};

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
  // A worker's workspace outlives its calls: allocate it before timing.
  if (!model.Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores)).ok()) {
    state.SkipWithError("the forward pass failed");
  }
  for (auto _ : state) {
    const absl::Status s = model.Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores));
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
      {"forward_onednn/", {Precision::kF32, false, true}, {1, 4}},
      {"forward_unmerged/", {Precision::kF32, true, false}, all},
  };
  for (const Family& family : families) {
    for (const char* name : kConfigs) {
      auto* b = benchmark::RegisterBenchmark((std::string(family.prefix) + name).c_str(), BM_ForwardPass,
                                             std::string(name), family.variant);
      for (int64_t batch : family.batches) b->Arg(batch);
      b->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(1.0);
    }
  }
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) {
  // Our own flag first; the rest are Google Benchmark's.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--models=", 9) == 0) {
      masknet::ModelsDir() = argv[i] + 9;
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
