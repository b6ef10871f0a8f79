// Runs the masknet_server binary as a process: flags, start-up errors, and
// SIGTERM with calls in flight; and masknet_loadgen against it.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdlib>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "loader/model_loader.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "google/protobuf/util/message_differencer.h"
#include "server/capture_file.h"
#include "tests/fixtures.h"
#include "tests/test_util.h"
#include "tests/waiting.h"

namespace masknet {
namespace {

using ::testing::HasSubstr;
using testing::MetricValue;

// The longest prefix of `text` made of `chars`.
absl::string_view LeadingNumber(absl::string_view text, absl::string_view chars) {
  return text.substr(0, std::min(text.size(), text.find_first_not_of(chars)));
}

// A child process running `binary` with its output in a file.
class ChildProcess {
 public:
  ChildProcess(std::string binary, const std::vector<std::string>& args)
      : log_(testing::MakeTempDir() + "/output.log") {
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> argv;
      argv.push_back(binary.data());
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  ~ChildProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      Wait();
    }
  }

  std::string Log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Whether it has exited (without waiting).
  bool Exited() {
    if (!exited_ && waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return exited_;
  }

  void Signal(int sig) { kill(pid_, sig); }

  // The exit code, or -1 if it died by a signal.
  int Wait() {
    if (!exited_) {
      waitpid(pid_, &status_, 0);
      exited_ = true;
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

// masknet_server with its HTTP port off unless `args` set one (tests run in
// parallel; the default 8080 would collide), writing its ports to a file of
// its own.
class ServerProcess : public ChildProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& args)
      : ServerProcess(args, testing::MakeTempDir() + "/ports.json") {}

  // The gRPC port from the server's ports file, written once it serves; 0
  // if it exits first or does not serve within kWaitTimeout.
  int WaitForPort() {
    int port = 0;
    const bool done = testing::WaitUntil("the server to write its ports file", [&] {
      std::ifstream in(ports_file_);
      std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const size_t at = json.find("\"grpc\": ");
      if (at != std::string::npos) (void)absl::SimpleAtoi(LeadingNumber(json.substr(at + 8), "0123456789"), &port);
      return port != 0 || Exited();
    });
    return done ? port : 0;
  }

 private:
  ServerProcess(const std::vector<std::string>& args, const std::string& ports_file)
      : ChildProcess(MASKNET_SERVER_BINARY, WithDefaults(args, ports_file)), ports_file_(ports_file) {}

  static std::vector<std::string> WithDefaults(std::vector<std::string> args, const std::string& ports_file) {
    bool metrics_port = false;
    for (const std::string& a : args) {
      if (a == "--help") return args;
      metrics_port |= a.rfind("--metrics_port", 0) == 0;
    }
    if (!metrics_port) args.push_back("--metrics_port=0");
    args.push_back("--ports_file=" + ports_file);
    return args;
  }

  std::string ports_file_;
};

// A TCP port that was free a moment ago.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

struct HttpResponse {
  int status = 0;
  std::string body;
};

// GET http://127.0.0.1:port/path; status 0 if nothing answers.
HttpResponse HttpGet(int port, const std::string& path) {
  HttpResponse out;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const timeval timeout{10, 0};  // a server that accepts and never answers fails the read
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return out;
  }
  const std::string request = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\n\r\n";
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return out;
  }
  std::string raw;
  char buffer[65536];
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) raw.append(buffer, n);
  close(fd);
  // "HTTP/1.x NNN ..."
  if (absl::StartsWith(raw, "HTTP/1.0 ") || absl::StartsWith(raw, "HTTP/1.1 ")) {
    (void)absl::SimpleAtoi(LeadingNumber(absl::string_view(raw).substr(9), "0123456789"), &out.status);
  }
  const size_t body = raw.find("\r\n\r\n");
  if (body != std::string::npos) out.body = raw.substr(body + 4);
  return out;
}

TEST(ServerProcessTest, MissingModelRootExitsWithAMessage) {
  ServerProcess server({});
  EXPECT_EQ(server.Wait(), 2);
  EXPECT_THAT(server.Log(), HasSubstr("--model_root is required"));
}

