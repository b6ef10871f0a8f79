// gRPC integration tests: a real GrpcServer on a loopback port, called
// through generated stubs.

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <new>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "loader/model_loader.h"
#include "loader/model_repository.h"
#include "masknet/serving/v1/ranker.grpc.pb.h"
#include "server/grpc_server.h"
#include "server/metrics.h"
#include "server/rank_call.h"
#include "server/ranker_service.h"
#include "server/server.h"
#include "server/status_conversion.h"
#include "tests/fixtures.h"
#include "tests/server_harness.h"
#include "tests/test_util.h"
#include "tests/waiting.h"

namespace masknet {
namespace {

using serving::v1::RankRequest;
using serving::v1::RankResponse;
using serving::v1::Ranker;
using ::testing::HasSubstr;

using testing::MetricValue;
using testing::ServerHarness;

// Every fixture model under one root (symlinks), served by one server.
TEST(StatusFromExceptionsTest, TurnsWhatWouldEndTheProcessIntoAnError) {
  // What Rank (parsing, queueing) and a finished call (building the
  // response) run under: an exception there would escape into gRPC.
  const absl::Status oom = StatusFromExceptions("building the response", []() -> absl::Status {
    throw std::bad_alloc();
  });
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(oom.message(), "building the response: out of memory");
  const absl::Status other = StatusFromExceptions("accepting the call", []() -> absl::Status {
    throw std::length_error("vector::reserve");
  });
  EXPECT_EQ(other.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(other.message(), "accepting the call: vector::reserve");
  const absl::Status unknown = StatusFromExceptions("x", []() -> absl::Status { throw 7; });
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(StatusFromExceptions("x", [] { return absl::NotFoundError("kept"); }), absl::NotFoundError("kept"));
}

TEST(GrpcServerOptionsTest, ShadowOptionsAreChecked) {
  GrpcServer::Options options;
  EXPECT_TRUE(options.Validate().ok());
  options.service.shadow_workers = -1;
  EXPECT_THAT(std::string(options.Validate().message()), HasSubstr("shadow_workers must be in [0, 1024], got -1"));
  options.service.shadow_workers = 0;
  EXPECT_TRUE(options.Validate().ok());
  for (const double share : {0.0, 1.01}) {
    options.service.shadow_cpu_share = share;
    EXPECT_THAT(std::string(options.Validate().message()),
                HasSubstr(absl::StrCat("shadow_cpu_share must be in (0, 1], got ", share)));
  }
  options.service.shadow_cpu_share = 0.25;
  EXPECT_TRUE(options.Validate().ok());
}

TEST(ServerParityTest, ScoresOverGrpcEqualTheReference) {
  const std::string root = testing::MakeTempDir();
  const std::vector<std::string> names = testing::FixtureNames();
  ASSERT_FALSE(names.empty());
  for (const std::string& name : names) {
    std::filesystem::create_directory_symlink(testing::FixtureModelRoot(name) + "/" + name, root + "/" + name);
  }
  ServerHarness harness(root);
  for (const std::string& name : names) {
    const auto fixture = testing::ReadParityFixture(name);
    for (const auto& c : fixture.cases()) {
      SCOPED_TRACE(absl::StrCat(name, ": ", c.description()));
      RankResponse response;
      const grpc::Status status = harness.Rank(c.request(), &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(response.model_name(), name);
      EXPECT_EQ(response.model_version(), c.request().model_version());
      ASSERT_EQ(response.tasks_size(), c.expected().tasks_size());
      ASSERT_EQ(response.candidates_size(), c.expected().candidates_size());
      for (int i = 0; i < response.candidates_size(); ++i) {
        EXPECT_EQ(response.candidates(i).id(), c.request().candidates(i).id());
        ASSERT_EQ(response.candidates(i).scores_size(), response.tasks_size());
        for (int t = 0; t < response.tasks_size(); ++t) {
          ASSERT_NEAR(response.candidates(i).scores(t), c.expected().candidates(i).scores(t),
                      testing::kParityTolerance)
              << "candidate " << i << " task " << t;
        }
      }
    }
  }
}

// The tiny model of test_util (version 1 and 2) behind a server.
class ServerTest : public ::testing::Test {
 protected:
  static GrpcServer::Options SmallLimits() {
    GrpcServer::Options options;
    options.service.max_candidates = 100;
    options.max_request_bytes = 256 << 10;
    return options;
  }

  ServerTest()
      : root_(MakeRoot()), spec_(*ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig))),
        harness_(root_, SmallLimits()) {}

  static std::string MakeRoot() {
    const std::string root = testing::MakeTempDir();
    auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
    testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
    testing::WriteModelVersion(root, "tiny", 2, testing::kTinyConfig, testing::RandomWeights(spec, 2));
    return root;
  }

  RankRequest Request(int candidates, uint32_t seed = 1) {
    RankRequest r = testing::RandomRequest(spec_.schema, candidates, seed).ToProto();
    r.set_model_name("tiny");
    return r;
  }

  void ExpectError(const RankRequest& request, grpc::StatusCode code, const std::string& substring) {
    RankResponse response;
    const grpc::Status status = harness_.Rank(request, &response);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(substring));
  }

