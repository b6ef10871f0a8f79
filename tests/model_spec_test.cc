#include "model/model_spec.h"

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

using ::testing::HasSubstr;
using config::v1::ModelConfig;

ModelConfig Tiny() { return testing::ParseConfigOrDie(testing::kTinyConfig); }

// Applies `edit` to the tiny config and expects INVALID_ARGUMENT mentioning
// every one of `substrings`.
void ExpectRejected(const std::function<void(ModelConfig&)>& edit,
                    std::initializer_list<std::string> substrings) {
  ModelConfig config = Tiny();
  edit(config);
  auto spec = ModelSpec::FromConfig(config);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  for (const std::string& s : substrings) EXPECT_THAT(std::string(spec.status().message()), HasSubstr(s));
}

TEST(ModelSpecTest, ResolvesWidthsOfTheTinyModel) {
  auto spec = ModelSpec::FromConfig(Tiny());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->parallel);
  ASSERT_EQ(spec->blocks.size(), 2u);
  EXPECT_EQ(spec->blocks[0].masked_width, 14);
  EXPECT_EQ(spec->blocks[1].aggregation_size, 28);  // 2 x mask input width
  EXPECT_EQ(spec->masknet_output_width, 14);
  EXPECT_EQ(spec->mlp[0].input_width, 14);
  EXPECT_EQ(spec->tasks[1].negative_sampling_rate, 0.25f);
  ASSERT_EQ(spec->input_norms.size(), 1u);
  EXPECT_TRUE(spec->input_norms[0].context_only);
}

TEST(ModelSpecTest, CountsFlopsOfEveryDenseLayer) {
  auto spec = *ModelSpec::FromConfig(Tiny());
  const int64_t blocks = (14 * 16 + 16 * 14 + 14 * 8) + (14 * 28 + 28 * 14 + 14 * 6);
  EXPECT_EQ(spec.FlopsPerCandidate(), 2 * (blocks + 14 * 8 + 8 * 4 + 4 * 1 + 8 * 1));
}

TEST(ModelSpecTest, SerialReductionOverMaskedInputUsesPreviousOutputWidth) {
  ModelConfig config = Tiny();
  config.mutable_masknet()->set_mode(config::v1::SERIAL);
  auto* r = config.mutable_masknet()->mutable_blocks(1)->mutable_reduction();
  r->set_factor(1.5f);
  r->set_base(config::v1::MASKED_INPUT_WIDTH);
  auto spec = ModelSpec::FromConfig(config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->blocks[1].masked_width, 8);
  EXPECT_EQ(spec->blocks[1].aggregation_size, 12);
  EXPECT_EQ(spec->masknet_output_width, 6);
}

TEST(ModelSpecTest, ExpectedTensorsFollowTheFormat) {
  auto spec = *ModelSpec::FromConfig(Tiny());
  std::vector<std::string> names;
  for (const TensorSpec& t : spec.ExpectedTensors()) names.push_back(t.name);
  EXPECT_THAT(names, ::testing::IsSupersetOf({
                         "fields.viewer_id.embedding", "fields.age.scale", "fields.age.shift",
                         "fields.counts.batch_norm.running_mean", "fields.counts.batch_norm.weight",
                         "input_norms.viewer_vec_norm.weight", "masknet.blocks.0.mask.aggregation.weight",
                         "masknet.blocks.1.hidden.bias", "masknet.blocks.1.layer_norm.bias",
                         "mlp.0.weight", "tasks.click.1.bias", "tasks.like.0.weight"}));
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("masknet.blocks.0.hidden.bias")));
}

TEST(ModelSpecTest, RejectsUndeclaredNonFinitePolicy) {
  ExpectRejected([](ModelConfig& c) { c.mutable_fields(1)->mutable_dense()->clear_non_finite(); },
                 {"fields[1] ('age')", "non_finite must be REJECT or REPLACE_WITH_ZERO"});
}

TEST(ModelSpecTest, RejectsDuplicateFieldNames) {
  ExpectRejected([](ModelConfig& c) { c.mutable_fields(1)->set_name("viewer_id"); },
                 {"fields[1] ('viewer_id')", "duplicate field name"});
}

TEST(ModelSpecTest, RejectsUnspecifiedScope) {
  ExpectRejected([](ModelConfig& c) { c.mutable_fields(0)->clear_scope(); }, {"scope must be CONTEXT or CANDIDATE"});
}

TEST(ModelSpecTest, RejectsContradictoryClamp) {
  ExpectRejected([](ModelConfig& c) { c.mutable_fields(1)->mutable_dense()->set_clamp_min(5); },
                 {"clamp_min (5) is greater than dense.clamp_max (3)"});
}

TEST(ModelSpecTest, RejectsNormalizedMaskInputWithoutInputNorm) {
  ExpectRejected([](ModelConfig& c) { c.mutable_masknet()->set_mask_input(config::v1::MASK_INPUT_NORMALIZED); },
                 {"masknet.mask_input", "needs masknet.input_norm"});
}

TEST(ModelSpecTest, RejectsFieldLayerNormAfterTheFirstSerialBlock) {
  ExpectRejected(
      [](ModelConfig& c) {
        c.mutable_masknet()->set_mode(config::v1::SERIAL);
        c.mutable_masknet()->mutable_blocks(1)->set_input_norm(config::v1::FIELD_LAYER_NORM);
        c.mutable_masknet()->mutable_blocks(1)->set_input_norm_eps(1e-5f);
      },
      {"masknet.blocks[1].input_norm", "previous block's output"});
}

