#ifndef MASKNET_NET_TLS_H_
#define MASKNET_NET_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace masknet {

// The server's TLS files (PEM). All empty: plaintext.
struct ServerTlsOptions {
  std::string cert;       // --tls_cert: the server's certificate chain
  std::string key;        // --tls_key: its private key
  std::string client_ca;  // --tls_client_ca: CAs of the clients (mTLS); empty: no client certificates
  // How often the files are read again, so that rotated certificates are
  // served without a restart.
  absl::Duration reload_interval = absl::Minutes(1);
};

// Credentials for ServerBuilder::AddListeningPort: plaintext when no file is
// named; TLS with cert and key; and mTLS (a client must present a
// certificate signed by one of client_ca's CAs, or the handshake fails) with
// client_ca too. The files are checked now (readable, PEM of the right
// kind) and watched for changes afterwards. Errors: INVALID_ARGUMENT naming
// the flag, e.g. "--tls_key: cannot read '/x': No such file or directory",
// or a key without a certificate.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTlsOptions& options);

// A client's TLS files (PEM). All empty: plaintext.
struct ClientTlsOptions {
  std::string ca;    // --tls_ca: CAs that signed the server's certificate; empty with cert: the system's
  std::string cert;  // --tls_cert: the client's certificate chain, for mTLS
  std::string key;   // --tls_key: its private key
};

// Channel credentials for grpc::CreateChannel: plaintext when no file is
// named, else TLS (with a client certificate when cert and key are named).
// Errors: INVALID_ARGUMENT naming the flag.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const ClientTlsOptions& options);

}  // namespace masknet

#endif  // MASKNET_NET_TLS_H_
