#include "loader/model_loader.h"

#include <atomic>
#include <cmath>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loader/model_repository.h"
#include "model/masknet_model.h"
#include "tests/test_util.h"
#include "tests/waiting.h"

namespace masknet {
namespace {

// "loaded", "unloaded", "load_failed", "scan_failed", "labels_changed" or
// "labels_rejected".
absl::string_view EventKindName(RepositoryEvent::Kind kind) {
  switch (kind) {
    case RepositoryEvent::Kind::kLoaded:
      return "loaded";
    case RepositoryEvent::Kind::kUnloaded:
      return "unloaded";
    case RepositoryEvent::Kind::kLoadFailed:
      return "load_failed";
    case RepositoryEvent::Kind::kScanFailed:
      return "scan_failed";
    case RepositoryEvent::Kind::kLabelsChanged:
      return "labels_changed";
    case RepositoryEvent::Kind::kLabelsRejected:
      return "labels_rejected";
  }
  return "unknown";
}

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class ModelLoaderTest : public ::testing::Test {
 protected:
  ModelLoaderTest()
      : root_(testing::MakeTempDir()),
        spec_(*ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig))),
        weights_(testing::RandomWeights(spec_, 1)) {}

  // Writes the tiny model (with `weights`) and loads it.
  absl::StatusOr<LoadedModel> Load(const std::string& config, const TensorMap& weights) {
    dir_ = testing::WriteModelVersion(root_, "tiny", 1, config, weights);
    return LoadModelVersion(dir_);
  }

  void ExpectInvalid(const absl::StatusOr<LoadedModel>& loaded, const std::string& file,
                     const std::string& substring) {
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << loaded.status();
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(absl::StrCat(dir_, "/", file, ": ")));
    EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(substring));
  }

  std::string root_, dir_;
  ModelSpec spec_;
  TensorMap weights_;
};

TEST_F(ModelLoaderTest, LoadsAValidModel) {
  auto loaded = Load(testing::kTinyConfig, weights_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->weights.size(), spec_.ExpectedTensors().size());
  EXPECT_EQ(loaded->config.description(), "tiny test model");
}

TEST_F(ModelLoaderTest, MissingConfigIsNotFound) {
  auto loaded = LoadModelVersion(root_ + "/nothing/1");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("nothing/1/model_config.pbtxt: no such file"));
}

TEST_F(ModelLoaderTest, MissingWeightsFileIsNotFound) {
  ASSERT_TRUE(Load(testing::kTinyConfig, weights_).ok());
  std::filesystem::remove(dir_ + "/weights.safetensors");
  auto loaded = LoadModelVersion(dir_);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("weights.safetensors: no such file"));
}

TEST_F(ModelLoaderTest, SyntaxErrorNamesLineAndColumn) {
  ExpectInvalid(Load("fields {\n  name: \"a\"\n  scope: \n}\n", weights_), "model_config.pbtxt",
                "line 4, column 1");
}

TEST_F(ModelLoaderTest, UnknownConfigFieldIsRejected) {
  ExpectInvalid(Load(absl::StrCat(testing::kTinyConfig, "\nlearning_rate: 0.1\n"), weights_),
                "model_config.pbtxt", "no field named \"learning_rate\"");
}

TEST_F(ModelLoaderTest, UnknownEnumValueIsRejected) {
  ExpectInvalid(Load(absl::StrReplaceAll(testing::kTinyConfig, {{"mode: PARALLEL", "mode: PARALEL"}}), weights_),
                "model_config.pbtxt", "PARALEL");
}

TEST_F(ModelLoaderTest, ContradictoryOptionsNameTheConfigPath) {
  ExpectInvalid(Load(absl::StrReplaceAll(testing::kTinyConfig, {{"factor: 2", "factor: 0.3"}}), weights_),
                "model_config.pbtxt", "masknet.blocks[1].reduction.factor");
}