TEST(ServerProcessTest, InvalidLimitExitsWithAMessageNamingTheFlags) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--max_batch_size=0"}, "--max_batch_size must be in [1, 16384], got 0"},
      {{"--intra_op_threads=0"}, "--intra_op_threads must be at least 1 (each worker's OpenMP threads), got 0"},
      {{"--max_candidates=100", "--max_queued_candidates=99"},
       "--max_queued_candidates must be at least --max_candidates, or a full-size request could never be accepted"},
      {{"--deadline_headroom=1"}, "--deadline_headroom must be in [0, 1), got 1"},
      {{"--batch_timeout=2s"}, "--batch_timeout must be in [0, 1s], got 2s"},
      {{"--drain_delay=-1s"}, "--drain_delay must not be negative, got -1s"},
  };
  for (const auto& [flags, error] : cases) {
    std::vector<std::string> args = {"--model_root=/nonexistent"};
    args.insert(args.end(), flags.begin(), flags.end());
    ServerProcess server(args);
    EXPECT_EQ(server.Wait(), 2) << error;
    EXPECT_THAT(server.Log(), HasSubstr("invalid flags: " + error));
  }
}

TEST(ServerProcessTest, AChoiceFlagRefusesWhatIsNotAChoice) {
  for (const auto& [flag, error] : std::vector<std::pair<std::string, std::string>>{
           {"--precision=int4", "must be fp32, bf16 or int8, got 'int4'"},
           {"--log_format=xml", "must be text or json, got 'xml'"}}) {
    ServerProcess server({"--model_root=/nonexistent", flag});
    EXPECT_NE(server.Wait(), 0) << flag;
    EXPECT_THAT(server.Log(), HasSubstr(error));
  }
}

TEST(ServerProcessTest, ATlsKeyWithoutACertificateExitsWithAMessage) {
  ServerProcess server({"--model_root=/nonexistent", "--tls_key=/nonexistent.key"});
  EXPECT_EQ(server.Wait(), 2);
  EXPECT_THAT(server.Log(), HasSubstr("--tls_cert and --tls_key go together"));
}

TEST(ServerProcessTest, PortInUseExitsWithAMessage) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ServerProcess server({"--model_root=" + testing::FixtureModelRoot("variant-parallel-easyrec"),
                        "--host=127.0.0.1", absl::StrCat("--port=", port)});
  EXPECT_EQ(server.Wait(), 1) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr(absl::StrCat("cannot listen on 127.0.0.1:", port)));
  close(fd);
}

TEST(ServerProcessTest, BadModelExitsWithTheLoaderError) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  weights.erase("mlp.0.weight");
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, weights);
  ServerProcess server({"--model_root=" + root, "--port=0"});
  EXPECT_EQ(server.Wait(), 1);
  EXPECT_THAT(server.Log(), HasSubstr("tiny/1/weights.safetensors: missing tensor 'mlp.0.weight'"));
}

TEST(ServerProcessTest, SigtermFinishesCallsInFlightAndExitsZero) {
  const std::string name = "paper-criteo-parallel";
  const int http_port = FreePort();
  ServerProcess server({"--model_root=" + testing::FixtureModelRoot(name), "--port=0", "--host=127.0.0.1",
                        absl::StrCat("--metrics_port=", http_port)});
  const int port = server.WaitForPort();
  ASSERT_GT(port, 0) << server.Log();
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials(), args);
  auto stub = serving::v1::Ranker::NewStub(channel);
  const std::string config_path = testing::FixtureModelRoot(name) + "/" + name + "/1/model_config.pbtxt";
  auto spec = *ModelSpec::FromConfig(*ReadModelConfig(config_path));
  // Each call takes over a hundred milliseconds, and there are more than
  // the workers run at once: the last to arrive is still being scored when
  // this thread sees it arrive, unless it looks that much late.
  constexpr int kCandidates = 8000;
  const serving::v1::RankRequest request = testing::RandomRequest(spec.schema, kCandidates, 7).ToProto();

  std::atomic<bool> signalled{false};
  std::atomic<int> ok_after_signal{0}, ok{0}, failed{0};
  std::vector<std::thread> calls;
  constexpr int kCalls = 6;
  for (int i = 0; i < kCalls; ++i) {
    calls.emplace_back([&] {
      grpc::ClientContext context;
      serving::v1::RankResponse response;
      const grpc::Status status = stub->Rank(&context, request, &response);
      if (status.ok()) {
        EXPECT_EQ(response.candidates_size(), kCandidates);
        ++ok;
        if (signalled) ++ok_after_signal;
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
        ++failed;
      }
    });
  }
  // Signalled once the server has every call (however slowly the client's
  // threads sent them): all of them must then be answered. The answered
  // calls are counted before the server's are read, so that no call counts
  // twice.
  ASSERT_TRUE(testing::WaitUntil(
      "the server to hold or have answered every call",
      [&] {
        const int answered = ok + failed;
        const HttpResponse metrics = HttpGet(http_port, "/metrics");
        return metrics.status == 200 ? MetricValue(metrics.body, "masknet_calls_in_flight") + answered : -1;
      },
      [](double held_or_answered) { return held_or_answered >= kCalls; }))
      << server.Log();
  signalled = true;
  server.Signal(SIGTERM);
  for (auto& t : calls) t.join();
  EXPECT_EQ(server.Wait(), 0) << server.Log();
  EXPECT_GE(ok_after_signal.load(), 1) << "no call was in flight at SIGTERM";
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(ok.load(), kCalls);
  EXPECT_THAT(server.Log(), HasSubstr("received SIGTERM"));
}

