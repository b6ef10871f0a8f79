#include "loader/model_loader.h"

#include <cmath>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loader/model_repository.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

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

TEST(ModelRepositoryTest, ServesNewestVersionByDefaultAndNamesWhatIsMissing) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  testing::WriteModelVersion(root, "tiny", 3, testing::kTinyConfig, testing::RandomWeights(spec, 3));
  std::filesystem::create_directories(root + "/tiny/latest");
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load({root, "", {}}, &warnings);
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

TEST(ModelRepositoryTest, FailsOnTheFirstBadVersionWithItsError) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  weights.erase("mlp.0.bias");
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, weights);
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load({root, "", {}}, &warnings);
  ASSERT_FALSE(repo.ok());
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(repo.status().message()), HasSubstr("tiny/1/weights.safetensors: missing tensor 'mlp.0.bias'"));
}

TEST(ModelRepositoryTest, EmptyRootIsNotFound) {
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load({testing::MakeTempDir(), "", {}}, &warnings);
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(repo.status().message()), HasSubstr("no model versions under"));
}

TEST(ModelRepositoryTest, UnknownDefaultModelIsNotFound) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load({root, "huge", {}}, &warnings);
  EXPECT_EQ(repo.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(repo.status().message()), HasSubstr("default model 'huge'"));
}

TEST(ModelRepositoryTest, WithSeveralModelsAndNoDefaultAnEmptyNameIsInvalid) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "a", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  testing::WriteModelVersion(root, "b", 1, testing::kTinyConfig, testing::RandomWeights(spec, 2));
  std::vector<std::string> warnings;
  auto repo = ModelRepository::Load({root, "", {}}, &warnings);
  ASSERT_TRUE(repo.ok());
  auto found = (*repo)->Find("", 0);
  EXPECT_EQ(found.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(found.status().message()), HasSubstr("no default model (serving 'a', 'b')"));
}

}  // namespace
}  // namespace masknet