TEST_F(ModelLoaderTest, MissingTensorIsNamed) {
  weights_.erase("masknet.blocks.1.hidden.bias");
  ExpectInvalid(Load(testing::kTinyConfig, weights_), "weights.safetensors",
                "missing tensor 'masknet.blocks.1.hidden.bias'");
}

TEST_F(ModelLoaderTest, UnexpectedTensorIsNamed) {
  weights_["masknet.blocks.0.hidden.bias"] = Tensor{{8}, std::vector<float>(8, 0.0f)};
  ExpectInvalid(Load(testing::kTinyConfig, weights_), "weights.safetensors",
                "unexpected tensor 'masknet.blocks.0.hidden.bias'");
}

TEST_F(ModelLoaderTest, ShapeMismatchIsNamed) {
  weights_["mlp.0.weight"] = Tensor{{14, 8}, std::vector<float>(14 * 8, 0.1f)};
  ExpectInvalid(Load(testing::kTinyConfig, weights_), "weights.safetensors",
                "tensor 'mlp.0.weight' has shape [14, 8], the config implies [8, 14]");
}

TEST_F(ModelLoaderTest, NonFiniteWeightIsNamed) {
  weights_["tasks.like.0.weight"].values[3] = std::nanf("");
  ExpectInvalid(Load(testing::kTinyConfig, weights_), "weights.safetensors",
                "tensor 'tasks.like.0.weight' value 3 is nan; weights must be finite");
}

TEST_F(ModelLoaderTest, NegativeVarianceIsNamed) {
  weights_["fields.counts.batch_norm.running_var"].values[1] = -0.5f;
  ExpectInvalid(Load(testing::kTinyConfig, weights_), "weights.safetensors",
                "tensor 'fields.counts.batch_norm.running_var' value 1 is -0.5");
}

TEST_F(ModelLoaderTest, TruncatedWeightsFileIsRejected) {
  ASSERT_TRUE(Load(testing::kTinyConfig, weights_).ok());
  const std::string path = dir_ + "/weights.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 10);
  auto loaded = LoadModelVersion(dir_);
  ExpectInvalid(loaded, "weights.safetensors", "lie outside the");
}

TEST_F(ModelLoaderTest, WrongDtypeIsRejected) {
  ASSERT_TRUE(Load(testing::kTinyConfig, weights_).ok());
  const std::string path = dir_ + "/weights.safetensors";
  std::string bytes = *ReadFile(path);
  const size_t at = bytes.find("\"F32\"");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 5, "\"I32\"");
  testing::WriteFileOrDie(path, bytes);
  ExpectInvalid(LoadModelVersion(dir_), "weights.safetensors", "dtype I32 is not supported");
}

ModelRepository::Options RepoOptions(const std::string& root, const std::string& default_model = "") {
  ModelRepository::Options options;
  options.root = root;
  options.default_model = default_model;
  options.model.max_batch_size = 8;
  return options;
}

TEST(ModelRepositoryTest, ServesNewestVersionByDefaultAndNamesWhatIsMissing) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  testing::WriteModelVersion(root, "tiny", 3, testing::kTinyConfig, testing::RandomWeights(spec, 3));
  std::filesystem::create_directories(root + "/tiny/latest");
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load(RepoOptions(root), &warnings);
  ASSERT_TRUE(repo.ok()) << repo.status();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], HasSubstr("tiny/latest': a version directory is a positive integer"));
  EXPECT_EQ((*repo)->default_model(), "tiny");

  auto newest = (*repo)->Find("", 0);
  ASSERT_TRUE(newest.ok());
  EXPECT_EQ((*newest)->version, 3);
  EXPECT_EQ((*(*repo)->Find("tiny", 1))->version, 1);

  auto missing_version = (*repo)->Find("tiny", 2);
  EXPECT_EQ(missing_version.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing_version.status().message()),
              HasSubstr("model 'tiny' has no version 2 (ready: 1, 3)"));
  auto missing_model = (*repo)->Find("other", 0);
  EXPECT_EQ(missing_model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing_model.status().message()), HasSubstr("model 'other' is not served (serving 'tiny')"));
  EXPECT_EQ((*repo)->Find("tiny", -1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelRepositoryTest, WithNothingToServeFailsWithTheFirstBadVersionsError) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  weights.erase("mlp.0.bias");
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, weights);
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load(RepoOptions(root), &warnings);
  ASSERT_FALSE(repo.ok());
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(repo.status().message()), HasSubstr("tiny/1/weights.safetensors: missing tensor 'mlp.0.bias'"));
}

