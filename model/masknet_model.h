#ifndef MASKNET_MODEL_MASKNET_MODEL_H_
#define MASKNET_MODEL_MASKNET_MODEL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/feature_assembly.h"
#include "model/feature_schema.h"
#include "model/limits.h"
#include "model/model_spec.h"
#include "model/tensor.h"

namespace masknet {

// One request's feature values: the context once, then each candidate.
// Views; the caller owns the data.
struct RequestFeatures {
  FeatureValues context;
  std::vector<FeatureValues> candidates;
};

// Candidates [begin, end) of one request, as part of a batch.
struct BatchSlice {
  const RequestFeatures* request = nullptr;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// Scratch memory and a oneDNN stream for one thread's forward passes. A
// workspace belongs to a thread, not to a model: it grows to what the
// largest model run with it needs, so a thread serving several models (or
// versions) holds one. Not thread-safe: one thread uses it at a time.
class Workspace {
 public:
  // Empty; Run allocates what a model needs on first use.
  Workspace();
  ~Workspace();
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Bytes of scratch memory held now.
  int64_t bytes() const;

 private:
  friend class MaskNetModel;
  struct Buffers;
  std::unique_ptr<Buffers> buffers_;
};

class DenseLayer;

// The matmuls' arithmetic (MaskNetModel::Options::precision).
enum class Precision { kF32, kBf16, kInt8 };

// "fp32", "bf16" or "int8".
const char* PrecisionName(Precision precision);
// Precision as a flag's value (absl's flag marshalling finds them): "fp32",
// "bf16" or "int8"; anything else is refused, naming the choices.
bool AbslParseFlag(absl::string_view text, Precision* precision, std::string* error);
std::string AbslUnparseFlag(Precision precision);

// The MaskNet forward pass on oneDNN, in fp32 or bf16 (Options::precision):
// feature assembly, MaskNet (serial or parallel), MLP, task heads, sigmoid
// and calibration.
//
// Built once per model version; matmul primitives exist for every row bucket
// up to max_batch_size (see RowBuckets) and weights are reordered once.
// Immutable after Create: Run is const and may be called from many threads
// at once, each with its own Workspace.
class MaskNetModel {
 public:
  struct Options {
    // Most candidates one Run may score.
    int64_t max_batch_size = 256;
    // Largest scratch memory a Workspace may need for this model (it grows
    // with max_batch_size and the layers' widths).
    int64_t max_workspace_bytes = int64_t{2} << 30;
    // OpenMP threads one Run uses; the primitives are built for this count.
    // 0: OpenMP's default (OMP_NUM_THREADS, else every core), read when the
    // model is created.
    int threads = 0;
    // The matmuls' arithmetic. kBf16: weights rounded to bfloat16 once, at
    // load, and every matmul's input rounded to bfloat16 before it runs;
    // products accumulate in float32, and the bias, mask-multiply,
    // LayerNorms and sigmoid stay float32. Twice the arithmetic rate and
    // half the weight bytes of kF32 on CPUs with AVX512_BF16; where a CPU
    // lacks it the model is built kF32 (see precision_note()).
    // kInt8 (model/int8.h): every matmul but the task heads' last (logit)
    // layers runs in 8-bit integers: weights with one scale per output,
    // made at load; each candidate's inputs to a layer quantized on their
    // own, so a score never depends on the other candidates of its batch;
    // int32 accumulation. LayerNorms, the sigmoid and the logit layers stay
    // float32. Needs AVX512_VNNI; without it the model is built kBf16 (or
    // kF32 without AVX512_BF16).
    Precision precision = Precision::kF32;
    // Batches of 1 to kSmallGemmMaxRows candidates run their matmuls on this
    // project's AVX-512 kernels (model/small_gemm.h), which read the weights
    // faster than oneDNN does at so few rows; false keeps every matmul on
    // oneDNN (for comparison). Ignored on CPUs without AVX-512.
    bool small_gemm = true;
    // Layers that read the same input run as one batched matmul: a parallel
    // MaskNet's aggregation layers (all read V), and task heads of the same
    // shape (layer by layer). Same scores either way, to float32 rounding;
    // false runs every layer on its own (for comparison).
    bool merge_layers = true;

