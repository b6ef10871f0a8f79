#include "model/feature_schema.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

using ::testing::HasSubstr;

// kTinyConfig: context viewer_id (categorical), viewer_vec (dense 3);
// candidate age (dense 1, REJECT), topics (IDENTITY 16, max 4, may be
// empty), counts (dense 2, REPLACE_WITH_ZERO).
class FeatureSchemaTest : public ::testing::Test {
 protected:
  FeatureSchemaTest() : schema_(*FeatureSchema::Create(testing::ParseConfigOrDie(testing::kTinyConfig))) {}

  absl::Status ValidateCandidate(std::vector<float> dense, std::vector<int64_t> ids,
                                 std::vector<uint32_t> counts = {}) {
    dense_ = std::move(dense);
    ids_ = std::move(ids);
    counts_ = std::move(counts);
    return schema_.Validate(Scope::kCandidate, {dense_, ids_, counts_}, "candidates[7].features");
  }

  FeatureSchema schema_;
  std::vector<float> dense_;
  std::vector<int64_t> ids_;
  std::vector<uint32_t> counts_;
};

void ExpectInvalid(const absl::Status& status, const std::string& substring) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(substring));
  EXPECT_THAT(std::string(status.message()), HasSubstr("candidates[7].features"));
}

TEST_F(FeatureSchemaTest, LaysOutFieldsInSchemaOrder) {
  ASSERT_EQ(schema_.fields().size(), 5u);
  EXPECT_EQ(schema_.instance_width(), 4 + 1 + 3 + 4 + 2);
  EXPECT_EQ(schema_.fields()[2].offset, 5);  // viewer_vec after viewer_id and age
  EXPECT_EQ(schema_.scope(Scope::kContext).dense_width, 3);
  EXPECT_EQ(schema_.scope(Scope::kCandidate).dense_width, 3);
  EXPECT_EQ(schema_.fields()[4].scope_index, 1);  // counts follow age in candidate dense
}

TEST_F(FeatureSchemaTest, AcceptsValidValues) {
  EXPECT_TRUE(ValidateCandidate({1, 2, 3}, {5}).ok());
  EXPECT_TRUE(ValidateCandidate({1, 2, 3}, {5, 6, 7}, {3}).ok());
  EXPECT_TRUE(ValidateCandidate({1, 2, 3}, {}, {0}).ok());  // topics may be empty
}

TEST_F(FeatureSchemaTest, RejectsWrongNumberOfDenseValues) {
  ExpectInvalid(ValidateCandidate({1, 2}, {5}), "dense has 2 values, but the candidate fields need 3 (age:1, counts:2)");
}

TEST_F(FeatureSchemaTest, RejectsWrongNumberOfIdsWithoutCounts) {
  ExpectInvalid(ValidateCandidate({1, 2, 3}, {5, 6}), "ids has 2 ids, but id_counts is empty");
}

TEST_F(FeatureSchemaTest, RejectsIdCountsOfWrongLength) {
  ExpectInvalid(ValidateCandidate({1, 2, 3}, {5, 6}, {1, 1}),
                "id_counts has 2 entries, but there are 1 candidate categorical fields (topics)");
}

TEST_F(FeatureSchemaTest, RejectsIdCountsThatDoNotAddUp) {
  ExpectInvalid(ValidateCandidate({1, 2, 3}, {5, 6}, {3}), "ids has 2 ids, but id_counts add up to 3");
}

TEST_F(FeatureSchemaTest, RejectsTooManyIdsForAField) {
  ExpectInvalid(ValidateCandidate({1, 2, 3}, {1, 2, 3, 4, 5}, {5}), "field 'topics' has 5 ids; at most 4");
}

TEST_F(FeatureSchemaTest, RejectsIdOutsideIdentityRange) {
  ExpectInvalid(ValidateCandidate({1, 2, 3}, {16}), "field 'topics' id 16 is outside [0, 16)");
  ExpectInvalid(ValidateCandidate({1, 2, 3}, {-1}), "field 'topics' id -1 is outside [0, 16)");
}

TEST_F(FeatureSchemaTest, RejectsNonFiniteValueWherePolicyRejects) {
  ExpectInvalid(ValidateCandidate({std::nanf(""), 2, 3}, {5}), "field 'age' value 0 is nan");
  ExpectInvalid(ValidateCandidate({std::numeric_limits<float>::infinity(), 2, 3}, {5}),
                "field 'age' value 0 is inf");
}

TEST_F(FeatureSchemaTest, AcceptsNonFiniteValueWherePolicyReplaces) {
  EXPECT_TRUE(ValidateCandidate({1, std::nanf(""), -std::numeric_limits<float>::infinity()}, {5}).ok());
}

TEST(FeatureSchemaContextTest, RejectsMissingContextIdAndSaysContext) {
  auto schema = *FeatureSchema::Create(testing::ParseConfigOrDie(testing::kTinyConfig));
  std::vector<float> dense = {1, 2, 3};
  const absl::Status s = schema.Validate(Scope::kContext, {dense, {}, {}}, "context");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("context: ids has 0 ids"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("(viewer_id)"));
}

TEST(FeatureSchemaContextTest, RejectsEmptyFieldThatDoesNotAllowIt) {
  auto schema = *FeatureSchema::Create(testing::ParseConfigOrDie(testing::kTinyConfig));
  std::vector<float> dense = {1, 2, 3};
  std::vector<uint32_t> counts = {0};
  const absl::Status s = schema.Validate(Scope::kContext, {dense, {}, counts}, "context");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("field 'viewer_id' has no ids"));
}

TEST(FeatureSchemaEmbeddedDenseTest, AnEmbeddedScalarTakesOneValueAndFillsEmbeddingDimOfV) {
  auto config = testing::ParseConfigOrDie(testing::kTinyConfig);
  // candidate "age": dense width 1 -> embedded into 6 numbers of V.
  config.mutable_fields(1)->mutable_dense()->set_embedding_dim(6);
  auto schema = FeatureSchema::Create(config);
  ASSERT_TRUE(schema.ok()) << schema.status();
  const FieldSpec& age = schema->fields()[1];
  EXPECT_EQ(age.values, 1);
  EXPECT_EQ(age.width, 6);
  EXPECT_EQ(schema->fields()[2].offset, age.offset + 6);
  EXPECT_EQ(schema->scope(Scope::kCandidate).dense_width, 3);  // age 1 + counts 2
  std::vector<float> dense = {1, 2, 3};
  std::vector<int64_t> ids = {4};
  EXPECT_TRUE(schema->Validate(Scope::kCandidate, {dense, ids, {}}, "candidates[0]").ok());
}

TEST(FeatureSchemaEmbeddedDenseTest, RejectsEmbeddingAVectorField) {
  auto config = testing::ParseConfigOrDie(testing::kTinyConfig);
  config.mutable_fields(2)->mutable_dense()->set_embedding_dim(4);  // viewer_vec: width 3
  auto schema = FeatureSchema::Create(config);
  ASSERT_FALSE(schema.ok());
  EXPECT_THAT(std::string(schema.status().message()),
              HasSubstr("dense.embedding_dim embeds a scalar: dense.width must be 1, got 3"));
}

}  // namespace
}  // namespace masknet
