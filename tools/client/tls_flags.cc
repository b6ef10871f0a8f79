#include "tools/client/tls_flags.h"

#include <string>

#include "absl/flags/flag.h"
#include "net/tls.h"

ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificates that signed the server's certificate: connect over TLS. Empty with "
          "--tls_cert: the system's CAs. All TLS flags empty: plaintext.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate chain, for a server that requires mTLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to check the server's certificate against, when --target names it otherwise (e.g. by IP).");

namespace masknet {

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsFromFlags() {
  ClientTlsOptions options;
  options.ca = absl::GetFlag(FLAGS_tls_ca);
  options.cert = absl::GetFlag(FLAGS_tls_cert);
  options.key = absl::GetFlag(FLAGS_tls_key);
  return MakeChannelCredentials(options);
}

void AddTlsChannelArguments(grpc::ChannelArguments& args) {
  const std::string name = absl::GetFlag(FLAGS_tls_server_name);
  if (!name.empty()) args.SetSslTargetNameOverride(name);
}

}  // namespace masknet
