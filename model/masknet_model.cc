#include "model/masknet_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"
#include "dnnl.hpp"
#include "omp.h"
#include "model/batch_norm.h"
#include "model/bf16.h"
#include "model/dense_layer.h"
#include "model/feature_assembly.h"
#include "model/int8.h"
#include "model/layer_norm.h"
#include "model/limits.h"
#include "model/row_buckets.h"
#include "model/row_loop.h"

namespace masknet {
namespace {

// A place in the workspace arena: a buffer of `capacity` rows, `stride`
// elements apart, starting `column` elements into each row; the elements are
// float32, or bfloat16 if `bf16`.
struct Ref {
  int64_t offset = 0;  // of the buffer, in floats, from the arena start
  int64_t stride = 0;
  int64_t column = 0;
  bool bf16 = false;
  // In a merged layer's buffer of dense [rows, stride] matrices back to back
  // (rows: the batch's bucket), which matrix.
  int64_t matrix = 0;

  Ref At(int64_t col) const { return {offset, stride, column + col, bf16, matrix}; }
  Ref Matrix(int64_t m) const { return {offset, stride, column, bf16, m}; }
};

// Lays buffers out in one arena; each buffer starts 64-byte aligned.
class ArenaPlan {
 public:
  explicit ArenaPlan(int64_t rows) : rows_(rows) {}
  Ref Add(int64_t stride) { return AddFloats(rows_ * stride, stride); }
  // A bfloat16 buffer, or a float32 one unless `bf16`; `matrices` of them
  // back to back for a merged layer.
  Ref Add(int64_t stride, bool bf16, int64_t matrices = 1) {
    if (!bf16) return AddFloats(matrices * rows_ * stride, stride);
    Ref ref = AddFloats((matrices * rows_ * stride + 1) / 2, stride);
    ref.bf16 = true;
    return ref;
  }
  // A buffer of `bytes` that is not made of rows.
  Ref AddBytes(int64_t bytes) { return AddFloats((bytes + 3) / 4, 0); }
  int64_t size() const { return size_; }

 private:
  Ref AddFloats(int64_t floats, int64_t stride) {
    Ref ref{size_, stride, 0};
    size_ += (floats + 15) / 16 * 16;
    return ref;
  }

  int64_t rows_;
  int64_t size_ = 0;
};

// LAYER_NORM or FIELD_LAYER_NORM parameters; kind NORM_NONE does nothing.
struct NormParams {
  NormSpec spec;
  // One segment (LAYER_NORM) or one per field (FIELD_LAYER_NORM), and their
  // gammas and betas back to back.
  std::vector<NormSegment> segments;
  std::vector<float> gamma, beta;

  void Add(int64_t offset, int64_t width, const std::vector<float>& g, const std::vector<float>& b) {
    segments.push_back({offset, width});
    gamma.insert(gamma.end(), g.begin(), g.end());
    beta.insert(beta.end(), b.begin(), b.end());
  }

  bool active() const { return spec.kind != config::v1::NORM_NONE; }
};

NormParams TakeNorm(TensorMap& weights, const std::string& prefix, const NormSpec& spec,
                    int64_t width, const FeatureSchema& schema) {
  NormParams params{spec, {}, {}, {}};
  if (spec.kind == config::v1::LAYER_NORM) {
    params.Add(0, width, TakeValues(weights, prefix + ".weight"), TakeValues(weights, prefix + ".bias"));
  } else if (spec.kind == config::v1::FIELD_LAYER_NORM) {
    for (const FieldSpec& f : schema.fields()) {
      const std::string field_prefix = absl::StrCat(prefix, ".", f.config.name());
      params.Add(f.offset, f.width, TakeValues(weights, field_prefix + ".weight"),
                 TakeValues(weights, field_prefix + ".bias"));
    }
  }
  return params;
}

// Folds an optional batch norm into W and b, returning the served weights.
absl::Status FoldDense(const DenseLayerSpec& spec, const TensorMap& weights,
                       std::vector<float>& w, std::vector<float>& b) {
  if (!spec.batch_norm) return absl::OkStatus();
  auto bn = FoldBatchNorm(weights, spec.prefix + ".batch_norm", spec.batch_norm_affine,
                          spec.batch_norm_eps);
  if (!bn.ok()) return bn.status();
  for (int64_t o = 0; o < spec.output_size; ++o) {
    const float s = bn->scale[o];
    for (int64_t i = 0; i < spec.input_width; ++i) w[o * spec.input_width + i] *= s;
    b[o] = (b[o] - bn->center[o]) * s + bn->shift[o];
    const auto row = absl::MakeConstSpan(w).subspan(o * spec.input_width, spec.input_width);
    if (!std::isfinite(b[o]) || !std::all_of(row.begin(), row.end(), [](float x) { return std::isfinite(x); })) {
      return absl::InvalidArgumentError(absl::StrCat(
          "layer '", spec.prefix, "' output ", o, ": folding its batch norm (scale ", s,
          ") into the weights and bias overflows float32"));
    }
  }
  return absl::OkStatus();
}

float Sigmoid(float z) {
  if (z >= 0) return 1.0f / (1.0f + std::exp(-z));
  const float e = std::exp(z);
  return e / (1.0f + e);
}

// Layers that read the same input merge into one batched matmul only when
// each one's weights hold at most this many values. oneDNN 2.6 keeps a
// batched matmul's weights plain (not in its blocked layout), which costs
// more than a call per layer saves once the layers are big: measured on Zen 5
// at 64 rows, 10 x [128 x 1] merged took 0.23x the time of 10 calls and
// 10 x [256 x 128] 0.8x, but 3 x [390 x 780] 1.16x and 4 x [2776 x 1024]
// 1.6x.
constexpr int64_t kMaxMergedWeights = int64_t{1} << 16;

// One engine for every model: a stream (which a Workspace holds) can run
// only primitives of its own engine, and a workspace serves every model.
const dnnl::engine& CpuEngine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

// Sets the calling thread's OpenMP thread count for a scope. oneDNN sizes
// its primitives and their parallel regions by it.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int threads) : previous_(omp_get_max_threads()) {
    if (threads != previous_) omp_set_num_threads(threads);
  }
  ~ScopedOmpThreads() {
    if (omp_get_max_threads() != previous_) omp_set_num_threads(previous_);
  }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int previous_;
};

}  // namespace

