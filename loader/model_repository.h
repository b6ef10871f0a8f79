#ifndef MASKNET_LOADER_MODEL_REPOSITORY_H_
#define MASKNET_LOADER_MODEL_REPOSITORY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "masknet/config/v1/model_config.pb.h"
#include "model/masknet_model.h"

namespace masknet {

// One loaded, servable model version. Immutable. Shared: whoever holds one
// (a call in flight, a batch queue) keeps it alive after it is unloaded.
struct Servable {
  std::string name;
  int64_t version = 0;
  config::v1::ModelConfig config;
  std::unique_ptr<const MaskNetModel> model;
};

// Loads the model version in `dir` as the repository does: config and
// weights (LoadModelVersion), the model built with `options`, and a warm-up
// run. Errors name `dir` and what is wrong; a version that loads here loads
// in a repository with the same options. masknet_check_model and the Python
// exporter use it to decide what a valid model is.
absl::StatusOr<std::shared_ptr<const Servable>> LoadServable(const std::string& name, int64_t version,
                                                             const std::string& dir,
                                                             const MaskNetModel::Options& options);

// Something that happened to a model version, reported to
// ModelRepository::Options::on_event.
struct RepositoryEvent {
  enum class Kind { kLoaded, kUnloaded, kLoadFailed, kScanFailed };
  Kind kind;
  std::string name;          // kScanFailed: the directory that could not be listed
  int64_t version = 0;
  absl::Status status;       // kLoadFailed, kScanFailed: why (naming the file and tensor or field)
  absl::Duration load_time;  // kLoaded and kLoadFailed: reading, building and warming up
};

// The model versions under a model root:
//   <root>/<model_name>/<version>/{model_config.pbtxt, weights.safetensors}
// A model serves the newest `keep_versions` of its versions that load. Poll
// rescans the root: a new version is loaded, validated and warmed up while
// the others keep serving, then swapped in; versions that leave the newest
// `keep_versions`, or whose directory is removed, are unloaded. Publish a
// version by writing it beside its final place (a name that is not a
// version, e.g. `.tmp-5`) and renaming it to `<version>`: a half-written
// directory is never read.
//
// Thread-safe. Find never waits on a load.
class ModelRepository {
 public:
  struct Options {
    std::string root;
    // Model answering requests with an empty model_name. Empty: the first
    // model to be served, if it is then the only one.
    std::string default_model;
    MaskNetModel::Options model;
    // Versions of each model kept loaded: the newest that load. At least 1.
    int keep_versions = kDefaultKeepVersions;
    // At Load, a model that has versions none of which loads (or whose
    // directory cannot be listed): true fails Load with its error; false
    // reports it (on_event) and serves the other models, retrying it at
    // every Poll once its files change. When no model loads at all, Load
    // fails with the first error either way.
    bool fail_on_model_error = false;
    // Whether Load accepts a root with no model version yet (a watched
    // repository may start empty and be filled later).
    bool allow_empty = false;
    // Called for every load, unload and failed load, on the thread that
    // caused it (Load's or Poll's), never under the repository's lock.
    std::function<void(const RepositoryEvent&)> on_event;

    // INVALID_ARGUMENT naming the first option out of its bounds (the
    // model's included). Load checks it.
    absl::Status Validate() const;
  };
  static constexpr int kDefaultKeepVersions = 2;

  // Loads the newest keep_versions loadable versions of every model under
  // options.root. Directories that are not valid model names or versions
  // are skipped and reported in `warnings` (hidden ones, starting with '.',
  // silently). Errors: INVALID_ARGUMENT when options.Validate() fails;
  // UNAVAILABLE when the root cannot be listed; NOT_FOUND
  // when it does not exist, or holds no model version (unless
  // options.allow_empty); the loader's error when a model has versions and
  // none of them loads; NOT_FOUND when options.default_model is set and not
  // among the models (unless options.allow_empty).
  static absl::StatusOr<std::unique_ptr<ModelRepository>> Load(const Options& options,
                                                               std::vector<std::string>* warnings);

  // Rescans the root and brings the served versions up to date, as the
  // class comment says. A version that fails to load is reported and not
  // tried again until its files change; what served before keeps serving. A
  // root or model directory that cannot be listed changes nothing. Calls must
  // not overlap (one poller).
  void Poll() ABSL_LOCKS_EXCLUDED(mu_);

  // The servable for `name` (empty: the default model) at `version` (0: the
  // newest). Errors: NOT_FOUND for an unknown model or version,
  // INVALID_ARGUMENT for an empty name without a default model or a
  // negative version.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(absl::string_view name, int64_t version) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // (name, version) of everything served, sorted.
  std::vector<std::pair<std::string, int64_t>> List() const ABSL_LOCKS_EXCLUDED(mu_);

  std::string default_model() const ABSL_LOCKS_EXCLUDED(mu_);

  // Whether at least one model version is served.
  bool ready() const ABSL_LOCKS_EXCLUDED(mu_);

  // Changes whenever a version is swapped in or unloaded.
  int64_t generation() const ABSL_LOCKS_EXCLUDED(mu_);

  // Whether `servable` is still served (not unloaded).
  bool Serves(const Servable* servable) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  using Versions = std::map<int64_t, std::shared_ptr<const Servable>>;

  explicit ModelRepository(const Options& options) : options_(options) {}

  // One scan and load pass; `strict` turns a model without a loadable
  // version into an error. The first load error is kept in *first_failure
  // (if not null) either way.
  absl::Status Refresh(bool strict, std::vector<std::string>* warnings, absl::Status* first_failure = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Report(const RepositoryEvent& event) const;

  const Options options_;
  // What failed to load, by model and version, with the files' fingerprint
  // then. Only Refresh (one poller) touches it.
  std::map<std::pair<std::string, int64_t>, std::string> failures_;
  mutable absl::Mutex mu_;
  std::map<std::string, Versions> models_ ABSL_GUARDED_BY(mu_);
  std::string default_model_ ABSL_GUARDED_BY(mu_);
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

// Calls ModelRepository::Poll every `interval` on its own thread until
// destroyed.
class RepositoryWatcher {
 public:
  // REQUIRES: interval > 0; `repository` outlives the watcher.
  RepositoryWatcher(ModelRepository* repository, absl::Duration interval);
  ~RepositoryWatcher();

  RepositoryWatcher(const RepositoryWatcher&) = delete;
  RepositoryWatcher& operator=(const RepositoryWatcher&) = delete;

 private:
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Whether `name` is a valid model directory name: 1-128 of [A-Za-z0-9_.-],
// not starting with '.'.
bool IsValidModelName(absl::string_view name);

// The version a directory name denotes: a positive decimal integer without
// leading zeros; 0 if it is not one.
int64_t ParseVersion(absl::string_view name);

}  // namespace masknet

#endif  // MASKNET_LOADER_MODEL_REPOSITORY_H_
