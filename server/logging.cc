#include "server/logging.h"

#include <atomic>
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace masknet {
namespace {

std::atomic<LogFormat> log_format{LogFormat::kText};

absl::string_view SeverityName(Severity s) {
  switch (s) {
    case Severity::kInfo:
      return "INFO";
    case Severity::kWarning:
      return "WARNING";
    case Severity::kError:
      return "ERROR";
  }
  return "INFO";
}

// A JSON string literal of `text`.
std::string Quote(absl::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace

void SetLogFormat(LogFormat format) { log_format = format; }

bool AbslParseFlag(absl::string_view text, LogFormat* format, std::string* error) {
  if (text == "text") {
    *format = LogFormat::kText;
  } else if (text == "json") {
    *format = LogFormat::kJson;
  } else {
    *error = absl::StrCat("must be text or json, got '", text, "'");
    return false;
  }
  return true;
}

std::string AbslUnparseFlag(LogFormat format) { return format == LogFormat::kJson ? "json" : "text"; }

void Log(Severity severity, absl::string_view message, LogFields fields) {
  const std::string time = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  std::string line;
  if (log_format == LogFormat::kJson) {
    line = absl::StrCat("{\"time\": ", Quote(time), ", \"severity\": ", Quote(SeverityName(severity)),
                        ", \"message\": ", Quote(message));
    for (const auto& [key, value] : fields) absl::StrAppend(&line, ", ", Quote(key), ": ", Quote(value));
    line += "}\n";
  } else {
    line = absl::StrCat(time, " ", SeverityName(severity).substr(0, 1), " masknet_server: ", message);
    for (const auto& [key, value] : fields) absl::StrAppend(&line, " ", key, "=", value);
    line += "\n";
  }
  static absl::Mutex mu(absl::kConstInit);
  absl::MutexLock lock(&mu);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace masknet