struct MaskNetModel::Network {
  struct Step {  // one dense layer and where it reads and writes
    DenseLayer layer;
    Ref src, dst;
  };
  struct Block {
    NormParams input_norm;
    Ref net;  // masked object before the block's norm
    Ref x;    // after it (== net when there is none)
    DenseLayer aggregation;  // a = ReLU(A V' + a)
    Ref aggregation_out;
    DenseLayer projection;  // mask = P a + p, fused with the multiply by x
    DenseLayer hidden;
    Ref masked, hidden_out, y;
    std::vector<float> ln_gamma, ln_beta;
    float ln_eps;
    bool relu;
  };

  explicit Network(int64_t max_rows) : buckets(max_rows), engine(CpuEngine()) {}

  // Refs of the buffer task t's logits are in, one float per row.
  std::vector<Ref> task_logits;

  RowBuckets buckets;
  dnnl::engine engine;
  int64_t arena_floats = 0;
  FeatureAssembler assembler;
  Ref v, mask_input, instance;  // instance: V or its shared normalization
  NormParams shared_norm;
  std::vector<Block> blocks;
  // Parallel MaskNet: every block's aggregation as one merged layer (then
  // the blocks' own are empty).
  bool aggregation_merged = false;
  DenseLayer merged_aggregation;
  std::vector<Step> mlp;
  // Task heads: one stack per task, or (merged) one stack of merged layers.
  std::vector<std::vector<Step>> heads;
  std::vector<float> logit_offsets;  // log(negative_sampling_rate) or 0 per task
  // bf16: the matmuls' inputs that are not a matmul's output, rounded.
  bool bf16 = false;
  Ref aggregation_src;  // mask_input, or its bfloat16 copy
  Ref top;              // the blocks' output (concat, or the last y)
  Ref top_src;          // what the first MLP or head layer reads: top or its bfloat16 copy
  Ref scratchpad;  // the matmuls' scratch memory, shared: they run one at a time
};

struct Workspace::Buffers {
  // A float32 buffer's place.
  float* At(const Ref& r) { return arena.get() + r.offset + r.matrix * bucket_rows * r.stride + r.column; }
  // Any buffer's place.
  void* Ptr(const Ref& r) {
    return r.bf16 ? static_cast<void*>(reinterpret_cast<uint16_t*>(arena.get() + r.offset) +
                                       r.matrix * bucket_rows * r.stride + r.column)
                  : static_cast<void*>(At(r));
  }

  int64_t bucket_rows = 0;  // the running batch's bucket

  // Makes the arena hold at least `floats` floats, zeroed when new.
  absl::Status Reserve(int64_t floats) {
    if (floats <= arena_floats) return absl::OkStatus();
    const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
    float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (p == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate a ", bytes >> 20, " MiB workspace"));
    }
    std::memset(p, 0, bytes);
    arena.reset(p);
    arena_floats = floats;
    return absl::OkStatus();
  }

  dnnl::stream stream{CpuEngine()};
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> arena;
  int64_t arena_floats = 0;
  std::vector<float> context_rows;
  std::vector<std::pair<int, int64_t>> rows;  // (slice, candidate) per batch row
  std::vector<int64_t> thread_counts;         // input problems per OpenMP thread, when counted in parallel
};

Workspace::Workspace() = default;
Workspace::~Workspace() = default;

int64_t Workspace::bytes() const {
  return buffers_ == nullptr ? 0 : buffers_->arena_floats * static_cast<int64_t>(sizeof(float));
}

MaskNetModel::MaskNetModel(ModelSpec spec, const Options& options)
    : spec_(std::move(spec)), options_(options) {}

MaskNetModel::~MaskNetModel() = default;

// Builds a model's Network: lays out its buffers in one arena (ArenaPlan),
// takes its weights (each layer's source weights freed once reordered, so
// that loading holds about one copy beyond the served), makes its layers and
// decides which of them merge.
class MaskNetModel::Builder {
 public:
  Builder(const ModelSpec& spec, TensorMap& weights, const Options& options)
      : s_(spec),
        weights_(weights),
        options_(options),
        bf16_(options.precision == Precision::kBf16),
        int8_(options.precision == Precision::kInt8),
        net_(std::make_unique<Network>(options.max_batch_size)),
        arena_(net_->buckets.capacity()) {
    net_->bf16 = bf16_;
  }

  // Everything but the matmuls' shared scratchpad, which the caller adds to
  // arena() once it knows the layers.
  absl::StatusOr<std::unique_ptr<Network>> Build() {
    for (auto step : {&Builder::BuildInput, &Builder::BuildBlocks, &Builder::BuildMlp, &Builder::BuildHeads}) {
      if (absl::Status s = (this->*step)(); !s.ok()) return s;
    }
    return std::move(net_);
  }