TEST(ModelRepositoryTest, AModelThatDoesNotLoadLeavesTheOthersServingUnlessStrict) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap bad = testing::RandomWeights(spec, 1);
  bad.erase("mlp.0.bias");
  testing::WriteModelVersion(root, "broken", 1, testing::kTinyConfig, bad);
  testing::WriteModelVersion(root, "good", 1, testing::kTinyConfig, testing::RandomWeights(spec, 2));
  std::vector<std::string> warnings;
  std::vector<std::string> failed;
  ModelRepository::Options options = RepoOptions(root);
  options.on_event = [&](const RepositoryEvent& e) {
    if (e.kind == RepositoryEvent::Kind::kLoadFailed) failed.push_back(absl::StrCat(e.name, "/", e.version));
  };
  auto repo = ModelRepository::Load(options, &warnings);
  ASSERT_TRUE(repo.ok()) << repo.status();
  EXPECT_TRUE((*repo)->Find("good", 0).ok());
  EXPECT_EQ((*repo)->Find("broken", 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(failed, ::testing::ElementsAre("broken/1"));

  options.fail_on_model_error = true;
  auto strict = ModelRepository::Load(options, &warnings);
  ASSERT_FALSE(strict.ok());
  EXPECT_THAT(std::string(strict.status().message()), HasSubstr("broken/1/weights.safetensors: missing tensor"));
}

TEST(ModelRepositoryTest, EmptyRootIsNotFound) {
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load(RepoOptions(testing::MakeTempDir()), &warnings);
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(repo.status().message()), HasSubstr("no model versions under"));
}

TEST(ModelRepositoryTest, UnknownDefaultModelIsNotFound) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load(RepoOptions(root, "huge"), &warnings);
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(repo.status().message()), HasSubstr("default model 'huge'"));
}

TEST(ModelRepositoryTest, WithSeveralModelsAndNoDefaultAnEmptyNameIsInvalid) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "a", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  testing::WriteModelVersion(root, "b", 1, testing::kTinyConfig, testing::RandomWeights(spec, 2));
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load(RepoOptions(root), &warnings);
  ASSERT_TRUE(repo.ok());
  auto found = (*repo)->Find("", 0);
  EXPECT_EQ(found.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(found.status().message()), HasSubstr("no default model (serving 'a', 'b')"));
}

