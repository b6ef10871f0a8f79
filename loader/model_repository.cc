#include "loader/model_repository.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "loader/model_loader.h"

namespace masknet {
namespace fs = std::filesystem;

namespace {

// The subdirectories of `dir` (symlinks to directories included), sorted, so
// load order and messages are deterministic.
absl::StatusOr<std::vector<fs::path>> ListDirectories(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> out;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec)) out.push_back(it->path());
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list '", dir.string(), "': ", ec.message()));
  std::sort(out.begin(), out.end());
  return out;
}

// What a version directory's files are now (modification times and sizes):
// a failed version is tried again only when this changes.
std::string Fingerprint(const fs::path& dir) {
  std::string out;
  for (const char* file : {kModelConfigFile, kWeightsFile}) {
    std::error_code ec;
    const fs::path path = dir / file;
    const auto mtime = fs::last_write_time(path, ec).time_since_epoch().count();
    const auto size = ec ? 0 : fs::file_size(path, ec);
    absl::StrAppend(&out, file, ":", ec ? -1 : mtime, ":", size, ";");
  }
  return out;
}

// (version, path) of the version directories among `dirs`, newest first;
// the others are reported in `warnings` (if not null) unless hidden.
std::vector<std::pair<int64_t, std::string>> VersionDirectories(const std::vector<fs::path>& dirs,
                                                                 std::vector<std::string>* warnings) {
  std::vector<std::pair<int64_t, std::string>> out;
  for (const fs::path& dir : dirs) {
    const int64_t version = ParseVersion(dir.filename().string());
    if (version == 0) {
      if (warnings != nullptr && dir.filename().string()[0] != '.') {
        warnings->push_back(absl::StrCat("skipping '", dir.string(), "': a version directory is a positive integer"));
      }
      continue;
    }
    out.emplace_back(version, dir.string());
  }
  std::sort(out.rbegin(), out.rend());
  return out;
}

// Whether every character of `name` is one of [A-Za-z0-9_.-].
bool AllNameCharacters(absl::string_view name) {
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
  });
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Servable>> LoadServable(const std::string& name, int64_t version,
                                                             const std::string& dir,
                                                             const MaskNetModel::Options& options) {
  auto loaded = LoadModelVersion(dir);
  if (!loaded.ok()) return loaded.status();
  auto model = MaskNetModel::Create(std::move(loaded->spec), std::move(loaded->weights), options);
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat(dir, ": ", model.status().message()));
  }
  if (absl::Status s = (*model)->WarmUp(); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat(dir, ": warm-up failed: ", s.message()));
  }
  auto servable = std::make_shared<Servable>();
  servable->name = name;
  servable->version = version;
  servable->config = std::move(loaded->config);
  servable->model = *std::move(model);
  return servable;
}

absl::StatusOr<RolloutPlan> ReadRollout(const std::string& model_dir) {
  const std::string path = (fs::path(model_dir) / kRolloutFile).string();
  auto text = ReadFile(path);
  if (absl::IsNotFound(text.status())) return RolloutPlan{};
  if (!text.ok()) return text.status();
  config::v1::Rollout rollout;
  if (absl::Status s = ParseTextProto(path, *text, &rollout); !s.ok()) return s;
  RolloutPlan plan;
  VersionLabels& labels = plan.labels;
  for (const config::v1::Rollout::Label& label : rollout.labels()) {
    const std::string& l = label.name();
    if (l.empty() || l.size() > 64 || !AllNameCharacters(l)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": label '", l, "': a label is 1-64 of [A-Za-z0-9_.-]"));
    }
    if (label.version() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": label '", l, "': version must be positive, got ", label.version()));
    }
    if (!labels.emplace(l, label.version()).second) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": label '", l, "' appears twice"));
    }
  }
  plan.shadow_fraction = rollout.shadow_fraction();
  if (!(plan.shadow_fraction >= 0 && plan.shadow_fraction <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": shadow_fraction must be in [0, 1], got ", plan.shadow_fraction));
  }
  return plan;
}

std::string DescribeLabels(const VersionLabels& labels) {
  return labels.empty() ? "none" : absl::StrJoin(labels, ", ", absl::PairFormatter("="));
}

std::string DescribeRollout(const RolloutPlan& plan) {
  return absl::StrCat(DescribeLabels(plan.labels),
                      plan.shadow_fraction > 0 ? absl::StrCat("; shadow_fraction=", plan.shadow_fraction) : "");
}

bool IsValidModelName(absl::string_view name) {
  return !name.empty() && name.size() <= 128 && name[0] != '.' && AllNameCharacters(name);
}

