// masknet_compare: scores captured Rank calls (masknet_server --capture_dir)
// again on two versions of a model, or on one version at two precisions, and
// reports how the two differ, per task: the largest and typical difference of
// a candidate's score, and how well the two agree on the order of the
// candidates within each call. The offline twin of shadow scoring.
//
//   masknet_compare --capture_dir=/var/capture --model_root=/models --model=home_timeline --versions=7,8
//   masknet_compare --capture_dir=/var/capture --model_root=/models --versions=8 --precisions=fp32,bf16
//
// Each call is read with each side's own schema (a call one side cannot read
// is counted, not compared) and scored in batches of --max_batch_size. Tasks
// are matched by name. Exit codes: 0 compared; 1 an error (named), or no
// call could be compared; 2 bad flags.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "loader/model_repository.h"
#include "server/capture_file.h"
#include "server/request_parser.h"

ABSL_FLAG(std::string, capture_dir, "", "Capture files to read (masknet_server --capture_dir). Required.");
ABSL_FLAG(std::string, model_root, "", "The model repository holding the versions to compare. Required.");
ABSL_FLAG(std::string, model, "",
          "The model whose captured calls are compared; empty: the model that answered the captured calls, "
          "when they name one.");
ABSL_FLAG(std::vector<std::string>, versions, {},
          "The two versions, A,B; one number compares a version with itself (at two --precisions). Required.");
ABSL_FLAG(std::vector<std::string>, precisions, {"fp32"},
          "The arithmetic of A and B: fp32, bf16 or int8; one value applies to both.");
ABSL_FLAG(int64_t, max_batch_size, 256, "Candidates per forward pass.");
ABSL_FLAG(int64_t, max_calls, 100000, "Most captured calls compared (the oldest first); 0: all.");
ABSL_FLAG(std::string, json, "", "Also write the report as JSON to this file.");

