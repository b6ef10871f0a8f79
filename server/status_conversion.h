#ifndef MASKNET_SERVER_STATUS_CONVERSION_H_
#define MASKNET_SERVER_STATUS_CONVERSION_H_

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

// Statuses crossing the server's borders: exceptions into statuses, the
// batching library's option names into the server's flags, and absl's
// statuses into gRPC's.
namespace masknet {

// Runs `fn` and returns its status; an exception escaping it becomes one
// instead: RESOURCE_EXHAUSTED "<what>: out of memory" for std::bad_alloc,
// INTERNAL "<what>: <message>" for any other. For code on gRPC's and the
// workers' threads, where an exception would end the process.
absl::Status StatusFromExceptions(absl::string_view what, absl::FunctionRef<absl::Status()> fn);

// `status` with the batching library's option names, as in
// "(max_queued_candidates=...)", turned into the server's flags.
absl::Status WithFlagNames(const absl::Status& status);

// absl::Status -> grpc::Status; the codes share their numbering.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace masknet

#endif  // MASKNET_SERVER_STATUS_CONVERSION_H_