  ArenaPlan& arena() { return arena_; }

 private:
  // The per-block buffers every block shares (blocks run one at a time).
  struct BlockBuffers {
    Ref aggregation, x, masked, hidden;
    Ref concat;      // parallel: the blocks' outputs side by side
    Ref ping, pong;  // serial: a block's output, alternating
  };

  absl::StatusOr<DenseLayer> Layer(const DenseLayer::Shape& shape, std::vector<float> w, std::vector<float> b,
                                   DenseLayer::PostOp post_op) {
    return DenseLayer::Create(net_->engine, shape, w, b, post_op, net_->buckets);
  }

  // `shape` run in int8 when the model is, reading a uint8 source if
  // `nonnegative_src` (a ReLU's output).
  DenseLayer::Shape Quantized(DenseLayer::Shape shape, bool nonnegative_src) const {
    shape.int8 = int8_;
    shape.unsigned_src = int8_ && nonnegative_src;
    return shape;
  }

  // Feature assembly, V, its shared norm, and what the masks read.
  absl::Status BuildInput() {
    const int64_t d = s_.schema.instance_width();
    auto assembler = FeatureAssembler::Create(s_, weights_);
    if (!assembler.ok()) return assembler.status();
    net_->assembler = *std::move(assembler);
    net_->v = arena_.Add(d);
    net_->shared_norm = TakeNorm(weights_, "masknet.input_norm", s_.shared_norm, d, s_.schema);
    net_->instance = net_->shared_norm.active() ? arena_.Add(d) : net_->v;
    net_->mask_input = s_.mask_reads_normalized ? net_->instance : net_->v;
    net_->aggregation_src = bf16_ ? arena_.Add(d, true) : net_->mask_input;
    return absl::OkStatus();
  }

  // Every buffer a matmul touches is dense ([rows, width] with stride ==
  // width, or a whole row of V): oneDNN's fastest (brgemm) matmul does not
  // take a strided source, so fusing the blocks' aggregation layers into one
  // wide matmul and reading column slices of it would be slower. Merged, they
  // are one batched matmul instead, writing one dense matrix per block.
  // With bf16, the matmul outputs that only feed matmuls are bfloat16.
  bool MergeAggregation() const {
    const int64_t d = s_.schema.instance_width();
    return options_.merge_layers && s_.parallel && s_.blocks.size() > 1 &&
           d * s_.blocks[0].aggregation_size <= kMaxMergedWeights &&
           std::all_of(s_.blocks.begin(), s_.blocks.end(), [&](const MaskBlockSpec& b) {
             return b.aggregation_size == s_.blocks[0].aggregation_size;
           });
  }

  // The mask blocks, then `top` (what the MLP or heads read).
  absl::Status BuildBlocks() {
    int64_t max_aggregation = 0, max_masked = 0, max_output = 0, concat_width = 0;
    for (const MaskBlockSpec& b : s_.blocks) {
      max_aggregation = std::max(max_aggregation, b.aggregation_size);
      max_masked = std::max(max_masked, b.masked_width);
      max_output = std::max(max_output, b.output_size);
      concat_width += b.output_size;
    }
    const bool merge = MergeAggregation();
    BlockBuffers buffers;
    buffers.aggregation = arena_.Add(max_aggregation, bf16_, merge ? static_cast<int64_t>(s_.blocks.size()) : 1);
    buffers.x = arena_.Add(max_masked);
    buffers.masked = arena_.Add(max_masked, bf16_);
    buffers.hidden = arena_.Add(max_output);
    if (s_.parallel) {
      buffers.concat = arena_.Add(concat_width);
    } else {
      buffers.ping = arena_.Add(max_output);
      buffers.pong = arena_.Add(max_output);
    }
    std::vector<float> merged_weights, merged_biases;
    int64_t concat_column = 0;
    Ref previous;
    for (size_t k = 0; k < s_.blocks.size(); ++k) {
      const MaskBlockSpec& b = s_.blocks[k];
      Network::Block block;
      block.net = b.masks_instance ? net_->instance : previous;
      if (s_.parallel) {
        block.y = buffers.concat.At(concat_column);
        concat_column += b.output_size;
      } else {
        block.y = Ref{(k % 2 == 0) ? buffers.ping.offset : buffers.pong.offset, b.output_size, 0};
      }
      const std::string prefix = absl::StrCat("masknet.blocks.", k);
      if (merge) {
        const std::vector<float> w = TakeValues(weights_, prefix + ".mask.aggregation.weight");
        const std::vector<float> bias = TakeValues(weights_, prefix + ".mask.aggregation.bias");
        merged_weights.insert(merged_weights.end(), w.begin(), w.end());
        merged_biases.insert(merged_biases.end(), bias.begin(), bias.end());
      }
      if (absl::Status s = BuildBlock(k, buffers, merge, block); !s.ok()) return s;
      previous = block.y;
      net_->blocks.push_back(std::move(block));
    }
    if (merge) {
      const int64_t d = s_.schema.instance_width();
      const int64_t width = s_.blocks[0].aggregation_size;
      DenseLayer::Shape shape{d, width, d, width, 0, bf16_, bf16_, options_.small_gemm,
                              static_cast<int64_t>(s_.blocks.size()), /*broadcast_src=*/true};
      auto layer = Layer(Quantized(shape, false), std::move(merged_weights), std::move(merged_biases), DenseLayer::PostOp::kRelu);
      if (!layer.ok()) return layer.status();
      net_->merged_aggregation = *std::move(layer);
      net_->aggregation_merged = true;
    }
    net_->top = s_.parallel ? buffers.concat : previous;
    top_nonnegative_ = std::all_of(s_.blocks.begin(), s_.blocks.end(), [](const MaskBlockSpec& b) { return b.relu; });
    const int64_t top_width = s_.parallel ? concat_width : s_.blocks.back().output_size;
    net_->top_src = bf16_ ? arena_.Add(top_width, true) : net_->top;
    return absl::OkStatus();
  }