int64_t ParseVersion(absl::string_view name) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return 0;
  for (char c : name) {
    if (c < '0' || c > '9') return 0;
  }
  int64_t version = 0;
  return absl::SimpleAtoi(name, &version) ? version : 0;
}

absl::Status ModelRepository::Options::Validate() const {
  if (root.empty()) return absl::InvalidArgumentError("root is required");
  if (keep_versions < 1) {
    return absl::InvalidArgumentError(absl::StrCat("keep_versions must be at least 1, got ", keep_versions));
  }
  return model.Validate();
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Load(const Options& options,
                                                                       std::vector<std::string>* warnings) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::error_code ec;
  if (!fs::is_directory(options.root, ec)) {
    return absl::NotFoundError(absl::StrCat("model root '", options.root, "' is not a directory"));
  }
  std::unique_ptr<ModelRepository> repo(new ModelRepository(options));
  absl::Status first_failure;
  if (absl::Status s = repo->Refresh(options.fail_on_model_error, warnings, &first_failure); !s.ok()) return s;
  absl::MutexLock lock(&repo->mu_);
  // Nothing to serve because versions failed: say why, even where an empty
  // root is allowed (that is for a root that waits for its first model).
  if (repo->models_.empty() && !first_failure.ok()) return first_failure;
  if (repo->models_.empty() && !options.allow_empty) {
    return absl::NotFoundError(absl::StrCat("no model versions under '", options.root,
                                            "' (expected <root>/<model_name>/<version>/)"));
  }
  if (!options.default_model.empty() && !repo->models_.contains(options.default_model) && !options.allow_empty) {
    return absl::NotFoundError(absl::StrCat("default model '", options.default_model, "' is not under '",
                                            options.root, "'"));
  }
  return repo;
}

void ModelRepository::Poll() { Refresh(/*strict=*/false, nullptr).IgnoreError(); }

void ModelRepository::Report(const RepositoryEvent& event) const {
  if (options_.on_event) options_.on_event(event);
}

absl::Status ModelRepository::Refresh(bool strict, std::vector<std::string>* warnings,
                                      absl::Status* first_failure) {
  auto model_dirs = ListDirectories(options_.root);
  if (!model_dirs.ok()) {
    Report({RepositoryEvent::Kind::kScanFailed, options_.root, 0, model_dirs.status(), absl::ZeroDuration(), {}});
    return model_dirs.status();
  }
  std::map<std::string, Versions> current;
  std::map<std::string, RolloutPlan> current_rollouts;
  {
    absl::MutexLock lock(&mu_);
    current = models_;
    current_rollouts = rollouts_;
  }
  std::map<std::string, Versions> next;
  std::map<std::string, RolloutPlan> next_rollouts;
  std::vector<RepositoryEvent> events;
  for (const fs::path& model_dir : *model_dirs) {
    const std::string name = model_dir.filename().string();
    if (!IsValidModelName(name)) {
      if (warnings != nullptr && name[0] != '.') {
        warnings->push_back(absl::StrCat("skipping '", model_dir.string(), "': not a valid model name ([A-Za-z0-9_.-])"));
      }
      continue;
    }
    const Versions& served = current[name];
    const RolloutPlan& in_force = current_rollouts[name];
    auto version_dirs = ListDirectories(model_dir);
    if (!version_dirs.ok()) {
      if (strict) return version_dirs.status();
      Report({RepositoryEvent::Kind::kScanFailed, model_dir.string(), 0, version_dirs.status(), absl::ZeroDuration(),
              {}});
      if (!served.empty()) {  // keep what serves
        next[name] = served;
        if (in_force != RolloutPlan{}) next_rollouts[name] = in_force;
      }
      continue;
    }
    const std::vector<std::pair<int64_t, std::string>> on_disk = VersionDirectories(*version_dirs, warnings);
    // Labelled versions stay loaded: those of the labels in force, and those
    // the rollout file asks for (which are applied only once they load).
    const absl::StatusOr<RolloutPlan> wanted = ReadRollout(model_dir.string());
    std::set<int64_t> pinned;
    for (const auto& [label, version] : in_force.labels) pinned.insert(version);
    if (wanted.ok()) {
      for (const auto& [label, version] : wanted->labels) pinned.insert(version);
    }
    std::set<int64_t> newest;
    absl::Status first_error;
    Versions chosen = ChooseVersions(name, on_disk, served, pinned, &newest, &events, &first_error);
    if (first_failure != nullptr && first_failure->ok()) *first_failure = first_error;
    if (chosen.empty() && strict && !first_error.ok()) return first_error;
    absl::Status rejected;
    RolloutPlan plan = ApplyLabels(name, model_dir.string(), on_disk, in_force, wanted, chosen, &events, &rejected);
    if (strict && !rejected.ok()) return rejected;
    // Versions kept only for labels that no longer name them go now.
    std::set<int64_t> keep = std::move(newest);
    for (const auto& [label, version] : plan.labels) keep.insert(version);
    if (wanted.ok()) {
      for (const auto& [label, version] : wanted->labels) keep.insert(version);
    }
    std::erase_if(chosen, [&keep](const auto& entry) { return !keep.contains(entry.first); });
    if (!chosen.empty()) next[name] = std::move(chosen);
    if (plan != RolloutPlan{}) next_rollouts[name] = std::move(plan);
  }
  for (const auto& [name, plan] : current_rollouts) {  // a model that left the root takes its labels
    if (plan != RolloutPlan{} && !next.contains(name) && !next_rollouts.contains(name)) {
      events.push_back({RepositoryEvent::Kind::kLabelsChanged, name, 0, absl::OkStatus(), absl::ZeroDuration(), {}});
    }
  }
  for (const auto& [name, versions] : current) {
    const auto kept = next.find(name);
    for (const auto& [version, servable] : versions) {
      if (kept == next.end() || !kept->second.contains(version)) {
        events.push_back({RepositoryEvent::Kind::kUnloaded, name, version, absl::OkStatus(), absl::ZeroDuration(), {}});
      }
    }
  }
  {
    absl::MutexLock lock(&mu_);
    if (!events.empty()) ++generation_;
    models_ = std::move(next);
    rollouts_ = std::move(next_rollouts);
    if (default_model_.empty()) {
      if (!options_.default_model.empty()) {
        default_model_ = options_.default_model;
      } else if (models_.size() == 1) {
        default_model_ = models_.begin()->first;  // the first model served, while it was the only one
      }
    }
  }
  // `current` still holds the unloaded versions: they go when it does (or
  // when the last call or queue holding them lets go).
  for (const RepositoryEvent& e : events) Report(e);
  return absl::OkStatus();
}

