#ifndef MASKNET_TOOLS_CLIENT_TLS_FLAGS_H_
#define MASKNET_TOOLS_CLIENT_TLS_FLAGS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace masknet {

// The client tools' TLS flags: --tls_ca, --tls_cert, --tls_key and
// --tls_server_name. Channel credentials from them (plaintext when none is
// set); errors name the flag.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFromFlags();

// Adds what --tls_server_name asks for to a channel's arguments.
void AddTlsChannelArguments(grpc::ChannelArguments& args);

}  // namespace masknet

#endif  // MASKNET_TOOLS_CLIENT_TLS_FLAGS_H_