  // Block k's norm and layers (its aggregation too, unless merged), into
  // `block`, whose net and y are set.
  absl::Status BuildBlock(size_t k, const BlockBuffers& buffers, bool merged_aggregation, Network::Block& block) {
    const MaskBlockSpec& b = s_.blocks[k];
    const int64_t d = s_.schema.instance_width();
    const std::string prefix = absl::StrCat("masknet.blocks.", k);
    block.input_norm = TakeNorm(weights_, prefix + ".input_norm", b.input_norm, b.masked_width, s_.schema);
    block.x = block.input_norm.active() ? Ref{buffers.x.offset, b.masked_width, 0} : block.net;
    block.aggregation_out = Ref{buffers.aggregation.offset, b.aggregation_size, 0, bf16_,
                                merged_aggregation ? static_cast<int64_t>(k) : 0};
    block.masked = Ref{buffers.masked.offset, b.masked_width, 0, bf16_};
    block.hidden_out = Ref{buffers.hidden.offset, b.output_size, 0};
    if (!merged_aggregation) {
      DenseLayer::Shape shape{d, b.aggregation_size, net_->aggregation_src.stride, b.aggregation_size, 0, bf16_,
                              bf16_, options_.small_gemm};
      auto layer = Layer(Quantized(shape, false), TakeValues(weights_, prefix + ".mask.aggregation.weight"),
                         TakeValues(weights_, prefix + ".mask.aggregation.bias"), DenseLayer::PostOp::kRelu);
      if (!layer.ok()) return layer.status();
      block.aggregation = *std::move(layer);
    }
    {
      DenseLayer::Shape shape{b.aggregation_size, b.masked_width, b.aggregation_size, block.masked.stride,
                              block.x.stride, bf16_, bf16_, options_.small_gemm};
      auto layer = Layer(Quantized(shape, /*nonnegative_src=*/true), TakeValues(weights_, prefix + ".mask.projection.weight"),
                         TakeValues(weights_, prefix + ".mask.projection.bias"), DenseLayer::PostOp::kMultiply);
      if (!layer.ok()) return layer.status();
      block.projection = *std::move(layer);
    }
    {
      DenseLayer::Shape shape{b.masked_width, b.output_size, block.masked.stride, block.hidden_out.stride, 0,
                              bf16_, /*bf16_dst=*/false, options_.small_gemm};
      auto layer = Layer(Quantized(shape, false), TakeValues(weights_, prefix + ".hidden.weight"),
                         b.hidden_bias ? TakeValues(weights_, prefix + ".hidden.bias") : std::vector<float>(),
                         DenseLayer::PostOp::kNone);
      if (!layer.ok()) return layer.status();
      block.hidden = *std::move(layer);
    }
    if (b.layer_norm) {
      block.ln_gamma = TakeValues(weights_, prefix + ".layer_norm.weight");
      block.ln_beta = TakeValues(weights_, prefix + ".layer_norm.bias");
    }
    block.ln_eps = b.layer_norm_eps;
    block.relu = b.relu;
    return absl::OkStatus();
  }

  // How a step's source quantizes in an int8 model: not at all (a logit
  // layer stays float32), or to int8, or to uint8 (a ReLU's output).
  enum class StepSource { kFloat, kSigned, kNonnegative };
  static StepSource SourceOf(bool nonnegative) { return nonnegative ? StepSource::kNonnegative : StepSource::kSigned; }

  // One layer, or (several specs) one merged layer of several of the same
  // shape, each with its own weights; batch norms are folded first.
  absl::StatusOr<Network::Step> BuildStep(const std::vector<const DenseLayerSpec*>& specs, Ref src, Ref dst,
                                          bool broadcast_src, StepSource source) {
    const DenseLayerSpec& spec = *specs[0];
    std::vector<float> w, bias;
    for (const DenseLayerSpec* one : specs) {
      std::vector<float> one_w = TakeValues(weights_, one->prefix + ".weight");
      std::vector<float> one_bias = TakeValues(weights_, one->prefix + ".bias");
      if (absl::Status s = FoldDense(*one, weights_, one_w, one_bias); !s.ok()) return s;
      w.insert(w.end(), one_w.begin(), one_w.end());
      bias.insert(bias.end(), one_bias.begin(), one_bias.end());
    }
    DenseLayer::Shape shape{spec.input_width, spec.output_size, src.stride, dst.stride, 0, bf16_, dst.bf16,
                            options_.small_gemm, static_cast<int64_t>(specs.size()), broadcast_src};
    if (source != StepSource::kFloat) shape = Quantized(shape, source == StepSource::kNonnegative);
    auto layer = Layer(shape, std::move(w), std::move(bias),
                       spec.relu ? DenseLayer::PostOp::kRelu : DenseLayer::PostOp::kNone);
    if (!layer.ok()) return layer.status();
    return Network::Step{*std::move(layer), src, dst};
  }

