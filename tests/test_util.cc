#include "tests/test_util.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/text_format.h"

namespace masknet::testing {

const char kTinyConfig[] = R"pb(
  description: "tiny test model"
  fields {
    name: "viewer_id" scope: CONTEXT
    categorical { num_buckets: 50 embedding_dim: 4 bucket_rule: MODULO pooling: SUM }
  }
  fields {
    name: "age" scope: CANDIDATE
    dense { width: 1 non_finite: REJECT transform: SIGNED_LOG1P affine {} clamp_min: -3 clamp_max: 3 }
  }
  fields {
    name: "viewer_vec" scope: CONTEXT
    dense { width: 3 non_finite: REPLACE_WITH_ZERO }
  }
  fields {
    name: "topics" scope: CANDIDATE
    categorical { num_buckets: 16 embedding_dim: 4 bucket_rule: IDENTITY pooling: MEAN max_ids: 4 allow_empty: true }
  }
  fields {
    name: "counts" scope: CANDIDATE
    dense { width: 2 non_finite: REPLACE_WITH_ZERO batch_norm { eps: 1e-3 affine: true } }
  }
  input_norms { name: "viewer_vec_norm" fields: "viewer_vec" eps: 1e-5 }
  masknet {
    mode: PARALLEL
    blocks { aggregation_size: 16 output_size: 8 activation: RELU layer_norm_eps: 1e-5 }
    blocks { reduction { factor: 2 base: MASK_INPUT_WIDTH } output_size: 6 hidden_bias: true activation: ACTIVATION_NONE layer_norm_eps: 1e-5 }
  }
  mlp { output_size: 8 activation: RELU }
  tasks { name: "click" layers { output_size: 4 activation: RELU } layers { output_size: 1 activation: ACTIVATION_NONE } }
  tasks { name: "like" layers { output_size: 1 activation: ACTIVATION_NONE } negative_sampling_rate: 0.25 }
)pb";

config::v1::ModelConfig ParseConfigOrDie(const std::string& text) {
  config::v1::ModelConfig config;
  if (!google::protobuf::TextFormat::ParseFromString(text, &config)) {
    std::fprintf(stderr, "ParseConfigOrDie: bad test config\n");
    std::abort();
  }
  return config;
}

TensorMap RandomWeights(const ModelSpec& spec, uint32_t seed) {
  std::mt19937 rng(seed);
  TensorMap weights;
  for (const TensorSpec& t : spec.ExpectedTensors()) {
    Tensor tensor;
    tensor.shape = t.shape;
    const int64_t fan_in = t.shape.size() == 2 ? t.shape[1] : 1;
    const bool positive =
        t.name.ends_with(".running_var") || (t.name.ends_with(".weight") && t.shape.size() == 1);
    std::uniform_real_distribution<float> dist(positive ? 0.5f : -1.0f, positive ? 1.5f : 1.0f);
    const float scale = t.shape.size() == 2 ? std::sqrt(3.0f / static_cast<float>(fan_in)) : 1.0f;
    tensor.values.resize(tensor.num_elements());
    for (float& v : tensor.values) v = dist(rng) * (positive ? 1.0f : scale);
    weights.emplace(t.name, std::move(tensor));
  }
  return weights;
}

std::string EncodeSafetensors(const TensorMap& tensors, bool bf16) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  std::sort(names.begin(), names.end());
  std::string data;
  std::vector<std::string> entries;
  for (const std::string& name : names) {
    const Tensor& t = tensors.at(name);
    const size_t begin = data.size();
    for (float v : t.values) {
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      if (bf16) {
        const uint16_t half = static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
        data.append(reinterpret_cast<const char*>(&half), 2);
      } else {
        data.append(reinterpret_cast<const char*>(&bits), 4);
      }
    }
    entries.push_back(absl::StrCat("\"", name, "\":{\"dtype\":\"", bf16 ? "BF16" : "F32",
                                   "\",\"shape\":[", absl::StrJoin(t.shape, ","),
                                   "],\"data_offsets\":[", begin, ",", data.size(), "]}"));
  }
  std::string header = absl::StrCat("{\"__metadata__\":{\"format\":\"pt\"},", absl::StrJoin(entries, ","), "}");
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string MakeTempDir() {
  static std::atomic<int> counter{0};
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base ? base : "/tmp", "/masknet_test_", getpid(), "_", counter++);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteFileOrDie(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
  if (!out) {
    std::fprintf(stderr, "WriteFileOrDie: cannot write %s\n", path.c_str());
    std::abort();
  }
}