// Clients that follow health, as a load balancer or a health-checking
// client does: each stops sending once health reports NOT_SERVING.
TEST(ServerProcessTest, SigtermUnderLoadFailsNoCallOfClientsThatFollowHealth) {
  const std::string name = "paper-criteo-serial";
  // The drain delay is the clients' time to see NOT_SERVING: ample on a
  // loaded machine.
  ServerProcess server({"--model_root=" + testing::FixtureModelRoot(name), "--port=0", "--host=127.0.0.1",
                        "--drain_delay=3s", "--shutdown_grace_period=5s"});
  const int port = server.WaitForPort();
  ASSERT_GT(port, 0) << server.Log();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto stub = serving::v1::Ranker::NewStub(channel);
  const std::string config_path = testing::FixtureModelRoot(name) + "/" + name + "/1/model_config.pbtxt";
  auto spec = *ModelSpec::FromConfig(*ReadModelConfig(config_path));
  const serving::v1::RankRequest request = testing::RandomRequest(spec.schema, 64, 3).ToProto();
  std::atomic<bool> signalled{false}, not_serving{false};
  std::atomic<int> ok{0}, ok_after_signal{0};
  absl::Mutex mu;
  std::vector<std::string> failures;
  std::thread health_watch([&] {
    auto health = grpc::health::v1::Health::NewStub(channel);
    while (!not_serving) {
      grpc::health::v1::HealthCheckRequest check;
      grpc::health::v1::HealthCheckResponse response;
      grpc::ClientContext context;
      const grpc::Status s = health->Check(&context, check, &response);
      // Before SIGTERM, a failed check is not a verdict: try again.
      if ((!s.ok() && signalled) || (s.ok() && response.status() != grpc::health::v1::HealthCheckResponse::SERVING)) {
        not_serving = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::vector<std::thread> callers;
  for (int i = 0; i < 8; ++i) {
    callers.emplace_back([&] {
      while (!not_serving) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        serving::v1::RankResponse response;
        const grpc::Status status = stub->Rank(&context, request, &response);
        if (status.ok()) {
          ++ok;
          if (signalled) ++ok_after_signal;
        } else {
          absl::MutexLock lock(&mu);
          failures.push_back(absl::StrCat(status.error_code(), ": ", status.error_message()));
        }
      }
    });
  }
  ASSERT_TRUE(testing::WaitUntil(
      "50 calls answered", [&] { return ok.load(); }, [](int n) { return n >= 50; }))
      << server.Log();
  signalled = true;
  server.Signal(SIGTERM);
  for (auto& t : callers) t.join();
  health_watch.join();
  EXPECT_EQ(server.Wait(), 0) << server.Log();
  EXPECT_THAT(failures, ::testing::IsEmpty());
  EXPECT_GE(ok_after_signal.load(), 1) << "no call was answered after SIGTERM";
  EXPECT_THAT(server.Log(), HasSubstr("NOT_SERVING, still answering calls for 3s"));
}

TEST(ServerProcessTest, ServesHealthAndReflection) {
  const std::string name = "paper-criteo-serial";
  // An idle client connection holds gRPC's graceful shutdown (GOAWAY drain)
  // for ~5 s; the grace period bounds it.
  ServerProcess server({"--model_root=" + testing::FixtureModelRoot(name), "--port=0", "--host=127.0.0.1",
                        "--shutdown_grace_period=1s"});
  const int port = server.WaitForPort();
  ASSERT_GT(port, 0) << server.Log();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());

  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest check;
  check.set_service("masknet.serving.v1.Ranker");
  grpc::health::v1::HealthCheckResponse status;
  grpc::ClientContext health_context;
  ASSERT_TRUE(health->Check(&health_context, check, &status).ok());
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  auto reflection = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  auto stream = reflection->ServerReflectionInfo(&context);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("*");
  ASSERT_TRUE(stream->Write(request));
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  ASSERT_TRUE(stream->Read(&response));
  stream->WritesDone();
  std::vector<std::string> services;
  for (const auto& s : response.list_services_response().service()) services.push_back(s.name());
  EXPECT_THAT(services, ::testing::Contains("masknet.serving.v1.Ranker"));
  EXPECT_THAT(services, ::testing::Contains("grpc.health.v1.Health"));
  EXPECT_TRUE(stream->Finish().ok());
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0);
}

// The value of the first number field `key` of masknet_loadgen's JSON after
// the text `after`, e.g. JsonNumber(json, "ok", "\"feeds\"").
double JsonNumber(const std::string& json, const std::string& key, const std::string& after = "") {
  const std::string label = "\"" + key + "\": ";
  const size_t from = json.find(after);
  const size_t at = from == std::string::npos ? from : json.find(label, from);
  const size_t digits = at == std::string::npos ? at : at + label.size();
  double value = 0;
  if (digits == std::string::npos ||
      !absl::SimpleAtod(LeadingNumber(absl::string_view(json).substr(digits), "0123456789."), &value)) {
    ADD_FAILURE() << "no '" << key << "' in " << json;
    return -1;
  }
  return value;
}

class LoadgenProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = server_.WaitForPort();
    ASSERT_GT(port_, 0) << server_.Log();
  }
  void TearDown() override {
    server_.Signal(SIGTERM);
    EXPECT_EQ(server_.Wait(), 0) << server_.Log();
  }

  // Runs masknet_loadgen against the server and returns its JSON.
  std::string RunLoadgen(std::vector<std::string> args) {
    const std::string json = testing::MakeTempDir() + "/loadgen.json";
    args.push_back(absl::StrCat("--target=127.0.0.1:", port_));
    args.push_back("--json=" + json);
    ChildProcess loadgen(MASKNET_LOADGEN_BINARY, args);
    EXPECT_EQ(loadgen.Wait(), 0) << loadgen.Log();
    std::ifstream in(json);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  ServerProcess server_{{"--model_root=" + testing::FixtureModelRoot("paper-criteo-serial"), "--port=0",
                         "--host=127.0.0.1", "--shutdown_grace_period=1s"}};
  int port_ = 0;
};