    // INVALID_ARGUMENT naming the first option out of its bounds. Create
    // checks it; a server checks it before it loads anything.
    absl::Status Validate() const;
  };

  // Builds the network. `weights` must hold exactly spec.ExpectedTensors()
  // with their shapes, all finite (the loader checks this). Errors:
  // INVALID_ARGUMENT for weights that cannot be served (e.g. a negative
  // batch-norm variance) or bad options, RESOURCE_EXHAUSTED when a workspace
  // would exceed options.max_workspace_bytes, INTERNAL if oneDNN fails.
  static absl::StatusOr<std::unique_ptr<MaskNetModel>> Create(ModelSpec spec, TensorMap weights,
                                                              const Options& options);
  ~MaskNetModel();

  MaskNetModel(const MaskNetModel&) = delete;
  MaskNetModel& operator=(const MaskNetModel&) = delete;

  // Bytes of scratch memory a workspace needs to run this model.
  int64_t workspace_bytes() const;

  // Scores the candidates of `slices`, in order, into `scores`: row-major
  // [total candidates, num_tasks()] probabilities. Grows `workspace` to
  // workspace_bytes() if it is smaller. Runs options.threads OpenMP threads
  // (and leaves the calling thread's OpenMP setting as it found it).
  // REQUIRES: every slice's values pass spec().schema.Validate.
  // Errors: INVALID_ARGUMENT "candidates[i]: field 'f' ..." (or "context:
  // ...") when a value overflows float32 in its field's transform;
  // FAILED_PRECONDITION when the slices hold no candidates or more than
  // max_batch_size(), or `scores` is too small; RESOURCE_EXHAUSTED when the
  // workspace cannot grow; INTERNAL if oneDNN fails.
  // With `counts`, it is set to the batch's input problems (InputCounts of
  // spec().schema): every candidate's values, and each request's context
  // values once (with its slice that begins at candidate 0).
  absl::Status Run(absl::Span<const BatchSlice> slices, Workspace& workspace, absl::Span<float> scores,
                   InputCounts* counts = nullptr) const;

  // Runs the network on one candidate and on max_batch_size() candidates of
  // zero-valued features, so that a model that cannot run fails before it
  // serves, and its first calls find its memory touched. Errors as Run.
  absl::Status WarmUp() const;

  // How many matmul primitives (layers x row buckets) use each oneDNN
  // implementation, e.g. {"brg:avx512_core": 120}. A "ref" entry means a
  // slow reference kernel.
  std::map<std::string, int> MatmulImplementations() const;
  // The dense layers one forward pass runs, merged layers counted once.
  int NumDenseLayers() const;

  const ModelSpec& spec() const { return spec_; }
  // The precision the model was built with, which may differ from the one
  // requested; then precision_note() says why.
  Precision precision() const { return options_.precision; }
  const std::string& precision_note() const { return precision_note_; }
  int num_tasks() const { return static_cast<int>(spec_.tasks.size()); }
  int64_t max_batch_size() const { return options_.max_batch_size; }

 private:
  struct Network;
  class Builder;

  MaskNetModel(ModelSpec spec, const Options& options);
  void ForEachLayer(const std::function<void(const DenseLayer&)>& visit) const;
  // Run's stages, on a workspace set up for the batch's row bucket:
  // feature assembly into V (naming the first candidate whose values
  // overflow, and zeroing the padding rows), the mask blocks, then the MLP
  // and the task heads (their logits in the workspace).
  absl::Status Assemble(absl::Span<const BatchSlice> slices, int64_t n, Workspace::Buffers& ws,
                        InputCounts* counts) const;
  absl::Status RunMaskNet(Workspace::Buffers& ws) const;
  absl::Status RunDenseStacks(Workspace::Buffers& ws) const;

  ModelSpec spec_;
  Options options_;
  std::string precision_note_;
  std::unique_ptr<Network> network_;
};

}  // namespace masknet

#endif  // MASKNET_MODEL_MASKNET_MODEL_H_
