#ifndef MASKNET_SERVER_LOGGING_H_
#define MASKNET_SERVER_LOGGING_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

// The server's event log on stderr: one line per event, with a UTC
// timestamp and a severity, as text or as JSON (one object per line, for log
// pipelines). Thread-safe: lines never interleave.
namespace masknet {

enum class Severity { kInfo, kWarning, kError };
enum class LogFormat { kText, kJson };

// Sets the format of later lines. Default: text.
void SetLogFormat(LogFormat format);

// LogFormat as a flag's value (absl's flag marshalling finds them): "text"
// or "json"; anything else is refused, naming the choices.
bool AbslParseFlag(absl::string_view text, LogFormat* format, std::string* error);
std::string AbslUnparseFlag(LogFormat format);

// Extra key-value fields of a line (e.g. {"model", "home"}): text lines show
// them as key=value after the message, JSON lines as string members.
using LogFields = std::initializer_list<std::pair<absl::string_view, std::string>>;

// Writes one line.
void Log(Severity severity, absl::string_view message, LogFields fields = {});

}  // namespace masknet

#endif  // MASKNET_SERVER_LOGGING_H_