TEST_F(LoadgenProcessTest, AClosedLoopCountsItsCallsAndSeesNoErrors) {
  const std::string json = RunLoadgen({"--concurrency=4", "--candidates=16", "--warmup=200ms", "--duration=1s"});
  const double sent = JsonNumber(json, "sent");
  EXPECT_GT(sent, 0);
  EXPECT_EQ(JsonNumber(json, "ok"), sent);
  EXPECT_THAT(json, HasSubstr("\"errors\": {}"));
  EXPECT_NEAR(JsonNumber(json, "candidates_per_s"), 16 * JsonNumber(json, "ok_per_s"), 1.0);
  EXPECT_GT(JsonNumber(json, "loadgen_cpu_seconds"), 0);
}

TEST_F(LoadgenProcessTest, AnOpenLoopOfFeedsSendsEachFeedAsSeveralCalls) {
  const std::string json = RunLoadgen({"--rate=20", "--feed_candidates=100", "--candidates=32", "--deadline=10s",
                                       "--warmup=100ms", "--duration=1s"});
  const double feeds = JsonNumber(json, "ok", /*after=*/"\"feeds\"");
  EXPECT_GT(feeds, 0);
  EXPECT_EQ(JsonNumber(json, "failed"), 0);
  EXPECT_EQ(JsonNumber(json, "sent"), 4 * feeds);  // 32 + 32 + 32 + 4 candidates
  EXPECT_EQ(JsonNumber(json, "ok"), JsonNumber(json, "sent"));
  EXPECT_THAT(json, HasSubstr("\"errors\": {}"));
}

// Capture, compare and replay. Version 2 of "tiny" is version 1 with the
// click head's last bias raised by kShift: its click scores are
// sigmoid(logit(p) + kShift), its like scores the same.
class CaptureProcessTest : public ::testing::Test {
 protected:
  static constexpr float kShift = 0.5f;

