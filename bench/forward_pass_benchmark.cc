// The in-process forward pass (feature assembly through sigmoid) for each
// reference configuration of MASKNET.md, at batch 1, 64 and 1024, in fp32
// and bf16, with random weights and random valid features.
//
//   build/bench/forward_pass_benchmark [--benchmark_filter=twitter]
//
// Counters: candidates/s, and GFLOP/s = FLOPs per candidate (2 x the
// multiply-adds of every dense layer) x candidates/s.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "loader/model_loader.h"
#include "model/masknet_model.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

constexpr const char* kConfigs[] = {"paper-criteo-parallel", "paper-criteo-serial", "twitter-recap"};
constexpr int64_t kBatchSizes[] = {1, 64, 1024};

const MaskNetModel& ModelFor(const std::string& name, Precision precision) {
  static auto* models = new std::map<std::pair<std::string, Precision>, std::unique_ptr<MaskNetModel>>();
  auto& model = (*models)[{name, precision}];
  if (model == nullptr) {
    auto config = ReadModelConfig(std::string(MASKNET_BENCH_CONFIGS) + "/" + name + ".pbtxt");
    if (!config.ok()) std::abort();
    auto spec = ModelSpec::FromConfig(*config);
    if (!spec.ok()) std::abort();
    TensorMap weights = testing::RandomWeights(*spec, 1);
    MaskNetModel::Options options;
    options.max_batch_size = 1024;
    options.precision = precision;
    model = *MaskNetModel::Create(*std::move(spec), std::move(weights), options);
  }
  return *model;
}

void BM_ForwardPass(benchmark::State& state, const std::string& name, Precision precision) {
  const MaskNetModel& model = ModelFor(name, precision);
  if (model.precision() != precision) state.SkipWithError(model.precision_note().c_str());
  const int64_t batch = state.range(0);
  const testing::OwnedRequest request = testing::RandomRequest(model.spec().schema, static_cast<int>(batch), 3);
  const RequestFeatures features = request.view();
  const BatchSlice slice{&features, 0, batch};
  Workspace workspace;
  std::vector<float> scores(batch * model.num_tasks());
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

const bool kRegistered = [] {
  for (const Precision precision : {Precision::kF32, Precision::kBf16}) {
    // fp32 runs are "forward/<config>/<batch>", bf16 ones "forward_bf16/...".
    const std::string family = precision == Precision::kF32 ? "forward/" : "forward_bf16/";
    for (const char* name : kConfigs) {
      auto* b = benchmark::RegisterBenchmark((family + name).c_str(), BM_ForwardPass, std::string(name), precision);
      for (int64_t batch : kBatchSizes) b->Arg(batch);
      b->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(1.0);
    }
  }
  return true;
}();

}  // namespace
}  // namespace masknet

BENCHMARK_MAIN();