ModelRepository::Versions ModelRepository::ChooseVersions(
    const std::string& name, const std::vector<std::pair<int64_t, std::string>>& on_disk, const Versions& served,
    const std::set<int64_t>& pinned, std::set<int64_t>* newest, std::vector<RepositoryEvent>* events,
    absl::Status* first_error) {
  Versions chosen;
  for (const auto& [version, dir] : on_disk) {
    const bool by_age = static_cast<int>(newest->size()) < options_.keep_versions;
    if (!by_age && !pinned.contains(version)) continue;
    if (auto it = served.find(version); it != served.end()) {
      chosen[version] = it->second;
    } else {
      const std::string fingerprint = Fingerprint(dir);
      const auto key = std::make_pair(name, version);
      if (auto failed = failures_.find(key); failed != failures_.end() && failed->second == fingerprint) continue;
      const absl::Time start = absl::Now();
      auto servable = LoadServable(name, version, dir, options_.model);
      const absl::Duration took = absl::Now() - start;
      if (!servable.ok()) {
        failures_[key] = fingerprint;
        if (first_error->ok()) *first_error = servable.status();
        Report({RepositoryEvent::Kind::kLoadFailed, name, version, servable.status(), took, {}});
        continue;
      }
      failures_.erase(key);
      chosen[version] = *std::move(servable);
      events->push_back({RepositoryEvent::Kind::kLoaded, name, version, absl::OkStatus(), took, {}});
    }
    if (by_age) newest->insert(version);
  }
  return chosen;
}

RolloutPlan ModelRepository::ApplyLabels(const std::string& name, const std::string& model_dir,
                                         const std::vector<std::pair<int64_t, std::string>>& on_disk,
                                         const RolloutPlan& previous, const absl::StatusOr<RolloutPlan>& wanted,
                                         const Versions& chosen, std::vector<RepositoryEvent>* events,
                                         absl::Status* rejected) {
  *rejected = wanted.status();
  if (wanted.ok()) {
    for (const auto& [label, version] : wanted->labels) {
      if (chosen.contains(version)) continue;
      const int64_t named = version;  // a lambda cannot capture a structured binding before C++20
      const bool exists =
          std::any_of(on_disk.begin(), on_disk.end(), [named](const auto& v) { return v.first == named; });
      *rejected = absl::FailedPreconditionError(
          absl::StrCat((fs::path(model_dir) / kRolloutFile).string(), ": label '", label, "' names version ", version,
                       exists ? ", which does not load" : ", which has no directory"));
      break;
    }
  }
  RolloutPlan plan = rejected->ok() ? *wanted : previous;
  std::erase_if(plan.labels, [&chosen](const auto& label) { return !chosen.contains(label.second); });
  if (rejected->ok()) {
    label_failures_.erase(name);
  } else if (std::string& last = label_failures_[name]; last != rejected->message()) {
    last = std::string(rejected->message());
    events->push_back({RepositoryEvent::Kind::kLabelsRejected, name, 0, *rejected, absl::ZeroDuration(), plan});
  }
  if (plan != previous) {
    events->push_back({RepositoryEvent::Kind::kLabelsChanged, name, 0, absl::OkStatus(), absl::ZeroDuration(), plan});
  }
  return plan;
}