TEST(ModelSpecTest, RejectsFieldLayerNormOverAScalarField) {
  ExpectRejected(
      [](ModelConfig& c) {
        c.mutable_masknet()->set_input_norm(config::v1::FIELD_LAYER_NORM);
        c.mutable_masknet()->set_input_norm_eps(1e-5f);
      },
      {"masknet.input_norm", "field 'age' of width 1 is degenerate"});
}

TEST(ModelSpecTest, RejectsNonIntegralReductionProduct) {
  ExpectRejected([](ModelConfig& c) { c.mutable_masknet()->mutable_blocks(1)->mutable_reduction()->set_factor(0.3f); },
                 {"masknet.blocks[1].reduction.factor", "= 4.2", "is not a whole number in [1, 1048576]"});
}

TEST(ModelSpecTest, RejectsHugeReductionProductWithoutOverflow) {
  ExpectRejected([](ModelConfig& c) { c.mutable_masknet()->mutable_blocks(1)->mutable_reduction()->set_factor(1e30f); },
                 {"masknet.blocks[1].reduction.factor", "is not a whole number in [1, 1048576]"});
}

TEST(ModelSpecTest, RejectsReductionWithoutBase) {
  ExpectRejected([](ModelConfig& c) { c.mutable_masknet()->mutable_blocks(1)->mutable_reduction()->clear_base(); },
                 {"masknet.blocks[1].reduction.base", "MASK_INPUT_WIDTH or MASKED_INPUT_WIDTH"});
}

TEST(ModelSpecTest, RejectsBlockWithoutAggregation) {
  ExpectRejected([](ModelConfig& c) { c.mutable_masknet()->mutable_blocks(0)->clear_aggregation_size(); },
                 {"masknet.blocks[0]", "set aggregation_size or reduction"});
}

TEST(ModelSpecTest, RejectsUnspecifiedActivation) {
  ExpectRejected([](ModelConfig& c) { c.mutable_masknet()->mutable_blocks(0)->clear_activation(); },
                 {"masknet.blocks[0].activation", "ACTIVATION_NONE or RELU"});
}

TEST(ModelSpecTest, RejectsZeroLayerNormEps) {
  ExpectRejected([](ModelConfig& c) { c.mutable_masknet()->mutable_blocks(0)->set_layer_norm_eps(0); },
                 {"masknet.blocks[0].layer_norm_eps", "must be in (0, 1]"});
}

TEST(ModelSpecTest, ABlockWithoutLayerNormNeedsNoEpsAndNoTensors) {
  ModelConfig config = Tiny();
  config.mutable_masknet()->mutable_blocks(0)->set_no_layer_norm(true);
  config.mutable_masknet()->mutable_blocks(0)->set_layer_norm_eps(0);
  auto spec = ModelSpec::FromConfig(config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->blocks[0].layer_norm);
  for (const TensorSpec& t : spec->ExpectedTensors()) {
    EXPECT_THAT(t.name, ::testing::Not(HasSubstr("blocks.0.layer_norm")));
  }
}

TEST(ModelSpecTest, AnEmbeddedDenseFieldExpectsItsVectorAndScalarNormalization) {
  ModelConfig config = Tiny();
  auto* age = config.mutable_fields(1)->mutable_dense();  // candidate "age", width 1
  age->set_embedding_dim(5);
  age->mutable_batch_norm()->set_eps(1e-5f);
  auto spec = ModelSpec::FromConfig(config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorSpec& t : spec->ExpectedTensors()) shapes[t.name] = t.shape;
  EXPECT_EQ(shapes["fields.age.embedding"], std::vector<int64_t>{5});
  EXPECT_EQ(shapes["fields.age.batch_norm.running_mean"], std::vector<int64_t>{1});
}

TEST(ModelSpecTest, RejectsTaskWhoseLastLayerIsNotALogit) {
  ExpectRejected([](ModelConfig& c) { c.mutable_tasks(0)->mutable_layers(1)->set_output_size(2); },
                 {"tasks[0] ('click').layers[1]", "output_size 1 and ACTIVATION_NONE"});
}

TEST(ModelSpecTest, AcceptsCalibrationRatesAboveOne) {
  ModelConfig config = Tiny();
  config.mutable_tasks(1)->set_negative_sampling_rate(83.9f);
  auto spec = ModelSpec::FromConfig(config);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->tasks[1].negative_sampling_rate, 83.9f);
}

TEST(ModelSpecTest, RejectsCalibrationRatesThatAreNotPositiveAndFinite) {
  for (const float r : {0.0f, -0.5f, std::numeric_limits<float>::infinity(), std::nanf("")}) {
    ExpectRejected([r](ModelConfig& c) { c.mutable_tasks(1)->set_negative_sampling_rate(r); },
                   {"tasks[1] ('like').negative_sampling_rate", "positive and finite"});
  }
}

TEST(ModelSpecTest, RejectsInputNormOverNonAdjacentFields) {
  ExpectRejected(
      [](ModelConfig& c) {
        auto* n = c.add_input_norms();
        n->set_name("gap");
        n->add_fields("age");
        n->add_fields("topics");
        n->set_eps(1e-5f);
      },
      {"input_norms[1] ('gap')", "field 'topics' does not follow 'age'"});
}

TEST(ModelSpecTest, RejectsModelWithoutTasks) {
  ExpectRejected([](ModelConfig& c) { c.clear_tasks(); }, {"tasks", "1 to 64 task heads"});
}

TEST(ModelSpecTest, RejectsMissingMaskNet) {
  ExpectRejected([](ModelConfig& c) { c.clear_masknet(); }, {"masknet: missing"});
}

}  // namespace
}  // namespace masknet
