#include "loader/safetensors.h"

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

using ::testing::HasSubstr;

// A file from a raw JSON header and `data_bytes` bytes of data.
std::string FileWithHeader(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\0');
}

void ExpectInvalid(const std::string& bytes, const std::string& substring) {
  auto parsed = ParseSafetensors("w.safetensors", bytes);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("w.safetensors: "));
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(substring));
}

TEST(SafetensorsTest, RoundTripsF32) {
  TensorMap in;
  in["a"] = Tensor{{2, 3}, {1, 2, 3, 4, 5, -6.5f}};
  in["b"] = Tensor{{1}, {0.25f}};
  auto out = ParseSafetensors("w", testing::EncodeSafetensors(in));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(out->at("a").values, in["a"].values);
  EXPECT_EQ(out->at("b").values, in["b"].values);
}

TEST(SafetensorsTest, WidensBf16) {
  TensorMap in;
  in["a"] = Tensor{{3}, {1.0f, -2.5f, 3.0f + 1.0f / 512}};  // the last rounds to 3
  auto out = ParseSafetensors("w", testing::EncodeSafetensors(in, /*bf16=*/true));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->at("a").values, (std::vector<float>{1.0f, -2.5f, 3.0f}));
}

TEST(SafetensorsTest, ReadingAFileGivesWhatParsingItsBytesGives) {
  // Big enough that BF16 widens in several chunks.
  TensorMap in;
  in["a"] = Tensor{{3, 2}, {1.5f, -2.0f, 0.25f, 3.0f, -0.5f, 8.0f}};
  std::vector<float> big(700000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 1000) - 500.0f;
  in["b"] = Tensor{{700, 1000}, big};
  const std::string dir = testing::MakeTempDir();
  for (const bool bf16 : {false, true}) {
    const std::string bytes = testing::EncodeSafetensors(in, bf16);
    testing::WriteFileOrDie(dir + "/w.safetensors", bytes);
    auto read = ReadSafetensors(dir + "/w.safetensors");
    auto parsed = ParseSafetensors(dir + "/w.safetensors", bytes);
    ASSERT_TRUE(read.ok()) << read.status();
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    ASSERT_EQ(read->size(), 2u);
    for (const char* name : {"a", "b"}) {
      EXPECT_EQ(read->at(name).shape, parsed->at(name).shape) << name;
      EXPECT_EQ(read->at(name).values, parsed->at(name).values) << name << (bf16 ? " bf16" : " f32");
    }
    // A file cut short is refused with the parser's message.
    testing::WriteFileOrDie(dir + "/w.safetensors", bytes.substr(0, bytes.size() - 4));
    auto cut = ReadSafetensors(dir + "/w.safetensors");
    EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(cut.status().message()), HasSubstr("(truncated?)"));
  }
  EXPECT_EQ(ReadSafetensors(dir + "/missing.safetensors").status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, RejectsFileShorterThanTheLengthPrefix) {
  ExpectInvalid("abc", "file is 3 bytes");
}

TEST(SafetensorsTest, RejectsHeaderRunningPastTheEnd) {
  std::string bytes = FileWithHeader("{}", 0);
  bytes.resize(bytes.size() - 1);
  ExpectInvalid(bytes, "header length 2 runs past the end of the 9-byte file (truncated?)");
}

TEST(SafetensorsTest, RejectsMalformedJson) {
  ExpectInvalid(FileWithHeader("{\"a\": ", 0), "header is not a JSON object");
}

TEST(SafetensorsTest, RejectsUnsupportedDtype) {
  ExpectInvalid(FileWithHeader(R"({"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", 2),
                "tensor 'a': dtype F16 is not supported (F32 or BF16)");
}

TEST(SafetensorsTest, RejectsOffsetsThatDisagreeWithTheShape) {
  ExpectInvalid(FileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8),
                "tensor 'a': data_offsets [0, 4] span 4 bytes, but shape [2] of F32 needs 8");
}

TEST(SafetensorsTest, RejectsOffsetsOutsideTheData) {
  ExpectInvalid(FileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8),
                "tensor 'a': data_offsets [4, 12] lie outside the 8 data bytes (truncated?)");
}

TEST(SafetensorsTest, RejectsOverlappingTensors) {
  ExpectInvalid(FileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                               8),
                "tensors 'a' and 'b' overlap");
}

TEST(SafetensorsTest, RejectsNegativeShape) {
  ExpectInvalid(FileWithHeader(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                "tensor 'a': shape holds something other than a non-negative integer");
}

TEST(SafetensorsTest, RejectsUnknownEntryKeys) {
  ExpectInvalid(FileWithHeader(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4),
                "tensor 'a': unknown header key 'x'");
}

TEST(SafetensorsTest, RejectsHugeHeaderLength) {
  std::string bytes(16, '\0');
  const uint64_t n = uint64_t{1} << 40;
  std::memcpy(bytes.data(), &n, 8);
  ExpectInvalid(bytes, "exceeds the limit");
}

}  // namespace
}  // namespace masknet
