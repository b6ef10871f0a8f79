#ifndef MASKNET_LOADER_MODEL_REPOSITORY_H_
#define MASKNET_LOADER_MODEL_REPOSITORY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
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

// A model's version labels (`stable`, `canary`): label -> version.
using VersionLabels = std::map<std::string, int64_t>;

// What a model's rollout file asks for (config::v1::Rollout, validated).
struct RolloutPlan {
  VersionLabels labels;
  // Share of the calls answered by `stable` that `canary` also scores.
  double shadow_fraction = 0;
  bool operator==(const RolloutPlan&) const = default;
};

// The file beside a model's version directories that labels its versions
// (config::v1::Rollout in text format).
inline constexpr char kRolloutFile[] = "rollout.pbtxt";

// The plan of <model_dir>/rollout.pbtxt; no labels and no shadowing when
// there is no such file. Errors name the file and what is wrong: its syntax
// (line and column), a label that is not 1-64 of [A-Za-z0-9_.-] or appears
// twice, a version that is not positive, a shadow_fraction outside [0, 1].
absl::StatusOr<RolloutPlan> ReadRollout(const std::string& model_dir);

// "stable=7, canary=8", or "none".
std::string DescribeLabels(const VersionLabels& labels);
// DescribeLabels, and "; shadow_fraction=0.1" when it is not 0.
std::string DescribeRollout(const RolloutPlan& plan);

// Something that happened to a model version, reported to
// ModelRepository::Options::on_event.
struct RepositoryEvent {
  // kLabelsChanged: the model's labels or shadow fraction changed
  // (`rollout` holds the new ones). kLabelsRejected: its rollout.pbtxt asks
  // for labels that cannot be applied; `rollout` is what stays. Reported
  // once per distinct error.
  enum class Kind { kLoaded, kUnloaded, kLoadFailed, kScanFailed, kLabelsChanged, kLabelsRejected };
  Kind kind;
  std::string name;          // kScanFailed: the directory that could not be listed
  int64_t version = 0;
  absl::Status status;       // kLoadFailed, kScanFailed, kLabelsRejected: why (naming the file and what)
  absl::Duration load_time;  // kLoaded and kLoadFailed: reading, building and warming up
  RolloutPlan rollout;       // kLabelsChanged, kLabelsRejected
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
// <root>/<model_name>/rollout.pbtxt, if present, labels versions and sets
// the shadow fraction (ReadRollout): a labelled version is loaded and kept
// whatever keep_versions says, and the plan changes at the Poll that sees
// the file change, all at once and only if every version it names is
// served; otherwise the previous plan stays (kLabelsRejected). A version
// whose directory is removed loses its labels.
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

  // The servable for `name` (empty: the default model) at `version`, or at
  // the version labelled `label`; with neither, the version labelled
  // `stable` if there is one, else the newest. Errors: NOT_FOUND for an
  // unknown model, version or label, INVALID_ARGUMENT for an empty name
  // without a default model, a negative version, or both a version and a
  // label.
  absl::StatusOr<std::shared_ptr<const Servable>> Find(absl::string_view name, int64_t version,
                                                       absl::string_view label = {}) const ABSL_LOCKS_EXCLUDED(mu_);

  // The labels of model `name` (none for an unknown model).
  VersionLabels Labels(absl::string_view name) const ABSL_LOCKS_EXCLUDED(mu_);

  // Where the calls `answering` answers are shadowed: the version labelled
  // `canary` and the share of calls, when `answering` is the version
  // labelled `stable` of its model, the canary is another version and the
  // model's shadow_fraction is above 0; else no canary.
  struct ShadowTarget {
    std::shared_ptr<const Servable> canary;
    double fraction = 0;
  };
  ShadowTarget Shadow(const Servable& answering) const ABSL_LOCKS_EXCLUDED(mu_);

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
  // version, or labels that cannot be applied, into an error. The first load
  // error is kept in *first_failure (if not null) either way.
  absl::Status Refresh(bool strict, std::vector<std::string>* warnings, absl::Status* first_failure = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The versions of model `name` to serve, from `on_disk` (version and
  // directory, newest first): the newest keep_versions that load (their
  // numbers also go to *newest) and every version in `pinned` that loads.
  // Reuses what `served` holds; loads the rest, adding kLoaded and
  // kLoadFailed events; keeps the first load error in *first_error.
  Versions ChooseVersions(const std::string& name, const std::vector<std::pair<int64_t, std::string>>& on_disk,
                          const Versions& served, const std::set<int64_t>& pinned, std::set<int64_t>* newest,
                          std::vector<RepositoryEvent>* events, absl::Status* first_error);
  // The plan model `name` gets: the one `wanted` by its rollout file when
  // every label names a version in `chosen`, else the `previous` one (the
  // reason goes to *rejected, and once per distinct reason to `events`);
  // either way without labels of versions no longer chosen.
  RolloutPlan ApplyLabels(const std::string& name, const std::string& model_dir,
                          const std::vector<std::pair<int64_t, std::string>>& on_disk, const RolloutPlan& previous,
                          const absl::StatusOr<RolloutPlan>& wanted, const Versions& chosen,
                          std::vector<RepositoryEvent>* events, absl::Status* rejected);
  void Report(const RepositoryEvent& event) const;

  const Options options_;
  // What failed to load, by model and version, with the files' fingerprint
  // then; and the last label error reported per model. Only Refresh (one
  // poller) touches them.
  std::map<std::pair<std::string, int64_t>, std::string> failures_;
  std::map<std::string, std::string> label_failures_;
  mutable absl::Mutex mu_;
  std::map<std::string, Versions> models_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, RolloutPlan> rollouts_ ABSL_GUARDED_BY(mu_);
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