  // The MLP, ping-ponging between two buffers; `top` becomes its output.
  absl::Status BuildMlp() {
    int64_t widest = 1;
    for (const DenseLayerSpec& l : s_.mlp) widest = std::max(widest, l.output_size);
    const Ref stack[2] = {arena_.Add(widest, bf16_), arena_.Add(widest, bf16_)};
    head_input_ = net_->top_src;
    head_input_nonnegative_ = top_nonnegative_;
    for (size_t i = 0; i < s_.mlp.size(); ++i) {
      auto step = BuildStep({&s_.mlp[i]}, head_input_, Ref{stack[i % 2].offset, s_.mlp[i].output_size, 0, bf16_},
                            false, SourceOf(head_input_nonnegative_));
      if (!step.ok()) return step.status();
      head_input_ = step->dst;
      head_input_nonnegative_ = s_.mlp[i].relu;
      net_->mlp.push_back(*std::move(step));
    }
    return absl::OkStatus();
  }

  // How head layer i's source quantizes: its last (logit) layer stays
  // float32.
  StepSource HeadSource(const TaskSpec& task, size_t i) const {
    if (i + 1 == task.layers.size()) return StepSource::kFloat;
    return SourceOf(i == 0 ? head_input_nonnegative_ : task.layers[i - 1].relu);
  }

  // Whether every head has the first's layer shapes.
  bool HeadsShareShape() const {
    const TaskSpec& first = s_.tasks[0];
    return std::all_of(s_.tasks.begin(), s_.tasks.end(), [&](const TaskSpec& t) {
      if (t.layers.size() != first.layers.size()) return false;
      for (size_t i = 0; i < t.layers.size(); ++i) {
        if (t.layers[i].input_width != first.layers[i].input_width ||
            t.layers[i].output_size != first.layers[i].output_size || t.layers[i].relu != first.layers[i].relu) {
          return false;
        }
      }
      return true;
    });
  }

  // The task heads, reading the MLP's output (or the blocks').
  absl::Status BuildHeads() {
    const int64_t num_tasks = static_cast<int64_t>(s_.tasks.size());
    int64_t widest_head = 1;
    for (const TaskSpec& t : s_.tasks) {
      for (const DenseLayerSpec& l : t.layers) widest_head = std::max(widest_head, l.output_size);
    }
    // Logits task-major: task t's logits are `capacity` consecutive floats, so
    // each head's last matmul writes a dense [rows, 1] column (or, merged, the
    // heads' last layer writes T dense [rows, 1] matrices).
    const Ref logits = arena_.Add(1, false, num_tasks);
    for (const TaskSpec& task : s_.tasks) {
      net_->logit_offsets.push_back(task.negative_sampling_rate ? std::log(*task.negative_sampling_rate) : 0.0f);
    }
    // Heads must not overwrite their input while later heads still read it.
    // Heads of the same shape run layer by layer, each head in its own matrix
    // of the buffers, so a layer small enough merges into one matmul over all
    // heads.
    const bool merge = options_.merge_layers && num_tasks > 1 && HeadsShareShape();
    const Ref stack[2] = {arena_.Add(widest_head, bf16_, merge ? num_tasks : 1),
                          arena_.Add(widest_head, bf16_, merge ? num_tasks : 1)};
    return merge ? BuildMergedHeads(logits, stack) : BuildSeparateHeads(logits, stack);
  }

  absl::Status BuildMergedHeads(const Ref& logits, const Ref (&stack)[2]) {
    const int64_t num_tasks = static_cast<int64_t>(s_.tasks.size());
    const Ref top = head_input_;
    std::vector<Network::Step> steps;
    const size_t depth = s_.tasks[0].layers.size();
    for (size_t i = 0; i < depth; ++i) {
      const DenseLayerSpec& shape = s_.tasks[0].layers[i];
      const Ref src = i == 0 ? top : Ref{stack[(i - 1) % 2].offset, shape.input_width, 0, bf16_};
      const Ref dst = i + 1 == depth ? logits : Ref{stack[i % 2].offset, shape.output_size, 0, bf16_};
      const StepSource source = HeadSource(s_.tasks[0], i);
      if (shape.input_width * shape.output_size <= kMaxMergedWeights) {
        std::vector<const DenseLayerSpec*> specs;
        for (const TaskSpec& task : s_.tasks) specs.push_back(&task.layers[i]);
        auto step = BuildStep(specs, src, dst, /*broadcast_src=*/i == 0, source);
        if (!step.ok()) return step.status();
        steps.push_back(*std::move(step));
      } else {
        for (int64_t t = 0; t < num_tasks; ++t) {
          auto step =
              BuildStep({&s_.tasks[t].layers[i]}, i == 0 ? top : src.Matrix(t), dst.Matrix(t), false, source);
          if (!step.ok()) return step.status();
          steps.push_back(*std::move(step));
        }
      }
    }
    net_->heads.push_back(std::move(steps));
    for (int64_t t = 0; t < num_tasks; ++t) net_->task_logits.push_back(logits.Matrix(t));
    return absl::OkStatus();
  }