  CaptureProcessTest() : root_(testing::MakeTempDir()), capture_(testing::MakeTempDir() + "/capture") {
    spec_ = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
    TensorMap weights = testing::RandomWeights(spec_, 1);
    testing::WriteModelVersion(root_, "tiny", 1, testing::kTinyConfig, weights);
    Tensor& bias = weights.at("tasks.click.1.bias");
    bias.values[0] += kShift;
    testing::WriteModelVersion(root_, "tiny", 2, testing::kTinyConfig, weights);
  }

  // `calls` calls of `candidates` each to version 1; the requests and
  // answers, in order.
  void Send(int port, int calls, int candidates) {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    auto stub = serving::v1::Ranker::NewStub(channel);
    for (int i = 0; i < calls; ++i) {
      serving::v1::RankRequest request = testing::RandomRequest(spec_.schema, candidates, 100 + i).ToProto();
      request.set_model_name("tiny");
      request.set_model_version(1);
      serving::v1::RankResponse response;
      grpc::ClientContext context;
      const grpc::Status status = stub->Rank(&context, request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      sent_.push_back(request);
      answers_.push_back(response);
    }
  }

  // Runs masknet_compare on the capture; its JSON.
  std::string Compare(const std::vector<std::string>& flags) {
    const std::string json = testing::MakeTempDir() + "/compare.json";
    std::vector<std::string> args = {"--capture_dir=" + capture_, "--model_root=" + root_, "--json=" + json};
    args.insert(args.end(), flags.begin(), flags.end());
    ChildProcess compare(MASKNET_COMPARE_BINARY, args);
    EXPECT_EQ(compare.Wait(), 0) << compare.Log();
    std::ifstream in(json);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  std::string root_, capture_;
  ModelSpec spec_;
  std::vector<serving::v1::RankRequest> sent_;
  std::vector<serving::v1::RankResponse> answers_;
};

TEST_F(CaptureProcessTest, CapturedCallsRoundTripCompareAndReplay) {
  {
    ServerProcess server({"--model_root=" + root_, "--port=0", "--host=127.0.0.1", "--model_poll_interval=0",
                          "--capture_dir=" + capture_, "--capture_fraction=1", "--capture_file_bytes=4096",
                          "--shutdown_grace_period=1s"});
    const int port = server.WaitForPort();
    ASSERT_GT(port, 0) << server.Log();
    Send(port, 20, 5);
    server.Signal(SIGTERM);
    ASSERT_EQ(server.Wait(), 0) << server.Log();
    EXPECT_THAT(server.Log(), HasSubstr("capturing 100% of the calls to '" + capture_ + "'"));
  }
  const auto files = ListCaptureFiles(capture_);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_GT(files->size(), 1u);  // 20 calls of ~1 KB in files of 4 KB
  for (const std::string& f : *files) EXPECT_TRUE(absl::EndsWith(f, kCaptureSuffix)) << f << " was not completed";
  const auto captured = ReadCaptureDir(capture_);
  ASSERT_TRUE(captured.ok()) << captured.status();
  ASSERT_EQ(captured->size(), 20u);
  for (size_t i = 0; i < captured->size(); ++i) {
    const serving::v1::CapturedCall& c = (*captured)[i];
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(c.request(), sent_[i])) << i;
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(c.response(), answers_[i])) << i;
    EXPECT_EQ(c.response().model_version(), 1);
    EXPECT_EQ(c.precision(), "fp32");
    if (i > 0) {
      EXPECT_GE(c.arrival_unix_micros(), (*captured)[i - 1].arrival_unix_micros());
    }
  }

  // The same version twice: no difference, the same order.
  std::string json = Compare({"--versions=1,1"});
  EXPECT_THAT(json, HasSubstr("\"calls\": 20, \"candidates\": 100"));
  for (const std::string task : {"click", "like"}) {
    EXPECT_EQ(JsonNumber(json, "max", "\"" + task + "\""), 0) << task;
    EXPECT_EQ(JsonNumber(json, "spearman_mean", "\"" + task + "\""), 1) << task;
  }
  // Version 2: the click difference the shift makes, as computed from the
  // answers; like unchanged; the order of each call's candidates kept.
  double expected = 0;
  for (const serving::v1::RankResponse& r : answers_) {
    for (const auto& c : r.candidates()) {
      const double p = c.scores(0);
      const double shifted = 1 / (1 + std::exp(-(std::log(p / (1 - p)) + kShift)));
      expected = std::max(expected, std::abs(shifted - p));
    }
  }
  json = Compare({"--model=tiny", "--versions=1,2"});
  EXPECT_NEAR(JsonNumber(json, "max", "\"click\""), expected, 1e-5);
  EXPECT_GT(expected, 0.01);
  EXPECT_EQ(JsonNumber(json, "max", "\"like\""), 0);
  EXPECT_EQ(JsonNumber(json, "spearman_mean", "\"click\""), 1);