// A repository under a temporary root, recording its events.
class WatchedRepositoryTest : public ::testing::Test {
 protected:
  WatchedRepositoryTest()
      : root_(testing::MakeTempDir()),
        spec_(*ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig))) {}

  std::string Write(const std::string& name, int64_t version, uint32_t seed = 1) {
    return testing::WriteModelVersion(root_, name, version, testing::kTinyConfig, testing::RandomWeights(spec_, seed));
  }
  void Corrupt(const std::string& name, int64_t version) {
    TensorMap weights = testing::RandomWeights(spec_, 9);
    weights.erase("mlp.0.bias");
    testing::WriteModelVersion(root_, name, version, testing::kTinyConfig, weights);
  }

  std::unique_ptr<ModelRepository> Open(int keep_versions = 2, bool allow_empty = false) {
    ModelRepository::Options options = RepoOptions(root_);
    options.keep_versions = keep_versions;
    options.allow_empty = allow_empty;
    options.on_event = [this](const RepositoryEvent& e) {
      absl::MutexLock lock(&mu_);
      const bool labels = e.kind == RepositoryEvent::Kind::kLabelsChanged ||
                          e.kind == RepositoryEvent::Kind::kLabelsRejected;
      events_.push_back(labels ? absl::StrCat(EventKindName(e.kind), " ", e.name, ": ", DescribeRollout(e.rollout))
                               : absl::StrCat(EventKindName(e.kind), " ", e.name, "/", e.version));
      if (!e.status.ok()) last_error_ = std::string(e.status.message());
    };
    std::vector<std::string> warnings;
    auto repo = ModelRepository::Load(options, &warnings);
    EXPECT_TRUE(repo.ok()) << repo.status();
    return repo.ok() ? *std::move(repo) : nullptr;
  }
  // Writes the model's rollout.pbtxt as a publisher should: beside it, then
  // renamed into place.
  void WriteRollout(const std::string& name, const std::string& text) {
    const std::string path = absl::StrCat(root_, "/", name, "/", kRolloutFile);
    testing::WriteFileOrDie(path + ".tmp", text);
    std::filesystem::rename(path + ".tmp", path);
  }
  std::string LastError() {
    absl::MutexLock lock(&mu_);
    return last_error_;
  }
  std::vector<std::string> TakeEvents() {
    absl::MutexLock lock(&mu_);
    return std::exchange(events_, {});
  }
  static std::vector<int64_t> Versions(const ModelRepository& repo) {
    std::vector<int64_t> out;
    for (const auto& [name, version] : repo.List()) out.push_back(version);
    return out;
  }

  std::string root_;
  ModelSpec spec_;
  absl::Mutex mu_;
  std::vector<std::string> events_;
  std::string last_error_;
};

TEST_F(WatchedRepositoryTest, ANewVersionIsSwappedInAndTheOldestBeyondKeepVersionsUnloaded) {
  Write("tiny", 1);
  Write("tiny", 2);
  auto repo = Open(/*keep_versions=*/2);
  EXPECT_THAT(TakeEvents(), ElementsAre("loaded tiny/2", "loaded tiny/1"));
  const auto v1 = *repo->Find("tiny", 1);
  const int64_t generation = repo->generation();
  Write("tiny", 3);
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("loaded tiny/3", "unloaded tiny/1"));
  EXPECT_THAT(Versions(*repo), ElementsAre(2, 3));
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 3);
  EXPECT_NE(repo->generation(), generation);
  EXPECT_FALSE(repo->Serves(v1.get()));
  EXPECT_EQ(v1->version, 1);  // a holder keeps an unloaded version alive
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre());  // nothing changed
}

// What the server does at once: one thread polls while versions are
// published and removed, others find versions and score with them. (Run
// under ThreadSanitizer by scripts/sanitize.sh.)
TEST_F(WatchedRepositoryTest, FindAndScoreWhilePollSwapsVersions) {
  Write("tiny", 1);
  auto repo = Open(/*keep_versions=*/2);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> scored{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&, t] {
      const testing::OwnedRequest request = testing::RandomRequest(spec_.schema, 3, t + 1);
      const RequestFeatures features = request.view();
      Workspace workspace;
      std::vector<float> scores(3 * 2);
      while (!stop.load()) {
        auto servable = repo->Find("tiny", 0);
        ASSERT_TRUE(servable.ok()) << servable.status();
        const BatchSlice slice{&features, 0, 3};
        ASSERT_TRUE((*servable)->model->Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores)).ok());
        EXPECT_TRUE(repo->ready());
        (void)repo->List();
        (void)repo->generation();
        scored.fetch_add(1);
      }
    });
  }
  for (int64_t version = 2; version <= 6; ++version) {
    Write("tiny", version, static_cast<uint32_t>(version));
    if (version % 2 == 0) std::filesystem::remove_all(root_ + "/tiny/" + std::to_string(version - 1));
    repo->Poll();
    EXPECT_EQ((*repo->Find("tiny", 0))->version, version);
  }
  stop = true;
  for (std::thread& t : readers) t.join();
  EXPECT_GT(scored.load(), 0);
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 6);
}