  absl::Status BuildSeparateHeads(const Ref& logits, const Ref (&stack)[2]) {
    const int64_t capacity = net_->buckets.capacity();
    for (size_t t = 0; t < s_.tasks.size(); ++t) {
      const TaskSpec& task = s_.tasks[t];
      std::vector<Network::Step> steps;
      Ref src = head_input_;
      const Ref task_logits{logits.offset + static_cast<int64_t>(t) * capacity, 1, 0};
      for (size_t i = 0; i < task.layers.size(); ++i) {
        const bool last = i + 1 == task.layers.size();
        const Ref dst = last ? task_logits : Ref{stack[i % 2].offset, task.layers[i].output_size, 0, bf16_};
        auto step = BuildStep({&task.layers[i]}, src, dst, false, HeadSource(task, i));
        if (!step.ok()) return step.status();
        src = dst;
        steps.push_back(*std::move(step));
      }
      net_->heads.push_back(std::move(steps));
      net_->task_logits.push_back(task_logits);
    }
    return absl::OkStatus();
  }

  const ModelSpec& s_;
  TensorMap& weights_;
  const Options& options_;
  const bool bf16_;
  const bool int8_;
  std::unique_ptr<Network> net_;
  ArenaPlan arena_;
  Ref head_input_;  // what the heads read: the MLP's output, or top_src
  // int8: whether the blocks' outputs (top) and head_input_ hold no
  // negative value (each came out of a ReLU), so they quantize to uint8.
  bool top_nonnegative_ = false;
  bool head_input_nonnegative_ = false;
};

absl::StatusOr<std::unique_ptr<MaskNetModel>> MaskNetModel::Create(ModelSpec spec, TensorMap weights,
                                                                   const Options& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  Options resolved = options;
  if (resolved.threads == 0) resolved.threads = omp_get_max_threads();
  std::string precision_note;
  if (resolved.precision == Precision::kInt8 && !CpuHasInt8()) {
    resolved.precision = CpuHasBf16() ? Precision::kBf16 : Precision::kF32;
    precision_note = absl::StrCat("int8 requested, but this CPU has no AVX512_VNNI: built ",
                                  PrecisionName(resolved.precision));
  }
  if (resolved.precision == Precision::kBf16 && !CpuHasBf16()) {
    resolved.precision = Precision::kF32;
    precision_note = "bf16 requested, but this CPU has no AVX512_BF16: built fp32";
  }
  // oneDNN fits each primitive to the thread count in force when it is built.
  const ScopedOmpThreads threads(resolved.threads);
  std::unique_ptr<MaskNetModel> model(new MaskNetModel(std::move(spec), resolved));
  model->precision_note_ = std::move(precision_note);
  Builder builder(model->spec_, weights, resolved);
  auto network = builder.Build();
  if (!network.ok()) return network.status();
  model->network_ = *std::move(network);
  int64_t scratchpad_bytes = 0;
  model->ForEachLayer([&](const DenseLayer& layer) {
    scratchpad_bytes = std::max(scratchpad_bytes, layer.scratchpad_bytes());
  });
  model->network_->scratchpad = builder.arena().AddBytes(scratchpad_bytes);
  model->network_->arena_floats = builder.arena().size();
  if (model->workspace_bytes() > options.max_workspace_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a batch of ", options.max_batch_size, " candidates needs ", model->workspace_bytes() >> 20,
        " MiB of scratch memory, more than max_workspace_bytes (", options.max_workspace_bytes >> 20,
        " MiB); lower max_batch_size"));
  }
  return model;
}

int64_t MaskNetModel::workspace_bytes() const {
  return network_->arena_floats * static_cast<int64_t>(sizeof(float));
}

void MaskNetModel::ForEachLayer(const std::function<void(const DenseLayer&)>& visit) const {
  if (network_->aggregation_merged) visit(network_->merged_aggregation);
  for (const Network::Block& b : network_->blocks) {
    if (!network_->aggregation_merged) visit(b.aggregation);
    visit(b.projection);
    visit(b.hidden);
  }
  for (const Network::Step& step : network_->mlp) visit(step.layer);
  for (const auto& head : network_->heads) {
    for (const Network::Step& step : head) visit(step.layer);
  }
}

std::map<std::string, int> MaskNetModel::MatmulImplementations() const {
  std::map<std::string, int> counts;
  ForEachLayer([&](const DenseLayer& layer) {
    for (const std::string& impl : layer.implementations()) ++counts[impl];
  });
  return counts;
}

int MaskNetModel::NumDenseLayers() const {
  int layers = 0;
  ForEachLayer([&](const DenseLayer&) { ++layers; });
  return layers;
}

namespace {

void ApplyNorm(const NormParams& norm, const float* in, int64_t in_stride, float* out,
               int64_t out_stride, int64_t rows) {
  LayerNormSegmentRows(in, in_stride, out, out_stride, rows, norm.segments, norm.gamma.data(), norm.beta.data(),
                       norm.spec.eps);
}

}  // namespace

