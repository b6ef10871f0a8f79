#include "loader/model_loader.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "loader/safetensors.h"

namespace masknet {
namespace {

// Collects the text-format parser's first error with its position.
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (message_.empty()) message_ = absl::StrCat("line ", line + 1, ", column ", column + 1, ": ", message);
  }
  void AddWarning(int line, int column, const std::string& message) override {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::UnavailableError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size < 0) return absl::UnavailableError(absl::StrCat(path, ": cannot tell its size"));
  std::string contents(static_cast<size_t>(size), '\0');
  if (!in.read(contents.data(), size)) return absl::UnavailableError(absl::StrCat(path, ": read failed"));
  return contents;
}

absl::Status ParseTextProto(absl::string_view file_name, absl::string_view text, google::protobuf::Message* out) {
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), out)) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": ", errors.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<config::v1::ModelConfig> ParseModelConfig(absl::string_view file_name, absl::string_view text) {
  config::v1::ModelConfig config;
  if (absl::Status s = ParseTextProto(file_name, text, &config); !s.ok()) return s;
  return config;
}

absl::StatusOr<config::v1::ModelConfig> ReadModelConfig(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseModelConfig(path, *text);
}

absl::Status CheckWeights(const ModelSpec& spec, const TensorMap& weights,
                          absl::string_view file_name) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": ", what));
  };
  const std::vector<TensorSpec> expected = spec.ExpectedTensors();
  absl::flat_hash_set<std::string> expected_names;
  std::vector<std::string> missing;
  for (const TensorSpec& t : expected) {
    expected_names.insert(t.name);
    if (!weights.contains(t.name)) missing.push_back(t.name);
  }
  if (!missing.empty()) {
    const size_t shown = std::min<size_t>(missing.size(), 5);
    return bad(absl::StrCat(
        "missing tensor", missing.size() > 1 ? "s " : " ", "'",
        absl::StrJoin(missing.begin(), missing.begin() + shown, "', '"), "'",
        missing.size() > shown ? absl::StrCat(" and ", missing.size() - shown, " more") : ""));
  }
  std::vector<std::string> unexpected;
  for (const auto& [name, tensor] : weights) {
    if (!expected_names.contains(name)) unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    std::sort(unexpected.begin(), unexpected.end());
    return bad(absl::StrCat("unexpected tensor '", unexpected.front(), "'",
                            unexpected.size() > 1 ? absl::StrCat(" (and ", unexpected.size() - 1, " more)") : "",
                            ": the config implies no such tensor"));
  }
  for (const TensorSpec& t : expected) {
    const Tensor& tensor = weights.at(t.name);
    if (tensor.shape != t.shape) {
      return bad(absl::StrCat("tensor '", t.name, "' has shape ", ShapeToString(tensor.shape),
                              ", the config implies ", ShapeToString(t.shape)));
    }
    for (size_t i = 0; i < tensor.values.size(); ++i) {
      if (!std::isfinite(tensor.values[i])) {
        return bad(absl::StrCat("tensor '", t.name, "' value ", i, " is ", tensor.values[i],
                                "; weights must be finite"));
      }
    }
    if (absl::EndsWith(t.name, ".running_var")) {
      for (size_t i = 0; i < tensor.values.size(); ++i) {
        if (tensor.values[i] < 0) {
          return bad(absl::StrCat("tensor '", t.name, "' value ", i, " is ", tensor.values[i],
                                  "; a variance cannot be negative"));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadedModel> LoadModelVersion(const std::string& version_dir) {
  const std::string config_path = absl::StrCat(version_dir, "/", kModelConfigFile);
  const std::string weights_path = absl::StrCat(version_dir, "/", kWeightsFile);
  LoadedModel model;
  auto config = ReadModelConfig(config_path);
  if (!config.ok()) return config.status();
  model.config = *std::move(config);
  auto spec = ModelSpec::FromConfig(model.config);
  if (!spec.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", spec.status().message()));
  }
  model.spec = *std::move(spec);
  auto weights = ReadSafetensors(weights_path);
  if (!weights.ok()) return weights.status();
  model.weights = *std::move(weights);
  if (auto s = CheckWeights(model.spec, model.weights, weights_path); !s.ok()) return s;
  return model;
}

}  // namespace masknet
