// libFuzzer target: a Rank request's bytes through what the server does with
// them: protobuf parsing, validation against the model's schema
// (ParseRankRequest), feature assembly and the forward pass of a small
// model. Every accepted candidate must get a probability per task, or the
// call a clean error.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <memory>
#include <vector>

#include "masknet/serving/v1/ranker.pb.h"
#include "model/masknet_model.h"
#include "server/request_parser.h"
#include "tests/test_util.h"

namespace {

constexpr int64_t kMaxCandidates = 64;

const masknet::MaskNetModel& Model() {
  static const masknet::MaskNetModel* model = [] {
    auto spec = *masknet::ModelSpec::FromConfig(masknet::testing::ParseConfigOrDie(masknet::testing::kTinyConfig));
    masknet::TensorMap weights = masknet::testing::RandomWeights(spec, 1);
    masknet::MaskNetModel::Options options;
    options.max_batch_size = kMaxCandidates;
    options.threads = 1;
    return masknet::MaskNetModel::Create(std::move(spec), std::move(weights), options)->release();
  }();
  return *model;
}

}  // namespace

// With MASKNET_FUZZ_SEEDS=<dir> (run with -runs=0), writes valid requests
// for the model there first: the seed corpus.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* dir = std::getenv("MASKNET_FUZZ_SEEDS");
  if (dir == nullptr) return 0;
  for (uint32_t seed = 1; seed <= 8; ++seed) {
    const masknet::testing::OwnedRequest request =
        masknet::testing::RandomRequest(Model().spec().schema, static_cast<int>(seed % 5) + 1, seed);
    std::ofstream out(std::string(dir) + "/seed-" + std::to_string(seed), std::ios::binary);
    out << request.ToProto().SerializeAsString();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const masknet::MaskNetModel& model = Model();
  masknet::serving::v1::RankRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  const auto features = masknet::ParseRankRequest(request, model.spec().schema, kMaxCandidates);
  if (!features.ok() || features->candidates.empty()) return 0;
  const masknet::BatchSlice slice{&*features, 0, static_cast<int64_t>(features->candidates.size())};
  static masknet::Workspace workspace;
  std::vector<float> scores(slice.size() * model.num_tasks());
  const absl::Status status = model.Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores));
  if (status.ok()) {
    for (const float p : scores) {
      if (!(p >= 0.0f && p <= 1.0f)) __builtin_trap();  // NaN too
    }
  } else if (status.code() != absl::StatusCode::kInvalidArgument) {
    __builtin_trap();  // only a value overflowing in its transform may fail
  }
  return 0;
}
