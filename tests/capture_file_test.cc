#include "server/capture_file.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

using ::testing::HasSubstr;

serving::v1::CapturedCall Call(int i) {
  serving::v1::CapturedCall call;
  call.set_arrival_unix_micros(1000 + i);
  call.mutable_request()->set_model_name("m");
  call.mutable_request()->add_candidates()->set_id(100 + i);
  call.mutable_response()->set_model_version(i);
  call.set_precision("fp32");
  return call;
}

TEST(CaptureFileTest, RecordsRoundTripAndACutShortTailIsTheWritersOnlyInAPartFile) {
  const std::string dir = testing::MakeTempDir();
  std::string bytes;
  for (int i = 0; i < 3; ++i) AppendCaptureRecord(Call(i), &bytes);
  std::string next;
  AppendCaptureRecord(Call(3), &next);
  const std::string cut = bytes + next.substr(0, next.size() / 2);
  testing::WriteFileOrDie(dir + "/calls-a.binpb", bytes);
  testing::WriteFileOrDie(dir + "/calls-b.binpb.part", cut);
  testing::WriteFileOrDie(dir + "/other.txt", "not a capture file");
  testing::WriteFileOrDie(dir + "/model.binpb", "not the server's: left alone");

  // The record is the message, length-delimited, as protobuf writes it.
  std::string one;
  AppendCaptureRecord(Call(1), &one);
  const std::string message = Call(1).SerializeAsString();
  EXPECT_EQ(one, std::string(1, static_cast<char>(message.size())) + message);

  const auto files = ListCaptureFiles(dir);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, ::testing::ElementsAre(dir + "/calls-a.binpb", dir + "/calls-b.binpb.part"));
  const auto calls = ReadCaptureDir(dir);
  ASSERT_TRUE(calls.ok()) << calls.status();
  ASSERT_EQ(calls->size(), 6u);  // 3 + 3: the part file's half record left out
  for (int i = 0; i < 6; ++i) EXPECT_EQ((*calls)[i].response().model_version(), i % 3) << i;
  EXPECT_EQ(ReadCaptureDir(dir, /*max_calls=*/4)->size(), 4u);

  // A complete file cut short, or holding bytes that do not parse, is an error naming the record.
  testing::WriteFileOrDie(dir + "/calls-a.binpb", cut);
  auto damaged = ReadCaptureFile(dir + "/calls-a.binpb");
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("calls-a.binpb': record 3 (at byte"));
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("is cut short"));
  testing::WriteFileOrDie(dir + "/calls-a.binpb", bytes + std::string("\x03\xff\xff\xff", 4));
  damaged = ReadCaptureFile(dir + "/calls-a.binpb");
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("record 3 (at byte"));
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("does not parse"));
  EXPECT_EQ(ListCaptureFiles(dir + "/missing").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace masknet
