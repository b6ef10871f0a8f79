#ifndef MASKNET_SERVER_FLAGS_H_
#define MASKNET_SERVER_FLAGS_H_

#include <string>

#include "absl/strings/string_view.h"
#include "server/logging.h"
#include "server/server.h"

// masknet_server's flags (defined in flags.cc, which --help lists): one per
// Server::Options field an operator sets, each taking its default from
// there.
namespace masknet {

// The Server::Options the command line asks for. Not checked here:
// Server::Create checks them, naming options; NameFlags turns those names
// into the flags'.
Server::Options ServerOptionsFromFlags();

// --log_format.
LogFormat LogFormatFromFlags();

// `message`, an error naming options (e.g. "max_queued_candidates must be at
// least max_candidates"), with every option that a flag sets named by its
// flag ("--max_queued_candidates must be at least --max_candidates"). An
// option is the first word or a word with an underscore; words that already
// are flags stay as they are.
std::string NameFlags(absl::string_view message);

}  // namespace masknet

#endif  // MASKNET_SERVER_FLAGS_H_
