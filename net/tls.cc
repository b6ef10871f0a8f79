#include "net/tls.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace masknet {
namespace {

// The contents of PEM file `path` (flag `flag`), which must hold a block
// whose label ends with `label` ("CERTIFICATE", "PRIVATE KEY").
absl::StatusOr<std::string> ReadPem(const char* flag, const std::string& path, const char* label) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read '", path, "': ", std::strerror(errno)));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  std::string pem = contents.str();
  // "-----BEGIN CERTIFICATE-----", "-----BEGIN RSA PRIVATE KEY-----", ...
  if (!absl::StrContains(pem, "-----BEGIN ") || !absl::StrContains(pem, absl::StrCat(label, "-----"))) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": '", path, "' holds no PEM ", absl::AsciiStrToLower(label),
                                                   " (\"-----BEGIN ... ", label, "-----\")"));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTlsOptions& options) {
  if (options.cert.empty() && options.key.empty() && options.client_ca.empty()) {
    return grpc::InsecureServerCredentials();
  }
  if (options.cert.empty() || options.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together (and --tls_client_ca needs both): name the server's certificate "
        "chain and its private key");
  }
  if (options.reload_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_reload_interval must be at least 1s, got ", absl::FormatDuration(options.reload_interval)));
  }
  // Checked here so that a bad file stops the server at start-up rather
  // than failing every handshake.
  if (auto s = ReadPem("--tls_cert", options.cert, "CERTIFICATE"); !s.ok()) return s.status();
  if (auto s = ReadPem("--tls_key", options.key, "PRIVATE KEY"); !s.ok()) return s.status();
  if (!options.client_ca.empty()) {
    if (auto s = ReadPem("--tls_client_ca", options.client_ca, "CERTIFICATE"); !s.ok()) return s.status();
  }
  const auto interval = static_cast<unsigned int>(absl::ToInt64Seconds(options.reload_interval));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(options.key, options.cert,
                                                                                       options.client_ca, interval);
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options.client_ca.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const ClientTlsOptions& options) {
  if (options.ca.empty() && options.cert.empty() && options.key.empty()) return grpc::InsecureChannelCredentials();
  if (options.cert.empty() != options.key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together: the client's certificate and its key");
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.ca.empty()) {
    auto ca = ReadPem("--tls_ca", options.ca, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.cert.empty()) {
    auto cert = ReadPem("--tls_cert", options.cert, "CERTIFICATE");
    if (!cert.ok()) return cert.status();
    auto key = ReadPem("--tls_key", options.key, "PRIVATE KEY");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace masknet
