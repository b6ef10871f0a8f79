#ifndef MASKNET_LOADER_MODEL_LOADER_H_
#define MASKNET_LOADER_MODEL_LOADER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "masknet/config/v1/model_config.pb.h"
#include "model/model_spec.h"
#include "model/tensor.h"

namespace masknet {

inline constexpr char kModelConfigFile[] = "model_config.pbtxt";
inline constexpr char kWeightsFile[] = "weights.safetensors";

// One model version read from disk and checked: the config is consistent and
// the weights are exactly the tensors it implies, with the right shapes, all
// finite.
struct LoadedModel {
  config::v1::ModelConfig config;
  ModelSpec spec;
  TensorMap weights;
};

// Parses text-format protobuf into `out`; `file_name` only labels errors,
// which name the line and column of a syntax error or unknown field.
absl::Status ParseTextProto(absl::string_view file_name, absl::string_view text, google::protobuf::Message* out);

// Parses a text-format config; `file_name` only labels errors, which name
// the line and column of a syntax error or unknown field.
absl::StatusOr<config::v1::ModelConfig> ParseModelConfig(absl::string_view file_name, absl::string_view text);

// Reads the text-format config of `path`. Errors name the file and, for
// syntax errors and unknown fields, the line and column.
absl::StatusOr<config::v1::ModelConfig> ReadModelConfig(const std::string& path);

// Loads <version_dir>/model_config.pbtxt and <version_dir>/weights.safetensors.
// Errors name the file and the field or tensor at fault: NOT_FOUND for a
// missing file, INVALID_ARGUMENT for anything wrong inside one (syntax,
// unknown or contradictory options, missing or unexpected tensors, shape or
// dtype mismatch, truncated file, header offsets out of range or
// overlapping, non-finite weights, negative variances).
absl::StatusOr<LoadedModel> LoadModelVersion(const std::string& version_dir);

// Checks `weights` against `spec`: every expected tensor present with its
// shape, none unexpected, all values finite, batch-norm variances >= 0.
// `file_name` prefixes error messages.
absl::Status CheckWeights(const ModelSpec& spec, const TensorMap& weights,
                          absl::string_view file_name);

// The whole file at `path`. NOT_FOUND if it does not exist.
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace masknet

#endif  // MASKNET_LOADER_MODEL_LOADER_H_