  // Replayed at the pace they came, every captured call is answered.
  ServerProcess server({"--model_root=" + root_, "--port=0", "--host=127.0.0.1", "--shutdown_grace_period=1s"});
  const int port = server.WaitForPort();
  ASSERT_GT(port, 0) << server.Log();
  const std::string replay_json = testing::MakeTempDir() + "/replay.json";
  ChildProcess loadgen(MASKNET_LOADGEN_BINARY, {absl::StrCat("--target=127.0.0.1:", port), "--replay=" + capture_,
                                                "--warmup=0s", "--duration=1s", "--json=" + replay_json,
                                                // Silences cut to 20 ms: however slowly the calls were
                                                // captured, all 20 fit in the second.
                                                "--replay_max_gap=20ms"});
  ASSERT_EQ(loadgen.Wait(), 0) << loadgen.Log();
  std::ifstream in(replay_json);
  const std::string replayed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(replayed, HasSubstr("\"mode\": \"replay\""));
  EXPECT_GE(JsonNumber(replayed, "sent"), 20);
  EXPECT_EQ(JsonNumber(replayed, "ok"), JsonNumber(replayed, "sent"));
  EXPECT_THAT(replayed, HasSubstr("\"errors\": {}"));
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.Log();
}

TEST_F(CaptureProcessTest, CaptureKeepsItsFilesWithinTheCapDeletingTheOldest) {
  ServerProcess server({"--model_root=" + root_, "--port=0", "--host=127.0.0.1", "--model_poll_interval=0",
                        "--capture_dir=" + capture_, "--capture_fraction=1", "--capture_file_bytes=4096",
                        "--capture_max_bytes=12288", "--shutdown_grace_period=1s"});
  const int port = server.WaitForPort();
  ASSERT_GT(port, 0) << server.Log();
  Send(port, 80, 5);
  server.Signal(SIGTERM);
  ASSERT_EQ(server.Wait(), 0) << server.Log();
  const auto files = ListCaptureFiles(capture_);
  ASSERT_TRUE(files.ok()) << files.status();
  int64_t bytes = 0;
  for (const std::string& f : *files) bytes += std::filesystem::file_size(f);
  EXPECT_LE(bytes, 12288);
  const auto captured = ReadCaptureDir(capture_);
  ASSERT_TRUE(captured.ok()) << captured.status();
  ASSERT_GT(captured->size(), 0u);
  EXPECT_LT(captured->size(), 80u);  // the oldest went
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(captured->back().request(), sent_.back()));
}

TEST_F(CaptureProcessTest, AWriteThatFailsStopsCaptureNotTheCalls) {
  // Files may not grow beyond 24 KiB (RLIMIT_FSIZE): the capture file's
  // write fails as on a full disk.
  const int http_port = FreePort();
  const std::string ports_file = testing::MakeTempDir() + "/ports.json";
  ChildProcess server("/usr/bin/prlimit",
                      {"--fsize=24576", MASKNET_SERVER_BINARY, "--model_root=" + root_, "--port=0",
                       "--host=127.0.0.1", "--model_poll_interval=0", "--capture_dir=" + capture_,
                       "--capture_fraction=1", absl::StrCat("--metrics_port=", http_port), "--ports_file=" + ports_file,
                       "--shutdown_grace_period=1s"});
  int port = 0;
  ASSERT_TRUE(testing::WaitUntil("the server to write its ports file", [&] {
    std::ifstream in(ports_file);
    const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t at = json.find("\"grpc\": ");
    if (at != std::string::npos) (void)absl::SimpleAtoi(LeadingNumber(json.substr(at + 8), "0123456789"), &port);
    return port != 0 || server.Exited();
  }));
  ASSERT_GT(port, 0) << server.Log();
  Send(port, 40, 16);  // ~100 KB of records: every call is answered
  ASSERT_EQ(answers_.size(), 40u);
  // The writer thread counts what it wrote and dropped, after the calls' answers.
  std::string metrics;
  EXPECT_TRUE(testing::WaitUntil("the capture to stop and count its dropped records", [&] {
    metrics = HttpGet(http_port, "/metrics").body;
    return MetricValue(metrics, "masknet_capture_errors_total") == 1 &&
           MetricValue(metrics, "masknet_capture_calls_total{result=\"written\"}") +
                   MetricValue(metrics, "masknet_capture_calls_total{result=\"dropped\"}") ==
               40;
  }));
  EXPECT_EQ(MetricValue(metrics, "masknet_capture_errors_total"), 1);
  EXPECT_GT(MetricValue(metrics, "masknet_capture_calls_total{result=\"written\"}"), 0);
  EXPECT_GT(MetricValue(metrics, "masknet_capture_calls_total{result=\"dropped\"}"), 0);
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr("call capture stopped; calls go on uncaptured"));
}

