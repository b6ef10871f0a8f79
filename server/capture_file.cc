#include "server/capture_file.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"

namespace masknet {

namespace fs = std::filesystem;

void AppendCaptureRecord(const serving::v1::CapturedCall& call, std::string* out) {
  AppendCaptureRecord(call.arrival_unix_micros(), call.request(), call.response(), call.precision(), out);
}

void AppendCaptureRecord(int64_t arrival_unix_micros, const serving::v1::RankRequest& request,
                         const serving::v1::RankResponse& response, absl::string_view precision, std::string* out) {
  using google::protobuf::io::CodedOutputStream;
  using google::protobuf::internal::WireFormatLite;
  const size_t request_size = request.ByteSizeLong(), response_size = response.ByteSizeLong();
  // CapturedCall's fields in order, as its serializer writes them (a field
  // at its default is left out).
  size_t size = 0;
  if (arrival_unix_micros != 0) size += 1 + CodedOutputStream::VarintSize64(static_cast<uint64_t>(arrival_unix_micros));
  size += 1 + CodedOutputStream::VarintSize32(static_cast<uint32_t>(request_size)) + request_size;
  size += 1 + CodedOutputStream::VarintSize32(static_cast<uint32_t>(response_size)) + response_size;
  if (!precision.empty()) size += 1 + CodedOutputStream::VarintSize32(static_cast<uint32_t>(precision.size())) + precision.size();
  const size_t at = out->size();
  out->resize(at + CodedOutputStream::VarintSize32(static_cast<uint32_t>(size)) + size);
  uint8_t* p = reinterpret_cast<uint8_t*>(out->data() + at);
  p = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(size), p);
  if (arrival_unix_micros != 0) {
    p = WireFormatLite::WriteInt64ToArray(serving::v1::CapturedCall::kArrivalUnixMicrosFieldNumber, arrival_unix_micros, p);
  }
  p = WireFormatLite::WriteTagToArray(serving::v1::CapturedCall::kRequestFieldNumber,
                                      WireFormatLite::WIRETYPE_LENGTH_DELIMITED, p);
  p = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(request_size), p);
  p = request.SerializeWithCachedSizesToArray(p);
  p = WireFormatLite::WriteTagToArray(serving::v1::CapturedCall::kResponseFieldNumber,
                                      WireFormatLite::WIRETYPE_LENGTH_DELIMITED, p);
  p = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(response_size), p);
  p = response.SerializeWithCachedSizesToArray(p);
  if (!precision.empty()) {
    p = WireFormatLite::WriteStringToArray(serving::v1::CapturedCall::kPrecisionFieldNumber, std::string(precision), p);
  }
}

absl::StatusOr<std::vector<std::string>> ListCaptureFiles(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return absl::NotFoundError(absl::StrCat("capture directory '", dir, "' not found"));
  std::vector<std::string> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (absl::StartsWith(name, kCapturePrefix) &&
        (absl::EndsWith(name, kCaptureSuffix) || absl::EndsWith(name, kCapturePartSuffix))) {
      files.push_back(it->path().string());
    }
  }
  if (ec) return absl::UnavailableError(absl::StrCat("cannot list capture directory '", dir, "': ", ec.message()));
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<std::vector<serving::v1::CapturedCall>> ReadCaptureFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open capture file '", path, "'"));
  const std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::UnavailableError(absl::StrCat("cannot read capture file '", path, "'"));
  const bool part = absl::EndsWith(path, kCapturePartSuffix);
  std::vector<serving::v1::CapturedCall> calls;
  google::protobuf::io::ArrayInputStream stream(data.data(), static_cast<int>(data.size()));
  google::protobuf::io::CodedInputStream coded(&stream);
  coded.SetTotalBytesLimit(INT32_MAX);
  while (coded.CurrentPosition() < static_cast<int>(data.size())) {
    const int start = coded.CurrentPosition();
    uint32_t size = 0;
    const bool have_length = coded.ReadVarint32(&size);
    // An empty record is none the server writes (its request is never
    // empty): zeros a crash left.
    const bool whole = have_length && size > 0 &&
                       static_cast<int64_t>(coded.CurrentPosition()) + size <= static_cast<int64_t>(data.size());
    if (!whole) {
      if (part) break;  // the record being written
      return absl::DataLossError(absl::StrCat("capture file '", path, "': record ", calls.size(), " (at byte ",
                                              start, ") is cut short"));
    }
    const auto limit = coded.PushLimit(static_cast<int>(size));
    serving::v1::CapturedCall call;
    if (!call.ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage()) {
      return absl::DataLossError(
          absl::StrCat("capture file '", path, "': record ", calls.size(), " (at byte ", start, ") does not parse"));
    }
    coded.PopLimit(limit);
    calls.push_back(std::move(call));
  }
  return calls;
}

absl::StatusOr<std::vector<serving::v1::CapturedCall>> ReadCaptureDir(const std::string& dir, int64_t max_calls) {
  auto files = ListCaptureFiles(dir);
  if (!files.ok()) return files.status();
  std::vector<serving::v1::CapturedCall> calls;
  for (const std::string& file : *files) {
    auto read = ReadCaptureFile(file);
    if (!read.ok()) return read.status();
    for (auto& call : *read) {
      if (max_calls > 0 && static_cast<int64_t>(calls.size()) >= max_calls) return calls;
      calls.push_back(std::move(call));
    }
  }
  return calls;
}

}  // namespace masknet