namespace masknet {
namespace {

[[noreturn]] void Fail(const absl::Status& status, int code = 1) {
  std::fprintf(stderr, "masknet_compare: %s\n", std::string(status.message()).c_str());
  std::exit(code);
}

struct Side {
  int64_t version = 0;
  Precision precision = Precision::kF32;
  std::shared_ptr<const Servable> servable;
  Workspace workspace;
  std::string Name() const { return absl::StrCat("version ", version, " at ", PrecisionName(precision)); }
};

// The scores of `request`'s candidates on `side`, [candidates, tasks].
absl::StatusOr<std::vector<float>> Score(Side& side, const serving::v1::RankRequest& request) {
  const MaskNetModel& model = *side.servable->model;
  auto features = ParseRankRequest(request, model.spec().schema, request.candidates_size());
  if (!features.ok()) return features.status();
  const int64_t n = static_cast<int64_t>(features->candidates.size());
  std::vector<float> scores(n * model.num_tasks());
  for (int64_t begin = 0; begin < n; begin += model.max_batch_size()) {
    const BatchSlice slice{&*features, begin, std::min(n, begin + model.max_batch_size())};
    absl::Status s = model.Run(absl::MakeConstSpan(&slice, 1), side.workspace,
                               absl::MakeSpan(scores.data() + begin * model.num_tasks(), slice.size() * model.num_tasks()));
    if (!s.ok()) return s;
  }
  return scores;
}

// Ranks of `x` (1-based; ties get their average rank).
std::vector<double> Ranks(const std::vector<float>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> ranks(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = (static_cast<double>(i + j) / 2) + 1;
    i = j + 1;
  }
  return ranks;
}

// Spearman's rho of a and b (1 when either is constant and both are).
double Spearman(const std::vector<float>& a, const std::vector<float>& b) {
  const std::vector<double> ra = Ranks(a), rb = Ranks(b);
  const double n = static_cast<double>(a.size());
  const double mean = (n + 1) / 2;
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    sab += (ra[i] - mean) * (rb[i] - mean);
    saa += (ra[i] - mean) * (ra[i] - mean);
    sbb += (rb[i] - mean) * (rb[i] - mean);
  }
  if (saa == 0 || sbb == 0) return saa == sbb ? 1.0 : 0.0;
  return sab / std::sqrt(saa * sbb);
}

struct TaskReport {
  std::string name;
  int a_index = 0, b_index = 0;
  std::vector<float> differences;  // |b - a| per candidate
  std::vector<double> spearman;    // per call of 2 or more candidates
  int64_t same_top = 0;            // calls whose highest-scored candidate is the same
};

// The q-quantile of x: its ceil(q * n)-th smallest value.
double Quantile(std::vector<float> x, double q) {
  if (x.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(x.size())));
  const size_t k = std::min(x.size() - 1, rank == 0 ? 0 : rank - 1);
  std::nth_element(x.begin(), x.begin() + k, x.end());
  return x[k];
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "scores captured Rank calls on two versions (or precisions) of a model and reports per task how the scores "
      "and the order of each call's candidates differ.\n"
      "  masknet_compare --capture_dir=DIR --model_root=ROOT --model=NAME --versions=7,8 [--precisions=fp32,bf16]");
  absl::ParseCommandLine(argc, argv);
  const std::string capture_dir = absl::GetFlag(FLAGS_capture_dir), root = absl::GetFlag(FLAGS_model_root);
  if (capture_dir.empty()) Fail(absl::InvalidArgumentError("--capture_dir is required"), 2);
  if (root.empty()) Fail(absl::InvalidArgumentError("--model_root is required"), 2);
  const std::vector<std::string> versions = absl::GetFlag(FLAGS_versions);
  const std::vector<std::string> precisions = absl::GetFlag(FLAGS_precisions);
  if (versions.empty() || versions.size() > 2) {
    Fail(absl::InvalidArgumentError("--versions takes one or two version numbers (A,B)"), 2);
  }
  if (precisions.empty() || precisions.size() > 2) {
    Fail(absl::InvalidArgumentError("--precisions takes one or two of fp32, bf16, int8"), 2);
  }
  Side sides[2];
  for (int i = 0; i < 2; ++i) {
    const std::string& v = versions[std::min<size_t>(i, versions.size() - 1)];
    sides[i].version = ParseVersion(v);
    if (sides[i].version == 0) Fail(absl::InvalidArgumentError(absl::StrCat("--versions: '", v, "' is not a version")), 2);
    std::string error;
    if (!AbslParseFlag(precisions[std::min<size_t>(i, precisions.size() - 1)], &sides[i].precision, &error)) {
      Fail(absl::InvalidArgumentError(absl::StrCat("--precisions: ", error)), 2);
    }
  }
  const int64_t max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  if (max_batch_size < 1) Fail(absl::InvalidArgumentError("--max_batch_size must be at least 1"), 2);

  auto calls = ReadCaptureDir(capture_dir, absl::GetFlag(FLAGS_max_calls));
  if (!calls.ok()) Fail(calls.status());
  std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    std::map<std::string, int64_t> answered;
    for (const auto& call : *calls) ++answered[call.response().model_name()];
    if (answered.size() != 1) {
      Fail(absl::InvalidArgumentError(absl::StrCat("the captured calls in '", capture_dir, "' were answered by ",
                                                   answered.size(), " models; name one with --model")));
    }
    model = answered.begin()->first;
  }
  for (Side& side : sides) {
    MaskNetModel::Options options;
    options.max_batch_size = max_batch_size;
    options.precision = side.precision;
    auto servable = LoadServable(model, side.version, absl::StrCat(root, "/", model, "/", side.version), options);
    if (!servable.ok()) Fail(servable.status());
    side.servable = *std::move(servable);
    if (side.servable->model->precision() != side.precision) {
      Fail(absl::FailedPreconditionError(absl::StrCat(side.Name(), ": ", side.servable->model->precision_note())));
    }
  }

  std::vector<TaskReport> tasks;
  const auto& a_tasks = sides[0].servable->model->spec().tasks;
  const auto& b_tasks = sides[1].servable->model->spec().tasks;
  for (size_t i = 0; i < a_tasks.size(); ++i) {
    for (size_t j = 0; j < b_tasks.size(); ++j) {
      if (a_tasks[i].name != b_tasks[j].name) continue;
      TaskReport& t = tasks.emplace_back();
      t.name = a_tasks[i].name;
      t.a_index = static_cast<int>(i);
      t.b_index = static_cast<int>(j);
    }
  }
  if (tasks.empty()) Fail(absl::FailedPreconditionError("the two sides have no task of the same name"));
  const int a_width = static_cast<int>(a_tasks.size()), b_width = static_cast<int>(b_tasks.size());
  int64_t compared = 0, other_model = 0, candidates = 0;
  int64_t unreadable[2] = {0, 0};
  std::string first_unreadable[2];
  for (const auto& call : *calls) {
    if (call.response().model_name() != model) {
      ++other_model;
      continue;
    }
    absl::StatusOr<std::vector<float>> scores[2];
    bool readable = true;
    for (int i = 0; i < 2; ++i) {
      scores[i] = Score(sides[i], call.request());
      if (!scores[i].ok()) {
        if (scores[i].status().code() != absl::StatusCode::kInvalidArgument) Fail(scores[i].status());
        if (unreadable[i]++ == 0) first_unreadable[i] = std::string(scores[i].status().message());
        readable = false;
      }
    }
    if (!readable) continue;
    ++compared;
    const size_t n = static_cast<size_t>(call.request().candidates_size());
    candidates += static_cast<int64_t>(n);
    for (TaskReport& t : tasks) {
      std::vector<float> a(n), b(n);
      for (size_t c = 0; c < n; ++c) {
        a[c] = (*scores[0])[c * a_width + t.a_index];
        b[c] = (*scores[1])[c * b_width + t.b_index];
        t.differences.push_back(std::abs(b[c] - a[c]));
      }
      if (n >= 2) t.spearman.push_back(Spearman(a, b));
      if (n >= 1) {
        t.same_top += std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(b.begin(), b.end()) - b.begin();
      }
    }
  }

  if (compared == 0) {
    Fail(absl::FailedPreconditionError(absl::StrCat(
        "no captured call of model '", model, "' could be compared (", calls->size(), " read from '", capture_dir,
        "'", unreadable[0] + unreadable[1] > 0
                 ? absl::StrCat("; unreadable by A: ", unreadable[0], ", by B: ", unreadable[1], ", e.g. ",
                                unreadable[0] > 0 ? first_unreadable[0] : first_unreadable[1])
                 : std::string(),
        ")")));
  }
  std::printf("A: %s, B: %s of model '%s'; %lld captured calls compared (%lld candidates)", sides[0].Name().c_str(),
              sides[1].Name().c_str(), model.c_str(), static_cast<long long>(compared),
              static_cast<long long>(candidates));
  if (other_model > 0) std::printf(", %lld of other models skipped", static_cast<long long>(other_model));
  std::printf("\n");
  for (int i = 0; i < 2; ++i) {
    if (unreadable[i] > 0) {
      std::printf("%s cannot read %lld call(s), e.g.: %s\n", i == 0 ? "A" : "B", static_cast<long long>(unreadable[i]),
                  first_unreadable[i].c_str());
    }
  }
  std::printf("%-24s %12s %12s %12s %12s | %14s %14s %10s\n", "task", "max |B-A|", "p99", "median", "mean",
              "rank rho mean", "rank rho min", "same top");
  std::string json = absl::StrFormat(
      "{\"model\": \"%s\", \"a\": {\"version\": %d, \"precision\": \"%s\"}, \"b\": {\"version\": %d, \"precision\": "
      "\"%s\"}, \"calls\": %d, \"candidates\": %d, \"unreadable\": [%d, %d], \"tasks\": {",
      model, sides[0].version, PrecisionName(sides[0].precision), sides[1].version, PrecisionName(sides[1].precision),
      compared, candidates, unreadable[0], unreadable[1]);
  for (size_t k = 0; k < tasks.size(); ++k) {
    const TaskReport& t = tasks[k];
    const double max = t.differences.empty() ? 0 : *std::max_element(t.differences.begin(), t.differences.end());
    const double mean = t.differences.empty()
                            ? 0
                            : std::accumulate(t.differences.begin(), t.differences.end(), 0.0) / t.differences.size();
    const double p99 = Quantile(t.differences, 0.99), median = Quantile(t.differences, 0.5);
    const double rho_mean = t.spearman.empty()
                                ? 1
                                : std::accumulate(t.spearman.begin(), t.spearman.end(), 0.0) / t.spearman.size();
    const double rho_min = t.spearman.empty() ? 1 : *std::min_element(t.spearman.begin(), t.spearman.end());
    const double same_top = compared == 0 ? 1 : static_cast<double>(t.same_top) / static_cast<double>(compared);
    std::printf("%-24s %12.3g %12.3g %12.3g %12.3g | %14.4f %14.4f %9.1f%%\n", t.name.c_str(), max, p99, median, mean,
                rho_mean, rho_min, 100 * same_top);
    absl::StrAppendFormat(&json,
                          "%s\"%s\": {\"max\": %.9g, \"p99\": %.9g, \"median\": %.9g, \"mean\": %.9g, "
                          "\"spearman_mean\": %.9g, \"spearman_min\": %.9g, \"same_top\": %.9g}",
                          k == 0 ? "" : ", ", t.name, max, p99, median, mean, rho_mean, rho_min, same_top);
  }
  json += "}}\n";
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path);
    out << json;
    if (!out) Fail(absl::UnavailableError(absl::StrCat("cannot write --json file '", path, "'")));
  }
  return 0;
}

}  // namespace
}  // namespace masknet

int main(int argc, char** argv) { return masknet::Main(argc, argv); }
