#include "model/feature_assembly.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <immintrin.h>

#include "absl/strings/str_cat.h"
#include "model/batch_norm.h"
#include "model/layer_norm.h"

// glibc's vector log1pf for AVX-512 (libmvec, glibc >= 2.35; at most 4 ulp
// from the exact result, as the scalar log1pf is at most 1).
extern "C" __attribute__((target("avx512f"))) __m512 _ZGVeN16v_log1pf(__m512);

namespace masknet {
namespace {

// x = sign(x) * log1p(|x|) for n finite values, in place.
void SignedLog1pScalar(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::copysign(std::log1p(std::fabs(x[i])), x[i]);
}

__attribute__((target("avx512f"))) void SignedLog1pAvx512(float* x, int64_t n) {
  const __m512i sign_bit = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? __mmask16{0xffff} : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512i v = _mm512_castps_si512(_mm512_maskz_loadu_ps(mask, x + i));
    const __m512 magnitude = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(0x7fffffff)));
    // log1p(|x|) >= 0: its sign bit is clear; give it x's.
    const __m512i log = _mm512_castps_si512(_ZGVeN16v_log1pf(magnitude));
    _mm512_mask_storeu_ps(x + i, mask, _mm512_castsi512_ps(_mm512_or_si512(log, _mm512_and_si512(sign_bit, v))));
  }
}

using SignedLog1pFn = void (*)(float*, int64_t);

// Wide fields (twitter-recap's 2117 continuous features) spend most of
// their assembly here; 16 lanes at a time where the CPU has AVX-512.
SignedLog1pFn FindSignedLog1p() {
  return __builtin_cpu_supports("avx512f") ? SignedLog1pAvx512 : SignedLog1pScalar;
}

const SignedLog1pFn kSignedLog1p = FindSignedLog1p();

}  // namespace

const char* InputProblemName(InputProblem problem) {
  switch (problem) {
    case InputProblem::kNonFiniteReplaced:
      return "non_finite_replaced";
    case InputProblem::kClamped:
      return "clamped";
    case InputProblem::kOutOfVocabulary:
      return "out_of_vocabulary";
    case InputProblem::kEmptyIds:
      return "empty_ids";
  }
  return "unknown";
}

bool CanHaveProblem(const FieldSpec& f, InputProblem problem) {
  switch (problem) {
    case InputProblem::kNonFiniteReplaced:
      return f.dense && f.config.dense().non_finite() == config::v1::REPLACE_WITH_ZERO;
    case InputProblem::kClamped:
      return f.dense && (f.config.dense().has_clamp_min() || f.config.dense().has_clamp_max());
    case InputProblem::kOutOfVocabulary:
      return !f.dense && f.config.categorical().bucket_rule() == config::v1::MODULO;
    case InputProblem::kEmptyIds:
      return !f.dense && f.config.categorical().allow_empty();
  }
  return false;
}

absl::StatusOr<FeatureAssembler> FeatureAssembler::Create(const ModelSpec& spec,
                                                          TensorMap& weights) {
  FeatureAssembler assembler;
  assembler.schema_ = &spec.schema;
  for (const FieldSpec& f : spec.schema.fields()) {
    Field field{&f, {}, {}};
    const std::string prefix = absl::StrCat("fields.", f.config.name());
    if (!f.dense) {
      field.embedding = TakeValues(weights, prefix + ".embedding");
    } else if (f.config.dense().has_affine()) {
      field.affine.scale = TakeValues(weights, prefix + ".scale");
      field.affine.shift = TakeValues(weights, prefix + ".shift");
      field.affine.center.assign(field.affine.scale.size(), 0.0f);
    } else if (f.config.dense().has_batch_norm()) {
      const auto& bn = f.config.dense().batch_norm();
      auto folded = FoldBatchNorm(weights, prefix + ".batch_norm", bn.affine(), bn.eps());
      if (!folded.ok()) return folded.status();
      field.affine = *std::move(folded);
    }
    if (f.dense && f.config.dense().embedding_dim() != 0) {
      field.embedding = TakeValues(weights, prefix + ".embedding");
    }
    assembler.fields_.push_back(std::move(field));

    if (f.scope == Scope::kContext) {
      auto& runs = assembler.context_runs_;
      if (!runs.empty() && runs.back().offset + runs.back().width == f.offset) {
        runs.back().width += f.width;
      } else {
        runs.push_back({f.offset, f.width});
      }
    }
  }
  for (const InputNormSpec& n : spec.input_norms) {
    const std::string prefix = absl::StrCat("input_norms.", n.name);
    assembler.norms_.push_back({&n, TakeValues(weights, prefix + ".weight"), TakeValues(weights, prefix + ".bias")});
  }
  return assembler;
}

void FeatureAssembler::AssembleScope(Scope scope, const FeatureValues& values, float* row, int64_t* counts) const {
  if (counts != nullptr) {
    AssembleScope<true>(scope, values, row, counts);
  } else {
    AssembleScope<false>(scope, values, row, nullptr);
  }
}

