#ifndef MASKNET_LOADER_MODEL_REPOSITORY_H_
#define MASKNET_LOADER_MODEL_REPOSITORY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "masknet/config/v1/model_config.pb.h"
#include "model/masknet_model.h"

namespace masknet {

// One loaded, servable model version.
struct Servable {
  std::string name;
  int64_t version = 0;
  config::v1::ModelConfig config;
  std::unique_ptr<const MaskNetModel> model;
};

// The model versions found under a model root:
//   <root>/<model_name>/<version>/{model_config.pbtxt, weights.safetensors}
// Thread-safe. Servables are shared: a caller holding one keeps it alive.
class ModelRepository {
 public:
  struct Options {
    std::string root;
    // Model answering requests with an empty model_name. Empty: the only
    // model when there is exactly one, else none.
    std::string default_model;
    MaskNetModel::Options model;
  };

  // Loads every version of every model under options.root. Directories that
  // are not valid model names or versions are skipped and reported in
  // `warnings` (hidden ones, starting with '.', silently). Errors:
  // UNAVAILABLE when a directory cannot be listed; NOT_FOUND when the root does not exist or holds no
  // model version; the loader's error for the first version that fails;
  // NOT_FOUND when options.default_model is set but not among the models.
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Load(const Options& options,
                                                               std::vector<std::string>* warnings);

  // The servable for `name` (empty: the default model) at `version` (0: the
  // newest). Errors: NOT_FOUND for an unknown model or version,
  // INVALID_ARGUMENT for an empty name without a default model or a
  // negative version.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(absl::string_view name, int64_t version) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // (name, version) of everything served, sorted.
  std::vector<std::pair<std::string, int64_t>> List() const ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& default_model() const { return default_model_; }

 private:
  ModelRepository() = default;

  std::string default_model_;
  mutable absl::Mutex mu_;
  // name -> version -> servable.
  std::map<std::string, std::map<int64_t, std::shared_ptr<const Servable>>> models_
      ABSL_GUARDED_BY(mu_);
};

// Whether `name` is a valid model directory name: 1-128 of [A-Za-z0-9_.-],
// not starting with '.'.
bool IsValidModelName(absl::string_view name);

// The version a directory name denotes: a positive decimal integer without
// leading zeros; 0 if it is not one.
int64_t ParseVersion(absl::string_view name);

}  // namespace masknet

#endif  // MASKNET_LOADER_MODEL_REPOSITORY_H_