absl::Status MaskNetModel::Run(absl::Span<const BatchSlice> slices, Workspace& workspace, absl::Span<float> scores,
                               InputCounts* counts) const {
  const Network& net = *network_;
  int64_t n = 0;
  for (const BatchSlice& slice : slices) n += slice.size();
  if (n < 1 || n > options_.max_batch_size) {
    return absl::FailedPreconditionError(absl::StrCat("a batch must hold 1 to ", options_.max_batch_size,
                                                      " candidates, got ", n));
  }
  const int num_tasks = this->num_tasks();
  if (static_cast<int64_t>(scores.size()) < n * num_tasks) {
    return absl::FailedPreconditionError(absl::StrCat("scores has room for ", scores.size(),
                                                      " values, need ", n * num_tasks));
  }
  if (workspace.buffers_ == nullptr) {
    try {
      workspace.buffers_ = std::make_unique<Workspace::Buffers>();
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("oneDNN could not create a stream: ", e.what()));
    }
  }
  Workspace::Buffers& ws = *workspace.buffers_;
  if (auto s = ws.Reserve(net.arena_floats); !s.ok()) return s;
  const ScopedOmpThreads threads(options_.threads);
  const int64_t rows = net.buckets.BucketFor(n);
  ws.bucket_rows = rows;
  if (absl::Status s = Assemble(slices, n, ws, counts); !s.ok()) return s;
  if (absl::Status s = RunMaskNet(ws); !s.ok()) return s;
  if (absl::Status s = RunDenseStacks(ws); !s.ok()) return s;
  // Probabilities; calibration p' = p*r / (1 - p + p*r) is
  // sigmoid(logit + log r).
  for (int t = 0; t < num_tasks; ++t) {
    const float* logits = ws.At(net.task_logits[t]);
    for (int64_t r = 0; r < n; ++r) scores[r * num_tasks + t] = Sigmoid(logits[r] + net.logit_offsets[t]);
  }
  return absl::OkStatus();
}

absl::Status MaskNetModel::Assemble(absl::Span<const BatchSlice> slices, int64_t n, Workspace::Buffers& ws,
                                    InputCounts* counts) const {
  const Network& net = *network_;
  const int64_t d = spec_.schema.instance_width();
  const size_t num_counts = spec_.schema.fields().size() * kInputProblems;
  if (counts != nullptr) counts->assign(num_counts, 0);
  // Context rows once per slice, then candidate rows. A request's context
  // counts once, with its first slice.
  ws.context_rows.resize(slices.size() * d);
  ws.rows.clear();
  for (size_t i = 0; i < slices.size(); ++i) {
    net.assembler.AssembleContext(slices[i].request->context, ws.context_rows.data() + i * d,
                                  counts != nullptr && slices[i].begin == 0 ? counts->data() : nullptr);
    for (int64_t c = slices[i].begin; c < slices[i].end; ++c) ws.rows.emplace_back(static_cast<int>(i), c);
  }
  float* v = ws.At(net.v);
  // Validation admits only finite values, but a finite value can still
  // overflow in its field's transform (x * scale); such a row would turn into
  // NaN, or worse into finite garbage once a ReLU swallows the NaN.
  int64_t first_bad = n;
  auto assemble = [&](int64_t r, int64_t* row_counts) {
    const auto [slice, candidate] = ws.rows[r];
    float* row = v + r * d;
    net.assembler.AssembleCandidate(ws.context_rows.data() + slice * d,
                                    slices[slice].request->candidates[candidate], row, row_counts);
    for (int64_t i = 0; i < d; ++i) {
      if (!std::isfinite(row[i])) return false;
    }
    return true;
  };
  // Small batches stay out of OpenMP altogether (model/row_loop.h).
  if (RunRowsSerially(n * d)) {
    int64_t* row_counts = counts != nullptr ? counts->data() : nullptr;
    for (int64_t r = 0; r < n && first_bad == n; ++r) {
      if (!assemble(r, row_counts)) first_bad = r;
    }
  } else {
    // Each thread counts into its own row of thread_counts.
    const int threads = omp_get_max_threads();
    if (counts != nullptr) ws.thread_counts.assign(threads * num_counts, 0);
#pragma omp parallel for schedule(static) reduction(min : first_bad)
    for (int64_t r = 0; r < n; ++r) {
      int64_t* row_counts = counts != nullptr ? ws.thread_counts.data() + omp_get_thread_num() * num_counts : nullptr;
      if (!assemble(r, row_counts)) first_bad = std::min(first_bad, r);
    }
    if (counts != nullptr) {
      for (int t = 0; t < threads; ++t) {
        for (size_t i = 0; i < num_counts; ++i) (*counts)[i] += ws.thread_counts[t * num_counts + i];
      }
    }
  }
  if (first_bad < n) {
    const auto [slice, candidate] = ws.rows[first_bad];
    const RequestFeatures& request = *slices[slice].request;
    const std::string where = absl::StrCat("candidates[", candidate, "].features");
    if (auto s = net.assembler.FindOverflow(request.context, request.candidates[candidate], where); !s.ok()) {
      return s;
    }
    // Not a transform: an input norm (of values that are all finite).
    const float* row = v + first_bad * d;
    const int64_t i = std::find_if(row, row + d, [](float x) { return !std::isfinite(x); }) - row;
    const FieldSpec& field = spec_.schema.fields()[spec_.schema.FieldAt(i)];
    return absl::InvalidArgumentError(absl::StrCat(where, ": field '", field.config.name(), "' value ",
                                                   i - field.offset, " overflows float32 in its input norm"));
  }
  // Padding rows run through the network too; keep them finite.
  std::memset(v + n * d, 0, (ws.bucket_rows - n) * d * sizeof(float));
  return absl::OkStatus();
}