  std::string root_;
  ModelSpec spec_;
  ServerHarness harness_;
};

TEST_F(ServerTest, AnswersInRequestOrderWithTheNewestVersion) {
  RankRequest request = Request(70);  // > max_batch_size: split into 3 batches
  request.set_model_name("");         // the only model is the default
  RankResponse response;
  ASSERT_TRUE(harness_.Rank(request, &response).ok());
  EXPECT_EQ(response.model_name(), "tiny");
  EXPECT_EQ(response.model_version(), 2);
  EXPECT_THAT(response.tasks(), ::testing::ElementsAre("click", "like"));
  ASSERT_EQ(response.candidates_size(), 70);
  for (int i = 0; i < 70; ++i) {
    EXPECT_EQ(response.candidates(i).id(), request.candidates(i).id());
    ASSERT_EQ(response.candidates(i).scores_size(), 2);
  }
  // The same candidate alone gets the same scores.
  RankRequest one = request;
  one.clear_candidates();
  *one.add_candidates() = request.candidates(41);
  RankResponse alone;
  ASSERT_TRUE(harness_.Rank(one, &alone).ok());
  EXPECT_NEAR(alone.candidates(0).scores(0), response.candidates(41).scores(0), 1e-6);
  EXPECT_NEAR(alone.candidates(0).scores(1), response.candidates(41).scores(1), 1e-6);
}

TEST_F(ServerTest, VersionsAreServedSideBySide) {
  RankRequest request = Request(3);
  request.set_model_version(1);
  RankResponse v1, v2;
  ASSERT_TRUE(harness_.Rank(request, &v1).ok());
  request.set_model_version(2);
  ASSERT_TRUE(harness_.Rank(request, &v2).ok());
  EXPECT_EQ(v1.model_version(), 1);
  EXPECT_NE(v1.candidates(0).scores(0), v2.candidates(0).scores(0));
}

TEST_F(ServerTest, EmptyCandidateListGetsAnEmptyAnswer) {
  RankResponse response;
  const grpc::Status status = harness_.Rank(Request(0), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.candidates_size(), 0);
  EXPECT_EQ(response.model_version(), 2);
  EXPECT_EQ(response.tasks_size(), 2);
}

TEST_F(ServerTest, UnknownModelIsNotFound) {
  RankRequest request = Request(1);
  request.set_model_name("huge");
  ExpectError(request, grpc::StatusCode::NOT_FOUND, "model 'huge' is not served (serving 'tiny')");
}

TEST_F(ServerTest, UnknownVersionIsNotFound) {
  RankRequest request = Request(1);
  request.set_model_version(9);
  ExpectError(request, grpc::StatusCode::NOT_FOUND, "model 'tiny' has no version 9 (ready: 1, 2)");
}

TEST_F(ServerTest, WrongNumberOfDenseValuesNamesCandidateAndField) {
  RankRequest request = Request(5);
  request.mutable_candidates(3)->mutable_features()->add_dense(1.0f);
  ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT,
              "candidates[3].features: dense has 4 values, but the candidate fields need 3 (age:1, counts:2)");
}

