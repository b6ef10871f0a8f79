#ifndef MASKNET_MODEL_MODEL_SPEC_H_
#define MASKNET_MODEL_MODEL_SPEC_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "masknet/config/v1/model_config.pb.h"
#include "model/feature_schema.h"

namespace masknet {

// A tensor the model needs: its name in weights.safetensors and its shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// A LayerNorm over V[offset, offset + width) while V is built.
struct InputNormSpec {
  std::string name;
  int64_t offset = 0;
  int64_t width = 0;
  float eps = 0;
  // All its fields are context fields: computed once per request.
  bool context_only = false;
};

// How a normalization applies to one object (config::v1::Norm resolved).
struct NormSpec {
  config::v1::Norm kind = config::v1::NORM_NONE;
  float eps = 0;
};

struct MaskBlockSpec {
  NormSpec input_norm;
  // The masked object is (the shared normalization of) V rather than the
  // previous block's output.
  bool masks_instance = false;
  int64_t masked_width = 0;      // m: projection output, hidden input
  int64_t aggregation_size = 0;  // t
  int64_t output_size = 0;       // o
  bool hidden_bias = false;
  bool relu = false;
  // The LayerNorm after the hidden layer (all but no_layer_norm blocks).
  bool layer_norm = true;
  float layer_norm_eps = 0;
};

// act(BN(W x + b)); W is [output_size, input_width].
struct DenseLayerSpec {
  std::string prefix;  // tensor name prefix, e.g. "mlp.0"
  int64_t input_width = 0;
  int64_t output_size = 0;
  bool relu = false;
  bool batch_norm = false;
  bool batch_norm_affine = false;
  float batch_norm_eps = 0;
};

struct TaskSpec {
  std::string name;
  std::vector<DenseLayerSpec> layers;  // the last has one output: the logit
  std::optional<float> negative_sampling_rate;
};

// A model config checked for consistency and resolved into the widths every
// layer has. Plain data; immutable once built.
struct ModelSpec {
  // Checks everything in the config that does not need the weights: names,
  // ranges, enum values, contradictory options. Errors are INVALID_ARGUMENT
  // and name the config path (e.g. "masknet.blocks[2].aggregation_size").
  static absl::StatusOr<ModelSpec> FromConfig(const config::v1::ModelConfig& config);

  // Every tensor weights.safetensors must hold, in a stable order.
  std::vector<TensorSpec> ExpectedTensors() const;
  // 2 x multiply-adds of all dense layers for one candidate.
  int64_t FlopsPerCandidate() const;
  // Number of values in ExpectedTensors().
  int64_t ParameterCount() const;

  FeatureSchema schema;
  std::vector<InputNormSpec> input_norms;
  bool parallel = false;
  NormSpec shared_norm;        // masknet.input_norm
  bool mask_reads_normalized = false;
  std::vector<MaskBlockSpec> blocks;
  int64_t masknet_output_width = 0;
  std::vector<DenseLayerSpec> mlp;
  std::vector<TaskSpec> tasks;
};

}  // namespace masknet

#endif  // MASKNET_MODEL_MODEL_SPEC_H_
