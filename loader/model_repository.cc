#include "loader/model_repository.h"

#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

}  // namespace

bool IsValidModelName(absl::string_view name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

int64_t ParseVersion(absl::string_view name) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return 0;
  for (char c : name) {
    if (c < '0' || c > '9') return 0;
  }
  int64_t version = 0;
  return absl::SimpleAtoi(name, &version) ? version : 0;
}

absl::StatusOr<std::unique_ptr<ModelRepository>> ModelRepository::Load(
    const Options& options, std::vector<std::string>* warnings) {
  std::error_code ec;
  if (!fs::is_directory(options.root, ec)) {
    return absl::NotFoundError(absl::StrCat("model root '", options.root, "' is not a directory"));
  }
  std::unique_ptr<ModelRepository> repo(new ModelRepository());
  std::map<std::string, std::map<int64_t, std::shared_ptr<const Servable>>> models;
  auto model_dirs = ListDirectories(options.root);
  if (!model_dirs.ok()) return model_dirs.status();
  for (const fs::path& model_dir : *model_dirs) {
    const std::string name = model_dir.filename().string();
    if (!IsValidModelName(name)) {
      if (name[0] != '.') {
        warnings->push_back(absl::StrCat("skipping '", model_dir.string(),
                                         "': not a valid model name ([A-Za-z0-9_.-])"));
      }
      continue;
    }
    auto version_dirs = ListDirectories(model_dir);
    if (!version_dirs.ok()) return version_dirs.status();
    std::vector<std::pair<int64_t, fs::path>> versions;
    for (const fs::path& dir : *version_dirs) {
      const int64_t version = ParseVersion(dir.filename().string());
      if (version == 0) {
        if (dir.filename().string()[0] != '.') {
          warnings->push_back(absl::StrCat("skipping '", dir.string(),
                                           "': a version directory is a positive integer"));
        }
        continue;
      }
      versions.emplace_back(version, dir);
    }
    std::sort(versions.begin(), versions.end());
    for (const auto& [version, dir] : versions) {
      auto loaded = LoadModelVersion(dir.string());
      if (!loaded.ok()) return loaded.status();
      auto model = MaskNetModel::Create(std::move(loaded->spec), std::move(loaded->weights), options.model);
      if (!model.ok()) {
        return absl::Status(model.status().code(),
                            absl::StrCat(dir.string(), ": ", model.status().message()));
      }
      auto servable = std::make_shared<Servable>();
      servable->name = name;
      servable->version = version;
      servable->config = std::move(loaded->config);
      servable->model = *std::move(model);
      models[name][version] = std::move(servable);
    }
  }
  if (models.empty()) {
    return absl::NotFoundError(absl::StrCat("no model versions under '", options.root,
                                            "' (expected <root>/<model_name>/<version>/)"));
  }
  if (!options.default_model.empty()) {
    if (!models.contains(options.default_model)) {
      return absl::NotFoundError(absl::StrCat("default model '", options.default_model,
                                              "' is not under '", options.root, "'"));
    }
    repo->default_model_ = options.default_model;
  } else if (models.size() == 1) {
    repo->default_model_ = models.begin()->first;
  }
  absl::MutexLock lock(&repo->mu_);
  repo->models_ = std::move(models);
  return repo;
}

absl::StatusOr<std::shared_ptr<const Servable>> ModelRepository::Find(absl::string_view name,
                                                                      int64_t version) const {
  if (version < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_version must be 0 (newest) or positive, got ", version));
  }
  absl::MutexLock lock(&mu_);
  auto served_names = [&] {
    std::vector<std::string> names;
    for (const auto& [n, v] : models_) names.push_back(absl::StrCat("'", n, "'"));
    return absl::StrJoin(names, ", ");
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
  const auto& versions = model->second;
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

std::vector<std::pair<std::string, int64_t>> ModelRepository::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& [name, versions] : models_) {
    for (const auto& [version, servable] : versions) out.emplace_back(name, version);
  }
  return out;
}

}  // namespace masknet
