#ifndef MASKNET_MODEL_MASKNET_MODEL_H_
#define MASKNET_MODEL_MASKNET_MODEL_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "model/feature_schema.h"
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

// The MaskNet forward pass in fp32 on oneDNN: feature assembly, MaskNet
// (serial or parallel), MLP, task heads, sigmoid and calibration.
//
// Built once per model version; matmul primitives exist for every row bucket
// up to max_batch_size (see RowBuckets) and weights are reordered once. Run
// is const and thread-safe: each calling thread passes its own Workspace.
class MaskNetModel {
 public:
  struct Options {
    // Most candidates one Run may score.
    int64_t max_batch_size = 256;
    // Largest scratch memory one Workspace may need (it grows with
    // max_batch_size and the layers' widths).
    int64_t max_workspace_bytes = int64_t{2} << 30;
  };

  // Scratch memory and a oneDNN stream for one thread's calls to Run. Not
  // thread-safe; reusable across calls of the model that made it.
  class Workspace {
   public:
    ~Workspace();
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;

   private:
    friend class MaskNetModel;
    struct Buffers;
    explicit Workspace(std::unique_ptr<Buffers> buffers);
    std::unique_ptr<Buffers> buffers_;
  };

  // Builds the network and one workspace. `weights` must hold exactly
  // spec.ExpectedTensors() with their shapes, all finite (the loader checks
  // this). Errors: INVALID_ARGUMENT for weights that cannot be served (e.g. a
  // negative batch-norm variance) or bad options, RESOURCE_EXHAUSTED when a
  // workspace would exceed options.max_workspace_bytes or cannot be
  // allocated, INTERNAL if oneDNN fails.
  static absl::StatusOr<std::unique_ptr<MaskNetModel>> Create(ModelSpec spec, TensorMap weights,
                                                              const Options& options);
  ~MaskNetModel();

  MaskNetModel(const MaskNetModel&) = delete;
  MaskNetModel& operator=(const MaskNetModel&) = delete;

  // A new workspace for Run. Errors: RESOURCE_EXHAUSTED if memory runs out,
  // INTERNAL if oneDNN fails.
  absl::StatusOr<std::unique_ptr<Workspace>> NewWorkspace() const;

  // Bytes of scratch memory one workspace holds.
  int64_t workspace_bytes() const;

  // Scores the candidates of `slices`, in order, into `scores`: row-major
  // [total candidates, num_tasks()] probabilities.
  // REQUIRES: every slice's values pass spec().schema.Validate; the slices
  // hold 1 to max_batch_size() candidates; scores has room for them all.
  // Errors: INVALID_ARGUMENT "candidates[i]: field 'f' ..." (or "context:
  // ...") when a value overflows float32 in its field's transform;
  // FAILED_PRECONDITION when the REQUIRES on sizes is broken; INTERNAL if
  // oneDNN fails.
  absl::Status Run(absl::Span<const BatchSlice> slices, Workspace& workspace,
                   absl::Span<float> scores) const;

  // As above, with a workspace borrowed from the model's own pool (one per
  // concurrent caller, kept for reuse). Errors also as NewWorkspace.
  absl::Status Run(absl::Span<const BatchSlice> slices, absl::Span<float> scores) const
      ABSL_LOCKS_EXCLUDED(pool_mu_);

  // How many matmul primitives (layers x row buckets) use each oneDNN
  // implementation, e.g. {"brg:avx512_core": 120}. A "ref" entry means a
  // slow reference kernel.
  std::map<std::string, int> MatmulImplementations() const;

  const ModelSpec& spec() const { return spec_; }
  int num_tasks() const { return static_cast<int>(spec_.tasks.size()); }
  int64_t max_batch_size() const { return options_.max_batch_size; }

 private:
  struct Network;

  MaskNetModel(ModelSpec spec, const Options& options);

  ModelSpec spec_;
  Options options_;
  std::unique_ptr<Network> network_;
  mutable absl::Mutex pool_mu_;
  mutable std::vector<std::unique_ptr<Workspace>> pool_ ABSL_GUARDED_BY(pool_mu_);
};

}  // namespace masknet

#endif  // MASKNET_MODEL_MASKNET_MODEL_H_