std::string WriteModelVersion(const std::string& root, const std::string& name, int64_t version,
                              const std::string& config_text, const TensorMap& weights) {
  const std::string dir = absl::StrCat(root, "/", name, "/", version);
  std::filesystem::create_directories(dir);
  WriteFileOrDie(dir + "/model_config.pbtxt", config_text);
  WriteFileOrDie(dir + "/weights.safetensors", EncodeSafetensors(weights));
  return dir;
}

RequestFeatures OwnedRequest::view() const {
  RequestFeatures r;
  r.context = context.view();
  for (const OwnedFeatures& c : candidates) r.candidates.push_back(c.view());
  return r;
}

namespace {

void ToProto(const OwnedFeatures& f, serving::v1::Features* out) {
  out->mutable_dense()->Add(f.dense.begin(), f.dense.end());
  out->mutable_ids()->Add(f.ids.begin(), f.ids.end());
  out->mutable_id_counts()->Add(f.id_counts.begin(), f.id_counts.end());
}

}  // namespace

serving::v1::RankRequest OwnedRequest::ToProto() const {
  serving::v1::RankRequest request;
  testing::ToProto(context, request.mutable_context());
  for (size_t i = 0; i < candidates.size(); ++i) {
    auto* c = request.add_candidates();
    c->set_id(1000 + static_cast<int64_t>(i));
    testing::ToProto(candidates[i], c->mutable_features());
  }
  return request;
}

OwnedFeatures RandomFeatures(const FeatureSchema& schema, Scope scope, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  OwnedFeatures out;
  bool all_single = true;
  for (int i : schema.scope(scope).fields) {
    const FieldSpec& f = schema.fields()[i];
    if (f.dense) {
      for (int64_t j = 0; j < f.width; ++j) {
        const float x = normal(rng);
        out.dense.push_back(rng() % 8 == 0 ? x * 1000.0f : x);  // heavy tail
      }
      continue;
    }
    const auto& c = f.config.categorical();
    const uint32_t lo = c.allow_empty() ? 0 : 1;
    const uint32_t count = lo + static_cast<uint32_t>(rng() % (MaxIds(c) - lo + 1));
    all_single = all_single && count == 1;
    out.id_counts.push_back(count);
    for (uint32_t j = 0; j < count; ++j) {
      const int64_t buckets = static_cast<int64_t>(c.num_buckets());
      int64_t id = static_cast<int64_t>(rng() % static_cast<uint64_t>(buckets));
      if (c.bucket_rule() == config::v1::MODULO && rng() % 2 == 0) {
        id = static_cast<int64_t>(rng());  // any int64, negative ones included
      }
      out.ids.push_back(id);
    }
  }
  if (all_single && rng() % 2 == 0) out.id_counts.clear();  // the implicit form
  return out;
}

OwnedRequest RandomRequest(const FeatureSchema& schema, int num_candidates, uint32_t seed) {
  OwnedRequest r;
  r.context = RandomFeatures(schema, Scope::kContext, seed);
  for (int i = 0; i < num_candidates; ++i) {
    r.candidates.push_back(RandomFeatures(schema, Scope::kCandidate, seed * 7919 + 1 + i));
  }
  return r;
}

std::vector<float> ScoreAllOrDie(const MaskNetModel& model, const RequestFeatures& request) {
  const int64_t n = static_cast<int64_t>(request.candidates.size());
  std::vector<float> scores(n * model.num_tasks());
  Workspace workspace;
  for (int64_t begin = 0; begin < n; begin += model.max_batch_size()) {
    const BatchSlice slice{&request, begin, std::min(n, begin + model.max_batch_size())};
    const absl::Status s = model.Run(absl::MakeConstSpan(&slice, 1), workspace,
                                     absl::MakeSpan(scores.data() + begin * model.num_tasks(),
                                                    slice.size() * model.num_tasks()));
    if (!s.ok()) {
      std::fprintf(stderr, "ScoreAllOrDie: %s\n", s.ToString().c_str());
      std::abort();
    }
  }
  return scores;
}

std::string FixtureRoot() { return MASKNET_FIXTURE_ROOT; }

std::vector<std::string> FixtureNames() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(FixtureRoot(), ec)) {
    if (std::filesystem::exists(entry.path() / "cases.binpb")) names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  return names;
}

double MetricValue(const std::string& metrics, const std::string& sample) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(sample + " ", 0) == 0) return std::stod(line.substr(sample.size() + 1));
  }
  return -1;
}

}  // namespace masknet::testing
