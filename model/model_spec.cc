#include "model/model_spec.h"

#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "model/limits.h"

namespace masknet {
namespace {

using config::v1::Activation;
using config::v1::DenseLayer;
using config::v1::ModelConfig;
using config::v1::Norm;

absl::Status Invalid(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

absl::Status CheckSize(absl::string_view where, int64_t value) {
  if (value < 1 || value > limits::kMaxWidth) {
    return Invalid(where, absl::StrCat("must be in [1, ", limits::kMaxWidth, "], got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckEps(absl::string_view where, float eps) {
  if (!(eps > 0 && eps <= 1)) {
    return Invalid(where, absl::StrCat("must be in (0, 1] (PyTorch's default is 1e-5), got ", eps));
  }
  return absl::OkStatus();
}

// Resolves a Norm applied to an object of `width` values. `over_instance`:
// the object is V, so FIELD_LAYER_NORM is meaningful.
absl::StatusOr<NormSpec> ResolveNorm(absl::string_view where, Norm kind, float eps,
                                     bool over_instance, const FeatureSchema& schema) {
  NormSpec spec{kind, eps};
  switch (kind) {
    case config::v1::NORM_NONE:
      return spec;
    case config::v1::LAYER_NORM:
      break;
    case config::v1::FIELD_LAYER_NORM:
      if (!over_instance) {
        return Invalid(where, "FIELD_LAYER_NORM needs V as its input, but this block's input is "
                              "the previous block's output");
      }
      for (const FieldSpec& f : schema.fields()) {
        if (f.width < 2) {
          return Invalid(where, absl::StrCat("FIELD_LAYER_NORM over field '", f.config.name(),
                                             "' of width 1 is degenerate (its output is the bias)"));
        }
      }
      break;
    default:
      return Invalid(where, absl::StrCat("unknown norm ", kind));
  }
  if (auto s = CheckEps(absl::StrCat(where, "_eps"), eps); !s.ok()) return s;
  return spec;
}

absl::StatusOr<bool> ResolveActivation(absl::string_view where, Activation a) {
  switch (a) {
    case config::v1::ACTIVATION_NONE: return false;
    case config::v1::RELU: return true;
    default: return Invalid(where, "must be ACTIVATION_NONE or RELU");
  }
}

absl::StatusOr<DenseLayerSpec> ResolveDense(absl::string_view where, std::string prefix,
                                            const DenseLayer& layer, int64_t input_width) {
  DenseLayerSpec spec;
  spec.prefix = std::move(prefix);
  spec.input_width = input_width;
  spec.output_size = layer.output_size();
  if (auto s = CheckSize(absl::StrCat(where, ".output_size"), spec.output_size); !s.ok()) return s;
  auto relu = ResolveActivation(absl::StrCat(where, ".activation"), layer.activation());
  if (!relu.ok()) return relu.status();
  spec.relu = *relu;
  if (layer.has_batch_norm()) {
    spec.batch_norm = true;
    spec.batch_norm_affine = layer.batch_norm().affine();
    spec.batch_norm_eps = layer.batch_norm().eps();
    if (auto s = CheckEps(absl::StrCat(where, ".batch_norm.eps"), spec.batch_norm_eps); !s.ok()) {
      return s;
    }
  }
  return spec;
}

absl::Status ResolveInputNorms(const ModelConfig& config, ModelSpec& spec) {
  absl::flat_hash_set<std::string> names;
  std::vector<bool> normalized(spec.schema.fields().size(), false);
  for (int i = 0; i < config.input_norms_size(); ++i) {
    const auto& n = config.input_norms(i);
    const std::string where = absl::StrCat("input_norms[", i, "] ('", n.name(), "')");
    if (!IsValidName(n.name())) {
      return Invalid(where, kNameRule);
    }
    if (!names.insert(n.name()).second) return Invalid(where, "duplicate input norm name");
    if (n.fields().empty()) return Invalid(where, "lists no fields");
    InputNormSpec norm;
    norm.name = n.name();
    norm.context_only = true;
    int previous = -1;
    for (const std::string& name : n.fields()) {
      const int f = spec.schema.FindField(name);
      if (f < 0) return Invalid(where, absl::StrCat("unknown field '", name, "'"));
      if (normalized[f]) {
        return Invalid(where, absl::StrCat("field '", name, "' is already in an input norm"));
      }
      if (previous >= 0 && f != previous + 1) {
        return Invalid(where, absl::StrCat("field '", name, "' does not follow '",
                                           spec.schema.fields()[previous].config.name(),
                                           "' in schema order; an input norm covers adjacent "
                                           "fields listed in schema order"));
      }
      normalized[f] = true;
      previous = f;
      const FieldSpec& field = spec.schema.fields()[f];
      if (norm.width == 0) norm.offset = field.offset;
      norm.width += field.width;
      norm.context_only = norm.context_only && field.scope == Scope::kContext;
    }
    if (norm.width < 2) {
      return Invalid(where, "a LayerNorm over one value is degenerate (its output is the bias)");
    }
    norm.eps = n.eps();
    if (auto s = CheckEps(absl::StrCat(where, ".eps"), norm.eps); !s.ok()) return s;
    spec.input_norms.push_back(std::move(norm));
  }
  return absl::OkStatus();
}

absl::Status ResolveMaskNet(const ModelConfig& config, ModelSpec& spec) {
  if (!config.has_masknet()) return Invalid("masknet", "missing");
  const auto& m = config.masknet();
  switch (m.mode()) {
    case config::v1::SERIAL: spec.parallel = false; break;
    case config::v1::PARALLEL: spec.parallel = true; break;
    default: return Invalid("masknet.mode", "must be SERIAL or PARALLEL");
  }
  const int64_t d = spec.schema.instance_width();
  auto shared = ResolveNorm("masknet.input_norm", m.input_norm(), m.input_norm_eps(),
                            /*over_instance=*/true, spec.schema);
  if (!shared.ok()) return shared.status();
  spec.shared_norm = *shared;
  switch (m.mask_input()) {
    case config::v1::MASK_INPUT_RAW: spec.mask_reads_normalized = false; break;
    case config::v1::MASK_INPUT_NORMALIZED:
      if (spec.shared_norm.kind == config::v1::NORM_NONE) {
        return Invalid("masknet.mask_input",
                       "MASK_INPUT_NORMALIZED needs masknet.input_norm, which is NORM_NONE");
      }
      spec.mask_reads_normalized = true;
      break;
    default: return Invalid("masknet.mask_input", absl::StrCat("unknown value ", m.mask_input()));
  }
  if (m.blocks().empty() || m.blocks_size() > limits::kMaxBlocks) {
    return Invalid("masknet.blocks",
                   absl::StrCat("must have 1 to ", limits::kMaxBlocks, " blocks, has ", m.blocks_size()));
  }
  int64_t previous_output = 0;
  for (int k = 0; k < m.blocks_size(); ++k) {
    const auto& b = m.blocks(k);
    const std::string where = absl::StrCat("masknet.blocks[", k, "]");
    MaskBlockSpec block;
    block.masks_instance = spec.parallel || k == 0;
    block.masked_width = block.masks_instance ? d : previous_output;
    auto norm = ResolveNorm(absl::StrCat(where, ".input_norm"), b.input_norm(), b.input_norm_eps(),
                            block.masks_instance, spec.schema);
    if (!norm.ok()) return norm.status();
    block.input_norm = *norm;
    switch (b.aggregation_case()) {
      case config::v1::MaskBlock::kAggregationSize:
        block.aggregation_size = b.aggregation_size();
        break;
      case config::v1::MaskBlock::kReduction: {
        const auto& r = b.reduction();
        int64_t base;
        switch (r.base()) {
          case config::v1::MASK_INPUT_WIDTH: base = d; break;
          case config::v1::MASKED_INPUT_WIDTH: base = block.masked_width; break;
          default:
            return Invalid(absl::StrCat(where, ".reduction.base"),
                           "must be MASK_INPUT_WIDTH or MASKED_INPUT_WIDTH (implementations "
                           "differ; the exporter should say which)");
        }
        const double product = static_cast<double>(r.factor()) * static_cast<double>(base);
        if (!(r.factor() > 0) || !(product <= static_cast<double>(limits::kMaxWidth)) ||
            std::fabs(product - std::round(product)) > 1e-3) {
          return Invalid(absl::StrCat(where, ".reduction.factor"),
                         absl::StrCat("factor ", r.factor(), " x base width ", base, " = ", product,
                                      " is not a whole number in [1, ", limits::kMaxWidth, "]"));
        }
        block.aggregation_size = static_cast<int64_t>(std::round(product));
        break;
      }
      default:
        return Invalid(where, "set aggregation_size or reduction");
    }
    if (auto s = CheckSize(absl::StrCat(where, ".aggregation_size"), block.aggregation_size); !s.ok()) {
      return s;
    }
    block.output_size = b.output_size();
    if (auto s = CheckSize(absl::StrCat(where, ".output_size"), block.output_size); !s.ok()) return s;
    block.hidden_bias = b.hidden_bias();
    auto relu = ResolveActivation(absl::StrCat(where, ".activation"), b.activation());
    if (!relu.ok()) return relu.status();
    block.relu = *relu;
    block.layer_norm = !b.no_layer_norm();
    block.layer_norm_eps = b.layer_norm_eps();
    if (block.layer_norm) {
      if (auto s = CheckEps(absl::StrCat(where, ".layer_norm_eps"), block.layer_norm_eps); !s.ok()) {
        return s;
      }
    }
    previous_output = block.output_size;
    spec.masknet_output_width = spec.parallel ? spec.masknet_output_width + block.output_size
                                              : block.output_size;
    spec.blocks.push_back(block);
  }
  if (spec.masknet_output_width > limits::kMaxWidth) {
    return Invalid("masknet.blocks", absl::StrCat("the concatenated output is wider than ",
                                                  limits::kMaxWidth));
  }
  return absl::OkStatus();
}

absl::Status ResolveTop(const ModelConfig& config, ModelSpec& spec) {
  if (config.mlp_size() > limits::kMaxLayers) {
    return Invalid("mlp", absl::StrCat("at most ", limits::kMaxLayers, " layers"));
  }
  int64_t width = spec.masknet_output_width;
  for (int i = 0; i < config.mlp_size(); ++i) {
    auto layer = ResolveDense(absl::StrCat("mlp[", i, "]"), absl::StrCat("mlp.", i), config.mlp(i), width);
    if (!layer.ok()) return layer.status();
    width = layer->output_size;
    spec.mlp.push_back(*std::move(layer));
  }
  if (config.tasks().empty() || config.tasks_size() > limits::kMaxTasks) {
    return Invalid("tasks", absl::StrCat("must have 1 to ", limits::kMaxTasks, " task heads, has ",
                                         config.tasks_size()));
  }
  absl::flat_hash_set<std::string> names;
  for (int t = 0; t < config.tasks_size(); ++t) {
    const auto& head = config.tasks(t);
    const std::string where = absl::StrCat("tasks[", t, "] ('", head.name(), "')");
    if (!IsValidName(head.name())) {
      return Invalid(where, kNameRule);
    }
    if (!names.insert(head.name()).second) return Invalid(where, "duplicate task name");
    if (head.layers().empty() || head.layers_size() > limits::kMaxLayers) {
      return Invalid(where, absl::StrCat("must have 1 to ", limits::kMaxLayers, " layers"));
    }
    TaskSpec task;
    task.name = head.name();
    int64_t in = width;
    for (int i = 0; i < head.layers_size(); ++i) {
      auto layer = ResolveDense(absl::StrCat(where, ".layers[", i, "]"),
                                absl::StrCat("tasks.", head.name(), ".", i), head.layers(i), in);
      if (!layer.ok()) return layer.status();
      in = layer->output_size;
      task.layers.push_back(*std::move(layer));
    }
    const DenseLayerSpec& last = task.layers.back();
    if (last.output_size != 1 || last.relu) {
      return Invalid(absl::StrCat(where, ".layers[", head.layers_size() - 1, "]"),
                     "the last layer must be the logit: output_size 1 and ACTIVATION_NONE");
    }
    if (head.has_negative_sampling_rate()) {
      const float r = head.negative_sampling_rate();
      if (!(r > 0 && std::isfinite(r))) {
        return Invalid(absl::StrCat(where, ".negative_sampling_rate"),
                       absl::StrCat("must be positive and finite, got ", r));
      }
      task.negative_sampling_rate = r;
    }
    spec.tasks.push_back(std::move(task));
  }
  return absl::OkStatus();
}

void AddNormTensors(const std::string& prefix, const NormSpec& norm, int64_t width,
                    const FeatureSchema& schema, std::vector<TensorSpec>& out) {
  if (norm.kind == config::v1::LAYER_NORM) {
    out.push_back({prefix + ".weight", {width}});
    out.push_back({prefix + ".bias", {width}});
  } else if (norm.kind == config::v1::FIELD_LAYER_NORM) {
    for (const FieldSpec& f : schema.fields()) {
      out.push_back({absl::StrCat(prefix, ".", f.config.name(), ".weight"), {f.width}});
      out.push_back({absl::StrCat(prefix, ".", f.config.name(), ".bias"), {f.width}});
    }
  }
}

void AddBatchNormTensors(const std::string& prefix, bool affine, int64_t width,
                         std::vector<TensorSpec>& out) {
  out.push_back({prefix + ".running_mean", {width}});
  out.push_back({prefix + ".running_var", {width}});
  if (affine) {
    out.push_back({prefix + ".weight", {width}});
    out.push_back({prefix + ".bias", {width}});
  }
}

void AddDenseTensors(const DenseLayerSpec& layer, std::vector<TensorSpec>& out) {
  out.push_back({layer.prefix + ".weight", {layer.output_size, layer.input_width}});
  out.push_back({layer.prefix + ".bias", {layer.output_size}});
  if (layer.batch_norm) {
    AddBatchNormTensors(layer.prefix + ".batch_norm", layer.batch_norm_affine, layer.output_size, out);
  }
}

}  // namespace

absl::StatusOr<ModelSpec> ModelSpec::FromConfig(const ModelConfig& config) {
  ModelSpec spec;
  auto schema = FeatureSchema::Create(config);
  if (!schema.ok()) return schema.status();
  spec.schema = *std::move(schema);
  if (auto s = ResolveInputNorms(config, spec); !s.ok()) return s;
  if (auto s = ResolveMaskNet(config, spec); !s.ok()) return s;
  if (auto s = ResolveTop(config, spec); !s.ok()) return s;
  return spec;
}

std::vector<TensorSpec> ModelSpec::ExpectedTensors() const {
  std::vector<TensorSpec> out;
  for (const FieldSpec& f : schema.fields()) {
    const std::string prefix = absl::StrCat("fields.", f.config.name());
    if (!f.dense) {
      const auto& c = f.config.categorical();
      out.push_back({prefix + ".embedding",
                     {static_cast<int64_t>(c.num_buckets()), static_cast<int64_t>(c.embedding_dim())}});
      continue;
    }
    const auto& d = f.config.dense();
    if (d.has_affine()) {
      out.push_back({prefix + ".scale", {f.values}});
      out.push_back({prefix + ".shift", {f.values}});
    } else if (d.has_batch_norm()) {
      AddBatchNormTensors(prefix + ".batch_norm", d.batch_norm().affine(), f.values, out);
    }
    if (d.embedding_dim() != 0) out.push_back({prefix + ".embedding", {f.width}});
  }
  for (const InputNormSpec& n : input_norms) {
    out.push_back({absl::StrCat("input_norms.", n.name, ".weight"), {n.width}});
    out.push_back({absl::StrCat("input_norms.", n.name, ".bias"), {n.width}});
  }
  const int64_t d = schema.instance_width();
  AddNormTensors("masknet.input_norm", shared_norm, d, schema, out);
  for (size_t k = 0; k < blocks.size(); ++k) {
    const MaskBlockSpec& b = blocks[k];
    const std::string prefix = absl::StrCat("masknet.blocks.", k);
    AddNormTensors(prefix + ".input_norm", b.input_norm, b.masked_width, schema, out);
    out.push_back({prefix + ".mask.aggregation.weight", {b.aggregation_size, d}});
    out.push_back({prefix + ".mask.aggregation.bias", {b.aggregation_size}});
    out.push_back({prefix + ".mask.projection.weight", {b.masked_width, b.aggregation_size}});
    out.push_back({prefix + ".mask.projection.bias", {b.masked_width}});
    out.push_back({prefix + ".hidden.weight", {b.output_size, b.masked_width}});
    if (b.hidden_bias) out.push_back({prefix + ".hidden.bias", {b.output_size}});
    if (b.layer_norm) {
      out.push_back({prefix + ".layer_norm.weight", {b.output_size}});
      out.push_back({prefix + ".layer_norm.bias", {b.output_size}});
    }
  }
  for (const DenseLayerSpec& layer : mlp) AddDenseTensors(layer, out);
  for (const TaskSpec& task : tasks) {
    for (const DenseLayerSpec& layer : task.layers) AddDenseTensors(layer, out);
  }
  return out;
}

int64_t ModelSpec::FlopsPerCandidate() const {
  const int64_t d = schema.instance_width();
  int64_t macs = 0;
  for (const MaskBlockSpec& b : blocks) {
    macs += d * b.aggregation_size + b.aggregation_size * b.masked_width +
            b.masked_width * b.output_size;
  }
  for (const DenseLayerSpec& layer : mlp) macs += layer.input_width * layer.output_size;
  for (const TaskSpec& task : tasks) {
    for (const DenseLayerSpec& layer : task.layers) macs += layer.input_width * layer.output_size;
  }
  return 2 * macs;
}

int64_t ModelSpec::ParameterCount() const {
  int64_t n = 0;
  for (const TensorSpec& t : ExpectedTensors()) {
    int64_t size = 1;
    for (int64_t dim : t.shape) size *= dim;
    n += size;
  }
  return n;
}

}  // namespace masknet