template <bool kCount>
void FeatureAssembler::AssembleScope(Scope scope, const FeatureValues& values, float* row, int64_t* counts) const {
  const ScopeLayout& layout = schema_->scope(scope);
  size_t id_pos = 0;
  for (int index : layout.fields) {
    const Field& field = fields_[index];
    const FieldSpec& f = *field.spec;
    float* out = row + f.offset;
    if (f.dense) {
      const auto& d = f.config.dense();
      const float* in = values.dense.data() + f.scope_index;
      const bool replace = d.non_finite() == config::v1::REPLACE_WITH_ZERO;
      const bool log = d.transform() == config::v1::SIGNED_LOG1P;
      const bool affine = !field.affine.scale.empty();
      const float lo = d.has_clamp_min() ? d.clamp_min() : -INFINITY;
      const float hi = d.has_clamp_max() ? d.clamp_max() : INFINITY;
      // An embedded scalar is processed in `scalar`, then spread over out.
      const bool embedded = !field.embedding.empty();
      float scalar;
      float* x = embedded ? &scalar : out;
      int64_t replaced = 0, clamped = 0;
      for (int64_t j = 0; j < f.values; ++j) {
        const bool finite = std::isfinite(in[j]);
        if constexpr (kCount) replaced += !finite;
        x[j] = replace && !finite ? 0.0f : in[j];
      }
      if (log) kSignedLog1p(x, f.values);
      for (int64_t j = 0; j < f.values; ++j) {
        float y = x[j];
        if (affine) y = (y - field.affine.center[j]) * field.affine.scale[j] + field.affine.shift[j];
        if constexpr (kCount) clamped += (y < lo) | (y > hi);
        x[j] = std::clamp(y, lo, hi);
      }
      if constexpr (kCount) {
        if ((replaced | clamped) != 0) {  // rarely: no store in the common case
          counts[index * kInputProblems + static_cast<int>(InputProblem::kNonFiniteReplaced)] += replaced;
          counts[index * kInputProblems + static_cast<int>(InputProblem::kClamped)] += clamped;
        }
      }
      if (embedded) {
        for (int64_t k = 0; k < f.width; ++k) out[k] = scalar * field.embedding[k];
      }
      continue;
    }
    const auto& c = f.config.categorical();
    const uint32_t count =
        values.id_counts.empty() ? 1 : values.id_counts[static_cast<size_t>(f.scope_index)];
    std::fill(out, out + f.width, 0.0f);
    const int64_t buckets = static_cast<int64_t>(c.num_buckets());
    int64_t outside = 0;
    for (uint32_t j = 0; j < count; ++j) {
      int64_t bucket = values.ids[id_pos + j];
      if (c.bucket_rule() == config::v1::MODULO) {
        if constexpr (kCount) outside += bucket < 0 || bucket >= buckets;
        bucket %= buckets;
        if (bucket < 0) bucket += buckets;
      }
      const float* e = field.embedding.data() + bucket * f.width;
      for (int64_t k = 0; k < f.width; ++k) out[k] += e[k];
    }
    if (c.pooling() == config::v1::MEAN && count > 1) {
      const float inv = 1.0f / static_cast<float>(count);
      for (int64_t k = 0; k < f.width; ++k) out[k] *= inv;
    }
    if constexpr (kCount) {
      if (outside != 0 || count == 0) {
        counts[index * kInputProblems + static_cast<int>(InputProblem::kOutOfVocabulary)] += outside;
        counts[index * kInputProblems + static_cast<int>(InputProblem::kEmptyIds)] += count == 0;
      }
    }
    id_pos += count;
  }
}

void FeatureAssembler::ApplyNorms(bool context_only, float* row) const {
  for (const Norm& n : norms_) {
    if (n.spec->context_only != context_only) continue;
    float* x = row + n.spec->offset;
    LayerNormRows(x, 0, x, 0, 1, n.spec->width, n.gamma.data(), n.beta.data(), n.spec->eps,
                  /*relu=*/false);
  }
}

void FeatureAssembler::AssembleContext(const FeatureValues& context, float* context_row, int64_t* counts) const {
  AssembleScope(Scope::kContext, context, context_row, counts);
  ApplyNorms(/*context_only=*/true, context_row);
}

void FeatureAssembler::AssembleCandidate(const float* context_row, const FeatureValues& candidate, float* row,
                                         int64_t* counts) const {
  for (const FieldRun& s : context_runs_) {
    std::memcpy(row + s.offset, context_row + s.offset, s.width * sizeof(float));
  }
  AssembleScope(Scope::kCandidate, candidate, row, counts);
  ApplyNorms(/*context_only=*/false, row);
}

absl::Status FeatureAssembler::FindOverflow(const FeatureValues& context, const FeatureValues& candidate,
                                            const std::string& candidate_where) const {
  std::vector<float> row(schema_->instance_width());
  for (const Scope scope : {Scope::kContext, Scope::kCandidate}) {
    const FeatureValues& values = scope == Scope::kContext ? context : candidate;
    AssembleScope(scope, values, row.data(), /*counts=*/nullptr);
    for (int index : schema_->scope(scope).fields) {
      const FieldSpec& f = schema_->fields()[index];
      for (int64_t j = 0; j < f.width; ++j) {
        if (std::isfinite(row[f.offset + j])) continue;
        const std::string where = scope == Scope::kContext ? "context" : candidate_where;
        if (f.dense && f.values != f.width) {  // an embedded scalar: its one value times a vector
          return absl::InvalidArgumentError(absl::StrCat(where, ": field '", f.config.name(), "' value 0 (",
                                                         values.dense[f.scope_index],
                                                         ") overflows float32 in its transform or its embedding"));
        }
        const std::string input =
            f.dense ? absl::StrCat("(", values.dense[f.scope_index + j], ")") : "(a sum of embeddings)";
        return absl::InvalidArgumentError(absl::StrCat(where, ": field '", f.config.name(), "' value ", j, " ", input,
                                                       " overflows float32 in the field's transform"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace masknet