TEST_F(WatchedRepositoryTest, ACorruptNewVersionIsReportedOnceAndTheOldOneKeepsServing) {
  Write("tiny", 1);
  auto repo = Open(/*keep_versions=*/1);
  TakeEvents();
  Corrupt("tiny", 2);
  repo->Poll();
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("load_failed tiny/2"));  // not retried while unchanged
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 1);
  // Fixed in place: tried again.
  absl::SleepFor(absl::Milliseconds(20));  // a new modification time
  Write("tiny", 2);
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("loaded tiny/2", "unloaded tiny/1"));
}

TEST_F(WatchedRepositoryTest, ARemovedVersionOrModelIsUnloaded) {
  Write("tiny", 1);
  Write("tiny", 2);
  Write("other", 1);
  auto repo = Open();
  TakeEvents();
  std::filesystem::remove_all(root_ + "/tiny/2");
  std::filesystem::remove_all(root_ + "/other");
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ::testing::UnorderedElementsAre("unloaded tiny/2", "unloaded other/1"));
  EXPECT_THAT(repo->List(), ElementsAre(std::make_pair(std::string("tiny"), int64_t{1})));
  EXPECT_EQ(repo->Find("other", 0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(WatchedRepositoryTest, AWatchedRepositoryMayStartEmptyAndBecomesReadyWithItsFirstModel) {
  auto repo = Open(/*keep_versions=*/2, /*allow_empty=*/true);
  EXPECT_FALSE(repo->ready());
  EXPECT_THAT(std::string(repo->Find("", 0).status().message()), HasSubstr("serving nothing yet"));
  std::filesystem::create_directories(root_ + "/tiny/.tmp-1");  // being written: ignored
  repo->Poll();
  EXPECT_FALSE(repo->ready());
  std::filesystem::remove_all(root_ + "/tiny/.tmp-1");
  Write("tiny", 1);
  repo->Poll();
  EXPECT_TRUE(repo->ready());
  EXPECT_EQ(repo->default_model(), "tiny");
  EXPECT_EQ((*repo->Find("", 0))->version, 1);
}

TEST_F(WatchedRepositoryTest, ANewestVersionThatFailsAtStartLeavesTheOlderOneServing) {
  Write("tiny", 1);
  Corrupt("tiny", 2);
  auto repo = Open(/*keep_versions=*/1);
  EXPECT_THAT(TakeEvents(), ElementsAre("load_failed tiny/2", "loaded tiny/1"));
  EXPECT_THAT(Versions(*repo), ElementsAre(1));
}

TEST_F(WatchedRepositoryTest, AWatcherPollsOnItsOwnThread) {
  Write("tiny", 1);
  auto repo = Open();
  TakeEvents();
  RepositoryWatcher watcher(repo.get(), absl::Milliseconds(10));
  Write("tiny", 2);
  EXPECT_TRUE(testing::WaitUntil("the watcher to load version 2", [&] { return Versions(*repo).size() == 2; }));
  EXPECT_THAT(Versions(*repo), ElementsAre(1, 2));
}

TEST_F(WatchedRepositoryTest, LabelsRouteCallsAndChangeAtTheNextPollAllAtOnce) {
  Write("tiny", 1);
  Write("tiny", 2);
  Write("tiny", 3);
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 1 }
                            labels { name: "canary" version: 3 })pb");
  auto repo = Open(/*keep_versions=*/1);
  EXPECT_THAT(TakeEvents(), ElementsAre("loaded tiny/3", "loaded tiny/1", "labels_changed tiny: canary=3, stable=1"));
  EXPECT_THAT(Versions(*repo), ElementsAre(1, 3));  // a labelled version stays beyond keep_versions
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 1);  // no version named: stable
  EXPECT_EQ((*repo->Find("", 0, "canary"))->version, 3);
  EXPECT_EQ((*repo->Find("tiny", 3))->version, 3);
  const auto unknown = repo->Find("tiny", 0, "beta");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(unknown.status().message()),
              HasSubstr("model 'tiny' has no version labelled 'beta' (labels: canary=3, stable=1)"));
  const auto both = repo->Find("tiny", 3, "canary");
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(both.status().message()), HasSubstr("model_version or model_version_label, not both"));

  // Promote the canary: every label moves at the same poll, and version 1,
  // no longer labelled nor among the newest, goes.
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 3 })pb");
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("labels_changed tiny: stable=3", "unloaded tiny/1"));
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 3);
  EXPECT_EQ(repo->Find("tiny", 0, "canary").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(repo->Labels("tiny"), ElementsAre(std::make_pair(std::string("stable"), int64_t{3})));

  // No file: no labels, the newest serves.
  std::filesystem::remove(root_ + "/tiny/" + kRolloutFile);
  Write("tiny", 4);
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("loaded tiny/4", "labels_changed tiny: none", "unloaded tiny/3"));
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 4);
}