// Runs promtool check metrics on `metrics`; returns its output and sets *ok.
std::string PromtoolCheck(const std::string& metrics, bool* ok) {
  const std::string dir = testing::MakeTempDir();
  testing::WriteFileOrDie(dir + "/metrics.txt", metrics);
  const std::string command = "promtool check metrics < " + dir + "/metrics.txt > " + dir + "/out.txt 2>&1";
  *ok = std::system(command.c_str()) == 0;
  std::ifstream in(dir + "/out.txt");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(ServerProcessTest, ReadyOnlyOnceAModelIsAndMetricsMoveWithTrafficAndPassPromtool) {
  const std::string root = testing::MakeTempDir();
  const int http_port = FreePort();
  ServerProcess server({"--model_root=" + root, "--port=0", "--host=127.0.0.1", "--model_poll_interval=50ms",
                        absl::StrCat("--metrics_port=", http_port), "--shutdown_grace_period=1s"});
  const int port = server.WaitForPort();
  ASSERT_GT(port, 0) << server.Log();
  EXPECT_EQ(HttpGet(http_port, "/healthz").status, 200);
  const HttpResponse not_ready = HttpGet(http_port, "/readyz");
  EXPECT_EQ(not_ready.status, 503);
  EXPECT_THAT(not_ready.body, HasSubstr("no model version loaded yet"));
  EXPECT_EQ(HttpGet(http_port, "/nothing").status, 404);

  // Publish a version; the server turns ready.
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  ASSERT_TRUE(testing::WaitUntil(
      "/readyz to answer 200", [&] { return HttpGet(http_port, "/readyz").status; }, [](int s) { return s == 200; }))
      << server.Log();

  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto stub = serving::v1::Ranker::NewStub(channel);
  serving::v1::RankRequest request = testing::RandomRequest(spec.schema, 7, 5).ToProto();
  request.set_model_name("tiny");
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext context;
    serving::v1::RankResponse response;
    ASSERT_TRUE(stub->Rank(&context, request, &response).ok());
  }
  request.mutable_candidates(0)->mutable_features()->add_dense(1.0f);  // one value too many
  grpc::ClientContext context;
  serving::v1::RankResponse response;
  EXPECT_EQ(stub->Rank(&context, request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  const HttpResponse metrics = HttpGet(http_port, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  bool clean = false;
  const std::string complaints = PromtoolCheck(metrics.body, &clean);
  EXPECT_TRUE(clean) << complaints;
  const std::string v = "model=\"tiny\",version=\"1\"";
  EXPECT_EQ(MetricValue(metrics.body, "masknet_rank_calls_total{code=\"OK\"," + v + "}"), 3);
  EXPECT_EQ(MetricValue(metrics.body, "masknet_rank_candidates_total{code=\"OK\"," + v + "}"), 21);
  EXPECT_EQ(MetricValue(metrics.body, "masknet_rank_calls_total{code=\"INVALID_ARGUMENT\"," + v + "}"), 1);
  EXPECT_EQ(MetricValue(metrics.body, "masknet_rank_latency_seconds_count{" + v + "}"), 4);
  EXPECT_EQ(MetricValue(metrics.body, "masknet_queue_wait_seconds_count{" + v + "}"), 3);
  EXPECT_EQ(MetricValue(metrics.body, "masknet_batch_size_candidates_sum{" + v + "}"), 21);
  EXPECT_GE(MetricValue(metrics.body, "masknet_batch_compute_seconds_count{" + v + "}"), 3);
  EXPECT_EQ(MetricValue(metrics.body, "masknet_model_versions_loaded{model=\"tiny\"}"), 1);
  for (const std::string task : {"click", "like"}) {  // every score served, in its task's histogram
    const std::string s = "model=\"tiny\",task=\"" + task + "\",version=\"1\"";
    EXPECT_EQ(MetricValue(metrics.body, "masknet_scores_count{" + s + "}"), 21) << task;
    EXPECT_EQ(MetricValue(metrics.body, "masknet_scores_bucket{" + s + ",le=\"+Inf\"}"), 21) << task;
    EXPECT_LE(MetricValue(metrics.body, "masknet_scores_bucket{" + s + ",le=\"0.5\"}"), 21) << task;
    const double sum = MetricValue(metrics.body, "masknet_scores_sum{" + s + "}");
    EXPECT_GT(sum, 0) << task;
    EXPECT_LT(sum, 21) << task;
  }
  EXPECT_EQ(MetricValue(metrics.body, "masknet_model_loads_total{model=\"tiny\",result=\"ok\"}"), 1);
  EXPECT_EQ(MetricValue(metrics.body, "masknet_ready"), 1);
  EXPECT_GT(MetricValue(metrics.body, "process_resident_memory_bytes"), 1 << 20);
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.Log();
}

// Labels published while the server watches its root: the label and
// shadow-fraction gauges follow the rollout file, a file that cannot be applied is counted and
// logged, and the labels in force stay.
TEST(ServerProcessTest, VersionLabelsFollowTheRolloutFileInMetricsAndLogs) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  testing::WriteModelVersion(root, "tiny", 2, testing::kTinyConfig, testing::RandomWeights(spec, 2));
  const int http_port = FreePort();
  ServerProcess server({"--model_root=" + root, "--port=0", "--host=127.0.0.1", "--model_poll_interval=50ms",
                        absl::StrCat("--metrics_port=", http_port), "--shutdown_grace_period=1s"});
  ASSERT_GT(server.WaitForPort(), 0) << server.Log();
  auto metric = [&](const std::string& sample) { return MetricValue(HttpGet(http_port, "/metrics").body, sample); };
  const std::string stable = "masknet_model_version_label{label=\"stable\",model=\"tiny\"}";
  const std::string canary = "masknet_model_version_label{label=\"canary\",model=\"tiny\"}";
  const std::string errors = "masknet_model_label_errors_total{model=\"tiny\"}";
  const std::string shadow = "masknet_model_shadow_fraction{model=\"tiny\"}";
  auto publish = [&](const std::string& text) {
    testing::WriteFileOrDie(root + "/tiny/rollout.pbtxt.tmp", text);
    std::filesystem::rename(root + "/tiny/rollout.pbtxt.tmp", root + "/tiny/rollout.pbtxt");
  };
  publish(R"pb(labels { name: "stable" version: 1 } labels { name: "canary" version: 2 } shadow_fraction: 0.5)pb");
  ASSERT_TRUE(testing::WaitUntil("the stable label's gauge", [&] { return metric(stable); },
                                 [](double v) { return v == 1; }))
      << server.Log();
  EXPECT_EQ(metric(canary), 2);
  EXPECT_EQ(metric(shadow), 0.5);
  publish(R"pb(labels { name: "stable" version: 3 })pb");  // no version 3
  ASSERT_TRUE(testing::WaitUntil("the label error to be counted", [&] { return metric(errors); },
                                 [](double v) { return v == 1; }))
      << server.Log();
  EXPECT_EQ(metric(stable), 1);
  EXPECT_EQ(metric(canary), 2);
  EXPECT_EQ(metric(shadow), 0.5);
  publish(R"pb(labels { name: "stable" version: 2 })pb");
  ASSERT_TRUE(testing::WaitUntil("the canary's gauge to go", [&] { return metric(canary); },
                                 [](double v) { return v == -1; }))
      << server.Log();
  EXPECT_EQ(metric(stable), 2);
  EXPECT_EQ(metric(errors), 1);
  EXPECT_EQ(metric(shadow), -1);
  server.Signal(SIGTERM);
  EXPECT_EQ(server.Wait(), 0) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr("model 'tiny' version labels: canary=2, stable=1; shadow_fraction=0.5"));
  EXPECT_THAT(server.Log(), HasSubstr("cannot apply the version labels of model 'tiny'; its labels stay canary=2, "
                                      "stable=1; shadow_fraction=0.5: " + root + "/tiny/rollout.pbtxt: label 'stable' names version 3, "
                                      "which has no directory"));
  EXPECT_THAT(server.Log(), HasSubstr("model 'tiny' version labels: stable=2"));
}

}  // namespace
}  // namespace masknet