absl::Status MaskNetModel::RunMaskNet(Workspace::Buffers& ws) const {
  const Network& net = *network_;
  const int64_t rows = ws.bucket_rows;
  const int64_t d = spec_.schema.instance_width();
  if (net.shared_norm.active()) {
    ApplyNorm(net.shared_norm, ws.At(net.v), d, ws.At(net.instance), d, rows);
  }
  dnnl::stream& stream = ws.stream;
  void* scratchpad = ws.At(net.scratchpad);
  if (net.bf16) {
    ConvertRowsToBf16(ws.At(net.mask_input), net.mask_input.stride,
                      static_cast<uint16_t*>(ws.Ptr(net.aggregation_src)), net.aggregation_src.stride, rows, d);
  }
  if (net.aggregation_merged) {
    if (auto s = net.merged_aggregation.Execute(stream, rows, ws.Ptr(net.aggregation_src),
                                                ws.Ptr(net.blocks[0].aggregation_out), nullptr, scratchpad);
        !s.ok()) {
      return s;
    }
  }
  for (const Network::Block& b : net.blocks) {
    if (b.input_norm.active()) {
      ApplyNorm(b.input_norm, ws.At(b.net), b.net.stride, ws.At(b.x), b.x.stride, rows);
    }
    if (!net.aggregation_merged) {
      if (auto s = b.aggregation.Execute(stream, rows, ws.Ptr(net.aggregation_src), ws.Ptr(b.aggregation_out),
                                         nullptr, scratchpad);
          !s.ok()) {
        return s;
      }
    }
    if (auto s = b.projection.Execute(stream, rows, ws.Ptr(b.aggregation_out), ws.Ptr(b.masked), ws.At(b.x),
                                      scratchpad);
        !s.ok()) {
      return s;
    }
    if (auto s = b.hidden.Execute(stream, rows, ws.Ptr(b.masked), ws.At(b.hidden_out), nullptr, scratchpad);
        !s.ok()) {
      return s;
    }
    stream.wait();
    const int64_t o = b.hidden.shape().output_width;
    if (!b.ln_gamma.empty()) {
      LayerNormRows(ws.At(b.hidden_out), b.hidden_out.stride, ws.At(b.y), b.y.stride, rows, o, b.ln_gamma.data(),
                    b.ln_beta.data(), b.ln_eps, b.relu);
    } else {  // no_layer_norm: y = act(h)
      for (int64_t r = 0; r < rows; ++r) {
        const float* h = ws.At(b.hidden_out) + r * b.hidden_out.stride;
        float* y = ws.At(b.y) + r * b.y.stride;
        for (int64_t j = 0; j < o; ++j) y[j] = b.relu ? std::max(h[j], 0.0f) : h[j];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status MaskNetModel::RunDenseStacks(Workspace::Buffers& ws) const {
  const Network& net = *network_;
  const int64_t rows = ws.bucket_rows;
  dnnl::stream& stream = ws.stream;
  void* scratchpad = ws.At(net.scratchpad);
  if (net.bf16) {
    ConvertRowsToBf16(ws.At(net.top), net.top.stride, static_cast<uint16_t*>(ws.Ptr(net.top_src)),
                      net.top_src.stride, rows, net.top_src.stride);
  }
  auto execute = [&](const Network::Step& step) {
    return step.layer.Execute(stream, rows, ws.Ptr(step.src), ws.Ptr(step.dst), nullptr, scratchpad);
  };
  for (const Network::Step& step : net.mlp) {
    if (absl::Status s = execute(step); !s.ok()) return s;
  }
  for (const auto& head : net.heads) {
    for (const Network::Step& step : head) {
      if (absl::Status s = execute(step); !s.ok()) return s;
    }
  }
  stream.wait();
  return absl::OkStatus();
}

const char* PrecisionName(Precision precision) {
  switch (precision) {
    case Precision::kBf16: return "bf16";
    case Precision::kInt8: return "int8";
    case Precision::kF32: break;
  }
  return "fp32";
}

bool AbslParseFlag(absl::string_view text, Precision* precision, std::string* error) {
  for (const Precision p : {Precision::kF32, Precision::kBf16, Precision::kInt8}) {
    if (text == PrecisionName(p)) {
      *precision = p;
      return true;
    }
  }
  *error = absl::StrCat("must be fp32, bf16 or int8, got '", text, "'");
  return false;
}

std::string AbslUnparseFlag(Precision precision) { return PrecisionName(precision); }

absl::Status MaskNetModel::Options::Validate() const {
  if (max_batch_size < 1 || max_batch_size > limits::kMaxBatchSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_batch_size must be in [1, ", limits::kMaxBatchSize, "], got ", max_batch_size));
  }
  if (max_workspace_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_workspace_bytes must be positive, got ", max_workspace_bytes));
  }
  if (threads < 0 || threads > limits::kMaxThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("threads must be in [0, ", limits::kMaxThreads, "] (0: OpenMP's default), got ", threads));
  }
  return absl::OkStatus();
}

absl::Status MaskNetModel::WarmUp() const {
  auto zeros = [&](Scope scope, std::vector<float>& dense, std::vector<int64_t>& ids) {
    const ScopeLayout& layout = spec_.schema.scope(scope);
    dense.assign(layout.dense_width, 0.0f);
    ids.assign(layout.categorical_fields.size(), 0);  // one id each: valid for every bucket rule
    return FeatureValues{dense, ids, {}};
  };
  std::vector<float> context_dense, candidate_dense;
  std::vector<int64_t> context_ids, candidate_ids;
  RequestFeatures request;
  request.context = zeros(Scope::kContext, context_dense, context_ids);
  request.candidates.assign(options_.max_batch_size, zeros(Scope::kCandidate, candidate_dense, candidate_ids));
  Workspace workspace;
  std::vector<float> scores(options_.max_batch_size * num_tasks());
  for (const int64_t n : {int64_t{1}, options_.max_batch_size}) {
    const BatchSlice slice{&request, 0, n};
    if (auto s = Run(absl::MakeConstSpan(&slice, 1), workspace, absl::MakeSpan(scores)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace masknet