TEST_F(WatchedRepositoryTest, LabelsThatCannotBeAppliedKeepThePreviousOnesAndAreReportedOnce) {
  Write("tiny", 1);
  Write("tiny", 2);
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 1 })pb");
  auto repo = Open(/*keep_versions=*/1);
  TakeEvents();
  // A label naming a version that does not load.
  Corrupt("tiny", 3);
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 3 })pb");
  repo->Poll();
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("load_failed tiny/3", "labels_rejected tiny: stable=1"));
  EXPECT_THAT(LastError(), HasSubstr("rollout.pbtxt: label 'stable' names version 3, which does not load"));
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 1);
  // One naming a version that does not exist.
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 9 })pb");
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("labels_rejected tiny: stable=1"));
  EXPECT_THAT(LastError(), HasSubstr("names version 9, which has no directory"));
  // A file that does not parse, or breaks a rule: one label moves, the
  // other does not, so neither does.
  for (const std::string& text :
       {std::string(R"pb(labels { name: "stable" version: 2 } labels { nme: "canary" })pb"),
        std::string(R"pb(labels { name: "stable" version: 2 } labels { name: "stable" version: 1 })pb"),
        std::string(R"pb(labels { name: "stable" version: 2 } labels { name: "can ary" version: 1 })pb"),
        std::string(R"pb(labels { name: "stable" version: 2 } labels { name: "canary" version: -1 })pb")}) {
    WriteRollout("tiny", text);
    repo->Poll();
    EXPECT_THAT(TakeEvents(), ElementsAre("labels_rejected tiny: stable=1")) << text;
    EXPECT_EQ((*repo->Find("tiny", 0))->version, 1) << text;
  }
  EXPECT_THAT(LastError(), HasSubstr("label 'canary': version must be positive, got -1"));
  // Fixed: applied at the next poll.
  absl::SleepFor(absl::Milliseconds(20));  // a new modification time
  Write("tiny", 3);
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 3 })pb");
  repo->Poll();
  EXPECT_THAT(TakeEvents(),  // 2 was kept as the newest, 1 as stable
              ElementsAre("loaded tiny/3", "labels_changed tiny: stable=3", "unloaded tiny/1", "unloaded tiny/2"));
  EXPECT_EQ((*repo->Find("tiny", 0))->version, 3);
}

TEST_F(WatchedRepositoryTest, TheStableVersionsCallsAreShadowedOnTheCanaryAsTheRolloutFileSays) {
  Write("tiny", 1);
  Write("tiny", 2);
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 1 } labels { name: "canary" version: 2 })pb");
  auto repo = Open();
  auto version = [&](int64_t v) { return *repo->Find("tiny", v); };
  EXPECT_EQ(repo->Shadow(*version(1)).canary, nullptr);  // no shadow_fraction: none
  TakeEvents();

  absl::SleepFor(absl::Milliseconds(20));  // a new modification time
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 1 } labels { name: "canary" version: 2 }
                            shadow_fraction: 0.1)pb");
  repo->Poll();
  EXPECT_THAT(TakeEvents(), ElementsAre("labels_changed tiny: canary=2, stable=1; shadow_fraction=0.1"));
  const ModelRepository::ShadowTarget target = repo->Shadow(*version(1));
  EXPECT_EQ(target.canary, version(2));
  EXPECT_EQ(target.fraction, 0.1);
  EXPECT_EQ(repo->Shadow(*version(2)).canary, nullptr);  // calls the canary answers are not shadowed

  // A rejected file keeps the fraction in force with the labels.
  absl::SleepFor(absl::Milliseconds(20));
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 1 } labels { name: "canary" version: 5 }
                            shadow_fraction: 1)pb");
  repo->Poll();
  EXPECT_EQ(repo->Shadow(*version(1)).fraction, 0.1);

  // Promoted: both labels name version 2, nothing is shadowed.
  absl::SleepFor(absl::Milliseconds(20));
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 2 } labels { name: "canary" version: 2 }
                            shadow_fraction: 1)pb");
  repo->Poll();
  EXPECT_EQ(repo->Shadow(*version(2)).canary, nullptr);
  EXPECT_EQ(repo->Shadow(*version(1)).canary, nullptr);
}

