#ifndef MASKNET_TESTS_TEST_UTIL_H_
#define MASKNET_TESTS_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "masknet/config/v1/model_config.pb.h"
#include "masknet/serving/v1/ranker.pb.h"
#include "model/feature_schema.h"
#include "model/masknet_model.h"
#include "model/model_spec.h"
#include "model/tensor.h"

namespace masknet::testing {

// A small valid model config (text format) touching most input options:
// context and candidate fields interleaved, dense transforms, multi-id
// categorical fields, an input norm; parallel MaskNet; two tasks.
extern const char kTinyConfig[];

config::v1::ModelConfig ParseConfigOrDie(const std::string& text);

// Random weights for every tensor `spec` expects (variances positive).
TensorMap RandomWeights(const ModelSpec& spec, uint32_t seed);

// A safetensors file holding `tensors` (sorted by name, packed in order).
std::string EncodeSafetensors(const TensorMap& tensors, bool bf16 = false);

// A fresh empty directory under the test's temporary directory.
std::string MakeTempDir();

void WriteFileOrDie(const std::string& path, const std::string& contents);

// Writes <root>/<name>/<version>/{model_config.pbtxt, weights.safetensors}
// and returns the version directory.
std::string WriteModelVersion(const std::string& root, const std::string& name, int64_t version,
                              const std::string& config_text, const TensorMap& weights);

// Feature values that own their storage.
struct OwnedFeatures {
  std::vector<float> dense;
  std::vector<int64_t> ids;
  std::vector<uint32_t> id_counts;
  FeatureValues view() const { return {dense, ids, id_counts}; }
};

struct OwnedRequest {
  OwnedFeatures context;
  std::vector<OwnedFeatures> candidates;
  // Views into this object; valid while it lives and is not modified.
  RequestFeatures view() const;
  serving::v1::RankRequest ToProto() const;
};

// Random values that pass schema.Validate: finite dense values with heavy
// tails, ids spread over (and, for MODULO fields, beyond) the buckets, and
// id counts between 0 (where allowed) and max_ids.
OwnedFeatures RandomFeatures(const FeatureSchema& schema, Scope scope, uint32_t seed);
OwnedRequest RandomRequest(const FeatureSchema& schema, int num_candidates, uint32_t seed);

// Scores all of `request`'s candidates with `model`, in chunks of its
// max_batch_size. Returns [candidates, tasks] row-major; aborts, printing
// the error, when the model refuses the request.
std::vector<float> ScoreAllOrDie(const MaskNetModel& model, const RequestFeatures& request);

// The value of a sample of the Prometheus text `metrics`, e.g.
// MetricValue(text, "masknet_ready"); -1 if absent.
double MetricValue(const std::string& metrics, const std::string& sample);

// The directory of committed parity fixtures (tests/fixtures).
std::string FixtureRoot();
// Names of the fixtures: tests/fixtures/<name>/cases.binpb exists.
std::vector<std::string> FixtureNames();

}  // namespace masknet::testing

#endif  // MASKNET_TESTS_TEST_UTIL_H_