TEST_F(ServerTest, WrongNumberOfIdsNamesCandidate) {
  RankRequest request = Request(5);
  auto* f = request.mutable_candidates(2)->mutable_features();
  f->clear_id_counts();
  f->clear_ids();
  ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT, "candidates[2].features: ids has 0 ids");
}

TEST_F(ServerTest, IdCountsThatDoNotAddUpAreRejected) {
  RankRequest request = Request(5);
  auto* f = request.mutable_candidates(4)->mutable_features();
  f->clear_id_counts();
  f->add_id_counts(static_cast<uint32_t>(f->ids_size() + 1));
  ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT, "candidates[4].features: ids has");
  ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT, "but id_counts add up to");
}

TEST_F(ServerTest, NonFiniteValueIsRejectedWhereThePolicySaysSo) {
  RankRequest request = Request(5);
  request.mutable_candidates(1)->mutable_features()->set_dense(0, std::numeric_limits<float>::quiet_NaN());
  ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT,
              "candidates[1].features: field 'age' value 0 is nan; the field rejects NaN and Inf");
  // counts (index 1, 2) replace non-finite values with zero.
  request.mutable_candidates(1)->mutable_features()->set_dense(0, 1.0f);
  request.mutable_candidates(1)->mutable_features()->set_dense(2, std::numeric_limits<float>::infinity());
  RankResponse response;
  EXPECT_TRUE(harness_.Rank(request, &response).ok());
}

TEST_F(ServerTest, BadContextIsNamed) {
  RankRequest request = Request(2);
  request.mutable_context()->clear_dense();
  ExpectError(request, grpc::StatusCode::INVALID_ARGUMENT,
              "context: dense has 0 values, but the context fields need 3 (viewer_vec:3)");
}

TEST_F(ServerTest, TooManyCandidatesIsRejected) {
  ExpectError(Request(101), grpc::StatusCode::INVALID_ARGUMENT,
              "101 candidates, more than the server's limit of 100 (--max_candidates)");
}