TEST(VersionLabelsTest, TheRolloutFileIsReadAndCheckedNamingWhatIsWrong) {
  const std::string dir = testing::MakeTempDir();
  EXPECT_EQ(*ReadRollout(dir), RolloutPlan{});  // no file: no labels, no shadowing
  auto read = [&](const std::string& text) {
    testing::WriteFileOrDie(dir + "/" + kRolloutFile, text);
    return ReadRollout(dir);
  };
  const auto plan = read(R"pb(labels { name: "stable" version: 7 } labels { name: "canary-2.b_c" version: 8 }
                              shadow_fraction: 0.25)pb");
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->labels, ElementsAre(std::make_pair(std::string("canary-2.b_c"), int64_t{8}),
                                        std::make_pair(std::string("stable"), int64_t{7})));
  EXPECT_EQ(plan->shadow_fraction, 0.25);
  for (const auto& [text, error] : std::vector<std::pair<std::string, std::string>>{
           {"labels { name: \"stable\" version: 7 }\nlabels { name: \"x\" vers: 1 }",
            "line 2, column 24: Message type"},
           {R"pb(labels { name: "" version: 7 })pb", "label '': a label is 1-64 of [A-Za-z0-9_.-]"},
           {R"pb(labels { name: "a/b" version: 7 })pb", "label 'a/b': a label is 1-64"},
           {R"pb(labels { name: "stable" })pb", "label 'stable': version must be positive, got 0"},
           {R"pb(labels { name: "a" version: 1 } labels { name: "a" version: 2 })pb", "label 'a' appears twice"},
           {R"pb(shadow_fraction: 1.5)pb", "shadow_fraction must be in [0, 1], got 1.5"},
           {R"pb(shadow_fraction: -0.1)pb", "shadow_fraction must be in [0, 1], got -0.1"},
           {R"pb(shadow_fraction: nan)pb", "shadow_fraction must be in [0, 1], got nan"}}) {
    const auto labels = read(text);
    EXPECT_EQ(labels.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(labels.status().message()), HasSubstr(std::string(kRolloutFile) + ": ")) << text;
    EXPECT_THAT(std::string(labels.status().message()), HasSubstr(error)) << text;
  }
}

TEST_F(WatchedRepositoryTest, AStrictLoadFailsOnLabelsItCannotApply) {
  Write("tiny", 1);
  WriteRollout("tiny", R"pb(labels { name: "stable" version: 2 })pb");
  ModelRepository::Options options = RepoOptions(root_);
  options.fail_on_model_error = true;
  std::vector<std::string> warnings;
  const auto strict = ModelRepository::Load(options, &warnings);
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(strict.status().message()),
              HasSubstr("label 'stable' names version 2, which has no directory"));
  options.fail_on_model_error = false;  // then the newest serves, the error reported
  const auto lenient = ModelRepository::Load(options, &warnings);
  ASSERT_TRUE(lenient.ok()) << lenient.status();
  EXPECT_EQ((*(*lenient)->Find("tiny", 0))->version, 1);
}

}  // namespace
}  // namespace masknet
