// TLS and mTLS end to end: certificates made now with openssl, a server on
// them, and clients with and without the right certificates.

#include "net/tls.h"

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "tests/server_harness.h"
#include "tests/test_util.h"

namespace masknet {
namespace {

using serving::v1::RankRequest;
using serving::v1::RankResponse;
using ::testing::HasSubstr;

// A CA, a server certificate it signed for localhost and 127.0.0.1, a client
// certificate it signed, and a client certificate of another CA.
class Certificates {
 public:
  Certificates() : dir_(testing::MakeTempDir()) {
    Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-subj /CN=masknet-test-ca -keyout ca.key -out ca.pem");
    Run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
        "-subj /CN=other-ca -keyout other-ca.key -out other-ca.pem");
    testing::WriteFileOrDie(Path("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    Sign("server", "ca", "server.ext");
    Sign("client", "ca", "");
    Sign("stranger", "other-ca", "");
  }

  std::string Path(const std::string& file) const { return dir_ + "/" + file; }

 private:
  void Run(const std::string& command) const {
    const std::string line = absl::StrCat("cd '", dir_, "' && ", command, " >openssl.log 2>&1");
    ASSERT_EQ(std::system(line.c_str()), 0) << line;
  }
  // <name>.key and <name>.pem, signed by <ca>.
  void Sign(const std::string& name, const std::string& ca, const std::string& extensions) const {
    Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=", name,
                     " -keyout ", name, ".key -out ", name, ".csr"));
    Run(absl::StrCat("openssl x509 -req -days 2 -in ", name, ".csr -CA ", ca, ".pem -CAkey ", ca,
                     ".key -CAcreateserial -out ", name, ".pem", extensions.empty() ? "" : " -extfile ", extensions));
  }

  std::string dir_;
};

ServerTlsOptions ServerTls(const std::string& cert, const std::string& key, const std::string& client_ca = "") {
  ServerTlsOptions options;
  options.cert = cert;
  options.key = key;
  options.client_ca = client_ca;
  return options;
}

ClientTlsOptions ClientTls(const std::string& ca, const std::string& cert = "", const std::string& key = "") {
  ClientTlsOptions options;
  options.ca = ca;
  options.cert = cert;
  options.key = key;
  return options;
}

class TlsTest : public ::testing::Test {
 protected:
  TlsTest()
      : root_(testing::MakeTempDir()), spec_(*ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig))) {
    testing::WriteModelVersion(root_, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec_, 1));
  }

  // A server with these TLS options.
  std::unique_ptr<testing::ServerHarness> Serve(const ServerTlsOptions& tls) {
    auto credentials = MakeServerCredentials(tls);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    GrpcServer::Options options;
    options.credentials = *credentials;
    return std::make_unique<testing::ServerHarness>(root_, options);
  }

  // A Rank call from a client with these TLS options (all empty: plaintext).
  grpc::Status Call(int port, const ClientTlsOptions& tls) {
    auto credentials = MakeChannelCredentials(tls);
    EXPECT_TRUE(credentials.ok()) << credentials.status();
    auto stub = serving::v1::Ranker::NewStub(grpc::CreateChannel(absl::StrCat("localhost:", port), *credentials));
    RankRequest request = testing::RandomRequest(spec_.schema, 3, 1).ToProto();
    request.set_model_name("tiny");
    RankResponse response;
    grpc::ClientContext context;
    // A refused handshake fails the call at once; the deadline only bounds a
    // hang, generously (ThreadSanitizer on a loaded machine).
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    const grpc::Status status = stub->Rank(&context, request, &response);
    if (status.ok()) {
      EXPECT_EQ(response.candidates_size(), 3);
    }
    return status;
  }

  Certificates certs_;
  std::string root_;
  ModelSpec spec_;
};

TEST_F(TlsTest, TlsServesClientsThatTrustItsCaAndRefusesPlaintext) {
  auto server = Serve(ServerTls(certs_.Path("server.pem"), certs_.Path("server.key")));
  const int port = server->server().port();
  EXPECT_TRUE(Call(port, ClientTls(certs_.Path("ca.pem"))).ok());
  EXPECT_EQ(Call(port, ClientTls("")).error_code(), grpc::StatusCode::UNAVAILABLE);  // plaintext
  EXPECT_EQ(Call(port, ClientTls(certs_.Path("other-ca.pem"))).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MutualTlsRefusesAClientWithoutACertificateOfItsCa) {
  auto server = Serve(ServerTls(certs_.Path("server.pem"), certs_.Path("server.key"), certs_.Path("ca.pem")));
  const int port = server->server().port();
  EXPECT_TRUE(Call(port, ClientTls(certs_.Path("ca.pem"), certs_.Path("client.pem"), certs_.Path("client.key"))).ok());
  EXPECT_EQ(Call(port, ClientTls(certs_.Path("ca.pem"))).error_code(),
            grpc::StatusCode::UNAVAILABLE);  // no certificate
  EXPECT_EQ(Call(port, ClientTls(certs_.Path("ca.pem"), certs_.Path("stranger.pem"), certs_.Path("stranger.key")))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);  // signed by another CA
}

TEST_F(TlsTest, BadTlsOptionsAreRefusedNamingTheFlag) {
  auto expect_invalid = [](const ServerTlsOptions& tls, const std::string& substring) {
    auto credentials = MakeServerCredentials(tls);
    ASSERT_FALSE(credentials.ok());
    EXPECT_EQ(credentials.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(credentials.status().message()), HasSubstr(substring));
  };
  expect_invalid(ServerTls(certs_.Path("server.pem"), ""), "--tls_cert and --tls_key go together");
  expect_invalid(ServerTls("", "", certs_.Path("ca.pem")), "--tls_cert and --tls_key go together");
  expect_invalid(ServerTls(certs_.Path("server.pem"), certs_.Path("missing.key")), "--tls_key: cannot read");
  expect_invalid(ServerTls(certs_.Path("server.key"), certs_.Path("server.key")),
                 "--tls_cert: '");  // a key, not a certificate
  expect_invalid(ServerTls(certs_.Path("server.pem"), certs_.Path("server.pem")), "holds no PEM private key");
  ServerTlsOptions no_interval = ServerTls(certs_.Path("server.pem"), certs_.Path("server.key"));
  no_interval.reload_interval = absl::ZeroDuration();
  expect_invalid(no_interval, "--tls_reload_interval");
  auto client = MakeChannelCredentials(ClientTls(certs_.Path("ca.pem"), certs_.Path("client.pem")));
  EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace masknet
