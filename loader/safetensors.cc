#include "loader/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace masknet {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

struct Entry {
  std::string name;
  int itemsize = 0;  // 4: F32, 2: BF16
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

// A JSON number that is a whole number in [0, 2^53].
bool AsCount(const Value& v, uint64_t* out) {
  if (v.kind_case() != Value::kNumberValue) return false;
  const double d = v.number_value();
  if (!(d >= 0 && d <= 9007199254740992.0) || std::floor(d) != d) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

absl::StatusOr<Entry> ParseEntry(const std::string& name, const Value& value) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", what));
  };
  if (value.kind_case() != Value::kStructValue) return bad("header entry is not a JSON object");
  const auto& fields = value.struct_value().fields();
  Entry e;
  e.name = name;
  for (const auto& [key, v] : fields) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return bad(absl::StrCat("unknown header key '", key, "'"));
    }
  }
  auto dtype = fields.find("dtype");
  if (dtype == fields.end() || dtype->second.kind_case() != Value::kStringValue) {
    return bad("missing dtype");
  }
  if (dtype->second.string_value() == "F32") {
    e.itemsize = 4;
  } else if (dtype->second.string_value() == "BF16") {
    e.itemsize = 2;
  } else {
    return bad(absl::StrCat("dtype ", dtype->second.string_value(), " is not supported (F32 or BF16)"));
  }
  auto shape = fields.find("shape");
  if (shape == fields.end() || shape->second.kind_case() != Value::kListValue) {
    return bad("missing shape");
  }
  uint64_t elements = 1;
  for (const Value& dim : shape->second.list_value().values()) {
    uint64_t n;
    if (!AsCount(dim, &n)) return bad("shape holds something other than a non-negative integer");
    e.shape.push_back(static_cast<int64_t>(n));
    if (n != 0 && elements > (uint64_t{1} << 40) / n) return bad("shape is absurdly large");
    elements *= n;
  }
  auto offsets = fields.find("data_offsets");
  if (offsets == fields.end() || offsets->second.kind_case() != Value::kListValue ||
      offsets->second.list_value().values_size() != 2 ||
      !AsCount(offsets->second.list_value().values(0), &e.begin) ||
      !AsCount(offsets->second.list_value().values(1), &e.end)) {
    return bad("data_offsets must be two non-negative integers [begin, end]");
  }
  if (e.begin > e.end) {
    return bad(absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] end before they begin"));
  }
  if (e.end - e.begin != elements * e.itemsize) {
    return bad(absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
                            " bytes, but shape ", ShapeToString(e.shape), " of ",
                            dtype->second.string_value(), " needs ", elements * e.itemsize));
  }
  return e;
}

// Reads `length` bytes at `offset` of the file into dst.
using ReadAt = absl::FunctionRef<absl::Status(uint64_t offset, size_t length, char* dst)>;

// The parser, on a file of `file_size` bytes that `read` reads: the header
// first, then each tensor straight into its values (F32) or through a small
// buffer (BF16, widened), so no copy of the whole file is ever held.
absl::StatusOr<TensorMap> Parse(absl::string_view file_name, uint64_t file_size, ReadAt read) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": ", what));
  };
  if (file_size < 8) {
    return bad(absl::StrCat("file is ", file_size, " bytes; a safetensors file starts with an 8-byte header length"));
  }
  char length_bytes[8];
  if (auto s = read(0, 8, length_bytes); !s.ok()) return s;
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(length_bytes[i]);
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return bad(absl::StrCat("header length ", header_len, " exceeds the limit of ",
                            kMaxSafetensorsHeaderBytes, " bytes"));
  }
  if (header_len > file_size - 8) {
    return bad(absl::StrCat("header length ", header_len, " runs past the end of the ",
                            file_size, "-byte file (truncated?)"));
  }
  std::string header(header_len, '\0');
  if (auto s = read(8, header_len, header.data()); !s.ok()) return s;
  const uint64_t data_begin = 8 + header_len, data_size = file_size - data_begin;

  Struct root;
  google::protobuf::util::JsonParseOptions options;
  const auto parsed = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(header.data(), header.size()), &root, options);
  if (!parsed.ok()) {
    return bad(absl::StrCat("header is not a JSON object: ", std::string(parsed.message())));
  }
  std::vector<Entry> entries;
  for (const auto& [name, value] : root.fields()) {
    if (name == "__metadata__") continue;
    auto entry = ParseEntry(name, value);
    if (!entry.ok()) return bad(entry.status().message());
    if (entry->end > data_size) {
      return bad(absl::StrCat("tensor '", name, "': data_offsets [", entry->begin, ", ", entry->end,
                              "] lie outside the ", data_size, " data bytes (truncated?)"));
    }
    entries.push_back(*std::move(entry));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end) {
      return bad(absl::StrCat("tensors '", entries[i - 1].name, "' and '", entries[i].name,
                              "' overlap: data_offsets [", entries[i - 1].begin, ", ",
                              entries[i - 1].end, "] and [", entries[i].begin, ", ",
                              entries[i].end, "]"));
    }
  }

  TensorMap tensors;
  std::vector<uint16_t> halves;  // a BF16 tensor's bytes, a chunk at a time
  constexpr size_t kChunk = size_t{1} << 18;
  for (const Entry& e : entries) {
    Tensor t;
    t.shape = e.shape;
    const size_t n = (e.end - e.begin) / e.itemsize;
    t.values.resize(n);
    if (e.itemsize == 4) {
      if (auto s = read(data_begin + e.begin, n * 4, reinterpret_cast<char*>(t.values.data())); !s.ok()) return s;
    } else {
      for (size_t done = 0; done < n; done += kChunk) {
        const size_t count = std::min(kChunk, n - done);
        halves.resize(count);
        if (auto s = read(data_begin + e.begin + 2 * done, 2 * count, reinterpret_cast<char*>(halves.data()));
            !s.ok()) {
          return s;
        }
        for (size_t i = 0; i < count; ++i) {
          const uint32_t bits = static_cast<uint32_t>(halves[i]) << 16;
          std::memcpy(&t.values[done + i], &bits, 4);
        }
      }
    }
    tensors.emplace(e.name, std::move(t));
  }
  return tensors;
}

// Closes a file descriptor.
class FileCloser {
 public:
  explicit FileCloser(int fd) : fd_(fd) {}
  ~FileCloser() { close(fd_); }
  FileCloser(const FileCloser&) = delete;
  FileCloser& operator=(const FileCloser&) = delete;

 private:
  int fd_;
};

}  // namespace

absl::StatusOr<TensorMap> ParseSafetensors(absl::string_view file_name, absl::string_view bytes) {
  return Parse(file_name, bytes.size(), [&](uint64_t offset, size_t length, char* dst) {
    std::memcpy(dst, bytes.data() + offset, length);
    return absl::OkStatus();
  });
}

absl::StatusOr<TensorMap> ReadSafetensors(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::UnavailableError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  const FileCloser closer(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return absl::UnavailableError(absl::StrCat(path, ": cannot stat: ", std::strerror(errno)));
  return Parse(path, static_cast<uint64_t>(st.st_size), [&](uint64_t offset, size_t length, char* dst) {
    while (length > 0) {
      const ssize_t got = pread(fd, dst, length, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) return absl::UnavailableError(absl::StrCat(path, ": read failed: ", std::strerror(errno)));
      if (got == 0) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": the file ended at byte ", offset,
                                                       " while it was read (truncated while loading?)"));
      }
      dst += got;
      offset += static_cast<uint64_t>(got);
      length -= static_cast<size_t>(got);
    }
    return absl::OkStatus();
  });
}

}  // namespace masknet