absl::StatusOr<std::shared_ptr<const Servable>> ModelRepository::Find(absl::string_view name, int64_t version,
                                                                      absl::string_view label) const {
  if (version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_version must be 0 (newest) or positive, got ", version));
  }
  if (version != 0 && !label.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("set model_version or model_version_label, not both (got ",
                                                   version, " and '", label, "')"));
  }
  absl::MutexLock lock(&mu_);
  auto served_names = [&] {
    std::vector<std::string> names;
    for (const auto& [n, v] : models_) names.push_back(absl::StrCat("'", n, "'"));
    return names.empty() ? std::string("nothing yet") : absl::StrJoin(names, ", ");
  };
  if (name.empty()) {
    if (default_model_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model_name is empty and the server has no default model (serving ", served_names(),
          "); set model_name or start the server with --default_model"));
    }
    name = default_model_;
  }
  auto model = models_.find(std::string(name));
  if (model == models_.end()) {
    return absl::NotFoundError(absl::StrCat("model '", name, "' is not served (serving ",
                                            served_names(), ")"));
  }
  const auto rollout = rollouts_.find(model->first);
  const VersionLabels no_labels;
  const VersionLabels& labelled = rollout == rollouts_.end() ? no_labels : rollout->second.labels;
  if (!label.empty()) {
    const auto it = labelled.find(std::string(label));
    if (it == labelled.end()) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' has no version labelled '", label,
                                              "' (labels: ", DescribeLabels(labelled), ")"));
    }
    version = it->second;
  } else if (const auto stable = labelled.find("stable"); version == 0 && stable != labelled.end()) {
    version = stable->second;
  }
  const Versions& versions = model->second;
  if (version == 0) return versions.rbegin()->second;
  auto it = versions.find(version);
  if (it == versions.end()) {
    std::vector<int64_t> ready;
    for (const auto& [v, s] : versions) ready.push_back(v);
    return absl::NotFoundError(absl::StrCat("model '", name, "' has no version ", version,
                                            " (ready: ", absl::StrJoin(ready, ", "), ")"));
  }
  return it->second;
}

VersionLabels ModelRepository::Labels(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  const auto it = rollouts_.find(std::string(name));
  return it == rollouts_.end() ? VersionLabels{} : it->second.labels;
}

ModelRepository::ShadowTarget ModelRepository::Shadow(const Servable& answering) const {
  absl::MutexLock lock(&mu_);
  const auto rollout = rollouts_.find(answering.name);
  if (rollout == rollouts_.end() || rollout->second.shadow_fraction <= 0) return {};
  const VersionLabels& labels = rollout->second.labels;
  const auto stable = labels.find("stable");
  const auto canary = labels.find("canary");
  if (stable == labels.end() || canary == labels.end() || stable->second != answering.version ||
      canary->second == stable->second) {
    return {};
  }
  const auto model = models_.find(answering.name);
  if (model == models_.end()) return {};
  const auto it = model->second.find(canary->second);
  if (it == model->second.end()) return {};
  return {it->second, rollout->second.shadow_fraction};
}

std::vector<std::pair<std::string, int64_t>> ModelRepository::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& [name, versions] : models_) {
    for (const auto& [version, servable] : versions) out.emplace_back(name, version);
  }
  return out;
}

std::string ModelRepository::default_model() const {
  absl::MutexLock lock(&mu_);
  return default_model_;
}

bool ModelRepository::ready() const {
  absl::MutexLock lock(&mu_);
  return !models_.empty();
}

int64_t ModelRepository::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

bool ModelRepository::Serves(const Servable* servable) const {
  absl::MutexLock lock(&mu_);
  auto model = models_.find(servable->name);
  if (model == models_.end()) return false;
  auto it = model->second.find(servable->version);
  return it != model->second.end() && it->second.get() == servable;
}

RepositoryWatcher::RepositoryWatcher(ModelRepository* repository, absl::Duration interval)
    : thread_([this, repository, interval] {
        absl::MutexLock lock(&mu_);
        while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), interval)) {
          mu_.Unlock();
          repository->Poll();
          mu_.Lock();
        }
      }) {}

RepositoryWatcher::~RepositoryWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

}  // namespace masknet
