#ifndef MASKNET_SERVER_CAPTURE_FILE_H_
#define MASKNET_SERVER_CAPTURE_FILE_H_

// Capture files: the Rank calls masknet_server captured (--capture_dir), as
// serving::v1::CapturedCall records, each preceded by its length as a varint
// (protobuf's length-delimited stream). Files are named calls-<time>-...; a
// file the server still writes ends in ".binpb.part" and may end with half
// a record; it is renamed to ".binpb" once complete. Names sort by the time
// the file was begun.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "masknet/serving/v1/capture.pb.h"

namespace masknet {

inline constexpr char kCapturePrefix[] = "calls-";
inline constexpr char kCaptureSuffix[] = ".binpb";
inline constexpr char kCapturePartSuffix[] = ".binpb.part";

// Appends `call` to `out` as one record.
void AppendCaptureRecord(const serving::v1::CapturedCall& call, std::string* out);
// The same record from its parts, without copying them into a CapturedCall.
void AppendCaptureRecord(int64_t arrival_unix_micros, const serving::v1::RankRequest& request,
                         const serving::v1::RankResponse& response, absl::string_view precision, std::string* out);

// The capture files of `dir` (calls-*.binpb, and calls-*.binpb.part still
// written), by name (oldest first); other files are not looked at. Errors: NOT_FOUND or UNAVAILABLE naming the directory.
absl::StatusOr<std::vector<std::string>> ListCaptureFiles(const std::string& dir);

// Every record of the capture file `path`, in order. A ".part" file's last
// record, if cut short, is left out (the server was writing it). Errors name
// the file and the record that cannot be read.
absl::StatusOr<std::vector<serving::v1::CapturedCall>> ReadCaptureFile(const std::string& path);

// The records of every capture file of `dir`, oldest first; at most
// `max_calls` of them (0: all).
absl::StatusOr<std::vector<serving::v1::CapturedCall>> ReadCaptureDir(const std::string& dir, int64_t max_calls = 0);

}  // namespace masknet

#endif  // MASKNET_SERVER_CAPTURE_FILE_H_