TEST_F(ServerTest, RequestAboveMaxRequestBytesIsRejected) {
  RankRequest request = Request(1);
  request.mutable_context()->mutable_dense()->Resize(100000, 0.5f);  // 400 KB > 256 KiB
  RankResponse response;
  EXPECT_EQ(harness_.Rank(request, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(ServerLimitsTest, CallsBeyondMaxCallsInFlightAreRefusedAtOnce) {
  const std::string root = testing::MakeTempDir();
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  testing::WriteModelVersion(root, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  RankRequest request = testing::RandomRequest(spec.schema, 3, 1).ToProto();
  request.set_model_name("tiny");
  RankResponse response;
  // A call is done (and uncounted) just after its client has the answer.
  auto drained = [](RankerService& service) {
    return testing::WaitUntil(
        "no call in flight", [&] { return service.calls_in_flight(); }, [](int64_t n) { return n == 0; });
  };
  {
    // The call itself counts: a limit of 0 would leave room for none.
    GrpcServer::Options options;
    options.service.max_calls_in_flight = 0;
    ModelRepository::Options repository_options;
    repository_options.root = root;
    std::vector<std::string> warnings;
    auto repository = ModelRepository::Load(repository_options, &warnings);
    ASSERT_TRUE(repository.ok()) << repository.status();
    auto server = GrpcServer::Start(repository->get(), options);
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(server.status().message(), HasSubstr("max_calls_in_flight must be at least 1, got 0"));
  }
  {
    // A limit of 1 leaves room for the call itself.
    GrpcServer::Options options;
    options.service.max_calls_in_flight = 1;
    ServerHarness harness(root, options);
    ASSERT_TRUE(harness.Rank(request, &response).ok());
    EXPECT_EQ(response.candidates_size(), 3);
    EXPECT_TRUE(drained(harness.server().service()));
  }
}

TEST_F(ServerTest, ConcurrentCallsAllGetTheirOwnScores) {
  std::vector<RankRequest> requests;
  std::vector<RankResponse> sequential(8);
  for (int i = 0; i < 8; ++i) {
    requests.push_back(Request(10 + 9 * i, 100 + i));
    ASSERT_TRUE(harness_.Rank(requests[i], &sequential[i]).ok());
  }
  std::vector<RankResponse> concurrent(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      for (int repeat = 0; repeat < 5; ++repeat) {
        ASSERT_TRUE(harness_.Rank(requests[i], &concurrent[i]).ok());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(concurrent[i].candidates_size(), sequential[i].candidates_size());
    for (int c = 0; c < concurrent[i].candidates_size(); ++c) {
      EXPECT_EQ(concurrent[i].candidates(c).scores(0), sequential[i].candidates(c).scores(0));
    }
  }
}

TEST_F(ServerTest, GetModelInfoDescribesFieldsAndTasks) {
  serving::v1::GetModelInfoRequest request;
  request.set_model_name("tiny");
  request.set_model_version(1);
  serving::v1::ModelInfo info;
  grpc::ClientContext context;
  ASSERT_TRUE(harness_.stub().GetModelInfo(&context, request, &info).ok());
  EXPECT_EQ(info.model_name(), "tiny");
  EXPECT_EQ(info.model_version(), 1);
  EXPECT_EQ(info.description(), "tiny test model");
  ASSERT_EQ(info.context_fields_size(), 2);
  EXPECT_EQ(info.context_fields(0).name(), "viewer_id");
  EXPECT_EQ(info.context_fields(0).kind(), serving::v1::FeatureField::CATEGORICAL);
  EXPECT_EQ(info.context_fields(0).num_buckets(), 50u);
  EXPECT_EQ(info.context_fields(0).width(), 4u);
  ASSERT_EQ(info.candidate_fields_size(), 3);
  EXPECT_EQ(info.candidate_fields(2).name(), "counts");
  EXPECT_EQ(info.candidate_fields(2).kind(), serving::v1::FeatureField::DENSE);
  EXPECT_EQ(info.candidate_fields(2).width(), 2u);
  EXPECT_TRUE(info.candidate_fields(2).accepts_non_finite());
  EXPECT_EQ(info.candidate_fields(1).max_ids(), 4u);
  EXPECT_THAT(info.tasks(), ::testing::ElementsAre("click", "like"));
  EXPECT_EQ(info.parameter_count(), spec_.ParameterCount());
  EXPECT_EQ(info.flops_per_candidate(), spec_.FlopsPerCandidate());

  request.set_model_version(7);
  grpc::ClientContext context2;
  EXPECT_EQ(harness_.stub().GetModelInfo(&context2, request, &info).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServerTest, CallsNameAVersionByLabelAndModelInfoSaysWhichLabelsNameIt) {
  testing::WriteFileOrDie(root_ + "/tiny/rollout.pbtxt",  // versions 1 and 2
                          R"pb(labels { name: "stable" version: 1 } labels { name: "canary" version: 2 })pb");
  ServerHarness harness(root_);  // loads the labels
  RankRequest request = Request(3);
  RankResponse response;
  ASSERT_TRUE(harness.Rank(request, &response).ok());
  EXPECT_EQ(response.model_version(), 1);  // no version named: stable, not the newest
  request.set_model_version_label("canary");
  ASSERT_TRUE(harness.Rank(request, &response).ok());
  EXPECT_EQ(response.model_version(), 2);
  request.set_model_version(2);
  EXPECT_EQ(harness.Rank(request, &response).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.set_model_version(0);
  request.set_model_version_label("beta");
  const grpc::Status unknown = harness.Rank(request, &response);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(unknown.error_message(), HasSubstr("no version labelled 'beta' (labels: canary=2, stable=1)"));

  for (const auto& [label, version] : std::vector<std::pair<std::string, int64_t>>{{"", 1}, {"canary", 2}}) {
    serving::v1::GetModelInfoRequest info_request;
    info_request.set_model_version_label(label);
    serving::v1::ModelInfo info;
    grpc::ClientContext context;
    ASSERT_TRUE(harness.stub().GetModelInfo(&context, info_request, &info).ok());
    EXPECT_EQ(info.model_version(), version);
    EXPECT_THAT(info.version_labels(), ::testing::ElementsAre(label.empty() ? "stable" : label));
  }
}

TEST_F(ServerTest, InputProblemsAreCountedPerFieldAndTheScoresPerTask) {
  ServerMetrics metrics;
  GrpcServer::Options options = SmallLimits();
  options.service.metrics = &metrics;
  ServerHarness harness(root_, options);
  const float nan = std::nanf(""), inf = std::numeric_limits<float>::infinity();
  testing::OwnedRequest owned = testing::RandomRequest(spec_.schema, 3, 7);
  owned.context.dense = {nan, 1.0f, inf};  // viewer_vec: 2 replaced
  owned.context.ids = {-3};                // viewer_id: outside [0, 50)
  owned.context.id_counts.clear();
  for (testing::OwnedFeatures& c : owned.candidates) {
    c.dense = {1.0f, nan, 0.5f};  // counts: 1 replaced each
    c.ids.clear();
    c.id_counts = {0};  // topics: empty
  }
  RankRequest request = owned.ToProto();
  request.set_model_name("tiny");
  RankResponse response;
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(harness.Rank(request, &response).ok());
  const std::string text = metrics.Serialize();
  auto problems = [&](const std::string& field, const std::string& problem) {
    return MetricValue(text, absl::StrCat("masknet_input_problems_total{field=\"", field,
                                          "\",model=\"tiny\",problem=\"", problem, "\",version=\"2\"}"));
  };
  EXPECT_EQ(problems("viewer_vec", "non_finite_replaced"), 4);
  EXPECT_EQ(problems("viewer_id", "out_of_vocabulary"), 2);
  EXPECT_EQ(problems("counts", "non_finite_replaced"), 6);
  EXPECT_EQ(problems("topics", "empty_ids"), 6);
  EXPECT_EQ(problems("age", "clamped"), 0);  // exported, at 0, for every problem a field can have
  EXPECT_EQ(problems("age", "non_finite_replaced"), -1);  // REJECT: refused, never replaced
  EXPECT_EQ(problems("topics", "out_of_vocabulary"), -1);  // IDENTITY: refused
  EXPECT_EQ(MetricValue(text, "masknet_scores_count{model=\"tiny\",task=\"click\",version=\"2\"}"), 6);
}

// A call's features and scores, as ScoreBatch sees a RankCall.
class FeaturesTask : public ScoredTask {
 public:
  FeaturesTask(testing::OwnedRequest request, int num_tasks)
      : request_(std::move(request)), view_(request_.view()), scores_(request_.candidates.size() * num_tasks),
        num_tasks_(num_tasks) {}
  int64_t size() const override { return static_cast<int64_t>(request_.candidates.size()); }
  int64_t bytes() const override { return 0; }
  absl::Time deadline() const override { return absl::InfiniteFuture(); }
  void Done(absl::Status) override {}
  const RequestFeatures& features() const override { return view_; }
  float* scores(int64_t candidate) override { return scores_.data() + candidate * num_tasks_; }
  absl::Time accepted() const override { return absl::Now(); }
  const std::vector<float>& all_scores() const { return scores_; }

 private:
  testing::OwnedRequest request_;
  RequestFeatures view_;
  std::vector<float> scores_;
  int num_tasks_;
};

TEST(ScoreBatchTest, AValueThatOverflowsInOneCallFailsThatCallAloneAndLeavesItOutOfTheMetrics) {
  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  TensorMap weights = testing::RandomWeights(spec, 1);
  // counts (candidate dense values 1 and 2) is batch-normed without a clamp:
  // a tiny variance turns a large finite value into infinity.
  weights["fields.counts.batch_norm.running_var"].values = {1e-6f, 1e-6f};
  auto model = *MaskNetModel::Create(std::move(spec), std::move(weights), {16});
  const int num_tasks = model->num_tasks();
  const float nan = std::nanf("");
  testing::OwnedRequest good_request = testing::RandomRequest(model->spec().schema, 3, 5);
  good_request.candidates[0].dense[1] = nan;  // counts: 1 replaced
  testing::OwnedRequest bad_request = testing::RandomRequest(model->spec().schema, 2, 6);
  bad_request.candidates[0].dense[1] = nan;  // not counted: its call fails
  bad_request.candidates[1].dense[2] = 3e38f;
  FeaturesTask good(good_request, num_tasks), bad(bad_request, num_tasks);
  ServerMetrics metrics;
  auto version = metrics.ForVersion("tiny", 1, {"click", "like"}, &model->spec().schema);
  ScoringWorker worker;
  std::vector<TaskSlice> batch = {TaskSlice{&good, 0, 3, absl::OkStatus()}, TaskSlice{&bad, 0, 2, absl::OkStatus()}};
  ASSERT_TRUE(ScoreBatch(*model, version.get(), worker, absl::MakeSpan(batch)).ok());
  EXPECT_TRUE(batch[0].status.ok()) << batch[0].status;
  EXPECT_EQ(batch[1].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(batch[1].status.message()),
              HasSubstr("candidates[1].features: field 'counts' value 1 (3e+38) overflows float32"));
  EXPECT_EQ(good.all_scores(), testing::ScoreAllOrDie(*model, good_request.view()));
  const std::string text = metrics.Serialize();
  for (const std::string task : {"click", "like"}) {
    EXPECT_EQ(MetricValue(text, "masknet_scores_count{model=\"tiny\",task=\"" + task + "\",version=\"1\"}"), 3)
        << task;
  }
  EXPECT_EQ(MetricValue(text, "masknet_input_problems_total{field=\"counts\",model=\"tiny\","
                              "problem=\"non_finite_replaced\",version=\"1\"}"),
            1);
}

TEST(ServerMetricsTest, EachScoreCountsInTheFirstBucketItIsAtMost) {
  ServerMetrics metrics;
  auto version = metrics.ForVersion("m", 3, {"click"}, nullptr);
  // Bounds 0.001 0.002 0.005 0.01 0.02 0.05 0.1 0.2 0.3 ... 0.9 0.95 0.99;
  // these scores are exact in float (0.5 is a bound).
  const std::vector<float> scores = {0.0f, 0.0015f, 0.25f, 0.5f, 0.5f, 0.75f, 0.9921875f, 1.0f};
  version->ObserveScores(scores);
  const std::string text = metrics.Serialize();
  auto bucket = [&](const std::string& le) {
    return MetricValue(text, "masknet_scores_bucket{model=\"m\",task=\"click\",version=\"3\",le=\"" + le + "\"}");
  };
  EXPECT_EQ(bucket("0.001"), 1);
  EXPECT_EQ(bucket("0.002"), 2);
  EXPECT_EQ(bucket("0.3"), 3);
  EXPECT_EQ(bucket("0.4"), 3);
  EXPECT_EQ(bucket("0.5"), 5);  // le: a score equal to a bound counts in its bucket
  EXPECT_EQ(bucket("0.8"), 6);
  EXPECT_EQ(bucket("0.99"), 6);
  EXPECT_EQ(bucket("+Inf"), 8);
  EXPECT_NEAR(MetricValue(text, "masknet_scores_sum{model=\"m\",task=\"click\",version=\"3\"}"), 3.9936875, 1e-6);
}

TEST_F(ServerTest, WithoutDataMetricsNeitherScoresNorInputProblemsAreExported) {
  ServerMetrics metrics;
  GrpcServer::Options options = SmallLimits();
  options.service.metrics = &metrics;
  options.service.data_metrics = false;
  ServerHarness harness(root_, options);
  RankResponse response;
  ASSERT_TRUE(harness.Rank(Request(3), &response).ok());
  const std::string text = metrics.Serialize();
  EXPECT_EQ(MetricValue(text, "masknet_batch_size_candidates_sum{model=\"tiny\",version=\"2\"}"), 3);
  EXPECT_THAT(text, ::testing::Not(HasSubstr("masknet_scores")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("masknet_input_problems_total")));
}

TEST_F(ServerTest, HealthServiceReportsServing) {
  auto health = grpc::health::v1::Health::NewStub(harness_.channel());
  for (const std::string service : {"", "masknet.serving.v1.Ranker"}) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::ClientContext context;
    ASSERT_TRUE(health->Check(&context, request, &response).ok()) << service;
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
}

TEST(ServerShutdownTest, ShutdownFinishesCallsInFlightAndThenRefusesNewOnes) {
  // Six calls of about a tenth of a second each on a full-size model; once the
  // server holds them all (however slowly the client's threads sent them),
  // shut down: every one is answered, and a call after that is refused as
  // UNAVAILABLE, never half-done.
  const std::string name = "paper-criteo-parallel";
  const std::string root = testing::MakeTempDir();
  std::filesystem::create_directory_symlink(testing::FixtureModelRoot(name) + "/" + name, root + "/" + name);
  const auto config = ReadModelConfig(root + "/" + name + "/1/model_config.pbtxt");
  ASSERT_TRUE(config.ok()) << config.status();
  const ModelSpec spec = *ModelSpec::FromConfig(*config);
  // Calls large enough that the last to arrive still has tens of
  // milliseconds of scoring ahead when this thread sees it arrive.
  constexpr int kCandidates = 4000;
  RankRequest request = testing::RandomRequest(spec.schema, kCandidates, 1).ToProto();
  request.set_model_name(name);
  GrpcServer::Options options;
  options.service.max_candidates = kCandidates;
  options.max_request_bytes = 64 << 20;
  ServerHarness harness(root, options);
  constexpr int kCalls = 6;
  std::atomic<int> ok{0}, ok_after_shutdown{0};
  std::atomic<bool> shutting_down{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&] {
      RankResponse response;
      const grpc::Status status = harness.Rank(request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(response.candidates_size(), kCandidates);
      if (status.ok() && shutting_down) ++ok_after_shutdown;
      if (status.ok()) ++ok;
    });
  }
  ASSERT_TRUE(testing::WaitUntil(
      "the server to have accepted every call's candidates",
      [&] {
        const BatchQueueStats s = harness.server().service().QueueStats(name, 0).value_or(BatchQueueStats{});
        return s.queued_candidates + s.running_candidates + s.processed_candidates;
      },
      [](int64_t accepted) { return accepted == kCalls * kCandidates; }));
  shutting_down = true;
  harness.server().Shutdown(absl::Seconds(60));
  for (auto& t : threads) t.join();
  EXPECT_GE(ok_after_shutdown, 1) << "no call was in flight at shutdown";
  EXPECT_EQ(ok, kCalls);
  RankResponse response;
  EXPECT_EQ(harness.Rank(request, &response).error_code(), grpc::StatusCode::UNAVAILABLE);
}

// The composition root, in process: what masknet_server's main runs.
class WholeServerTest : public ::testing::Test {
 protected:
  static Server::Options Options(const std::string& root) {
    Server::Options options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.metrics_port = 0;  // off: the process tests cover HTTP
    options.repository.root = root;
    options.num_workers = 1;
    options.model_poll_interval = absl::Milliseconds(50);
    return options;
  }

  static grpc::health::v1::HealthCheckResponse::ServingStatus Health(const Server& server) {
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server.grpc_port()),
                                       grpc::InsecureChannelCredentials());
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    const grpc::Status s = grpc::health::v1::Health::NewStub(channel)->Check(&context, request, &response);
    return s.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  }
};

TEST_F(WholeServerTest, CreateRefusesBadOptionsNamingThemAndStartsNothing) {
  Server::Options options = Options(testing::MakeTempDir());
  options.repository.model.max_batch_size = 0;
  auto server = Server::Create(options);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("max_batch_size must be in [1, 16384], got 0"));
  options = Options("");
  EXPECT_THAT(Server::Create(options).status().message(), HasSubstr("root is required"));
  options = Options(testing::MakeTempDir());
  options.tls.key = "/nonexistent.key";
  EXPECT_EQ(Server::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(WholeServerTest, APortsFileThatCannotBeWrittenFailsStart) {
  Server::Options options = Options(testing::MakeTempDir());
  options.ports_file = "/nonexistent/dir/ports.json";
  auto server = Server::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const absl::Status started = (*server)->Start();
  EXPECT_EQ(started.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(started.message(), HasSubstr("cannot write the ports file '/nonexistent/dir/ports.json.tmp."));
}

TEST_F(WholeServerTest, ReadyOnceAVersionIsPublishedAndNotWhileStopping) {
  const std::string root = testing::MakeTempDir();
  Server::Options options = Options(root);
  options.ports_file = testing::MakeTempDir() + "/ports.json";
  auto server = Server::Create(options);
  ASSERT_TRUE(server.ok()) << server.status();
  std::string why;
  EXPECT_FALSE((*server)->Ready(&why));
  EXPECT_EQ(why, "loading models");
  ASSERT_TRUE((*server)->Start().ok());
  EXPECT_GT((*server)->grpc_port(), 0);
  EXPECT_EQ((*server)->metrics_port(), 0);
  std::ifstream ports(options.ports_file);
  std::stringstream written;
  written << ports.rdbuf();
  EXPECT_EQ(written.str(), absl::StrCat("{\"grpc\": ", (*server)->grpc_port(), ", \"http\": 0}\n"));
  EXPECT_FALSE((*server)->Ready(&why));
  EXPECT_EQ(why, "no model version loaded yet");
  EXPECT_EQ(Health(**server), grpc::health::v1::HealthCheckResponse::NOT_SERVING);

  auto spec = *ModelSpec::FromConfig(testing::ParseConfigOrDie(testing::kTinyConfig));
  // Published as an operator would: written elsewhere, renamed into place.
  const std::string staging = testing::MakeTempDir();
  testing::WriteModelVersion(staging, "tiny", 1, testing::kTinyConfig, testing::RandomWeights(spec, 1));
  std::filesystem::rename(staging + "/tiny", root + "/tiny");
  ASSERT_TRUE(testing::WaitUntil(
      "the server to be ready",
      [&] {
        std::string reason;
        return (*server)->Ready(&reason) ? std::string("ready") : reason;
      },
      [](const std::string& state) { return state == "ready"; }));
  EXPECT_TRUE(testing::WaitUntil(
      "gRPC health to say SERVING", [&] { return static_cast<int>(Health(**server)); },
      [](int status) { return status == grpc::health::v1::HealthCheckResponse::SERVING; }));
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->grpc_port()),
                                     grpc::InsecureChannelCredentials());
  RankRequest request = testing::RandomRequest(spec.schema, 4, 2).ToProto();
  RankResponse response;
  grpc::ClientContext context;
  ASSERT_TRUE(Ranker::NewStub(channel)->Rank(&context, request, &response).ok());
  EXPECT_EQ(response.candidates_size(), 4);

  (*server)->Stop("the test");
  EXPECT_FALSE((*server)->Ready(&why));
  EXPECT_EQ(why, "shutting down");
  EXPECT_FALSE(std::filesystem::exists(options.ports_file));
  (*server)->Stop("the test again");  // idempotent
}

}  // namespace
}  // namespace masknet
