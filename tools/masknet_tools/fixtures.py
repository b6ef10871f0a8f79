"""Parity fixtures: random-weight models, requests, and the reference's answers.

For each fixture <name> (a reference config), with a seed derived from the name:

    tests/fixtures/<name>/models/<name>/1/model_config.pbtxt
    tests/fixtures/<name>/models/<name>/1/weights.safetensors
    tests/fixtures/<name>/cases.binpb   a masknet.testing.v1.ParityFixture

The expected scores are the reference model's in float64, computed from the
weights as stored (after BF16 rounding where used) and the config as written,
then rounded to float32. Weights are random but scaled so that scores spread
across (0, 1): a fixture whose scores saturate would let a wrong server pass.
"""

import math
import os
import zlib

import numpy as np
import torch
from torch import nn

from masknet_tools import config
from masknet_tools import export
from masknet_tools import features
from masknet_tools import reference
from masknet_tools import reference_configs
from masknet_tools.protos import config_pb2
from masknet_tools.protos import fixture_pb2
from masknet_tools.protos import ranker_pb2

FIXTURE_NAMES = tuple(
    name for name in reference_configs.NAMES if name != "twitter-recap")
BF16_FIXTURES = ("paper-criteo-parallel", "paper-criteo-serial", "twitter-recap-small")
VERSION = 1
CASES_FILE = "cases.binpb"

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# Head logits are rescaled to this mean and spread, after calibration.
_LOGIT_MEAN, _LOGIT_STD = -0.3, 1.2


def fixture_seed(name):
    """The seed of fixture `name`: stable across runs and machines."""
    return zlib.crc32(name.encode("utf-8"))


def many_candidates(name):
    """Candidates in a fixture's large case (fewer for the wide Twitter one)."""
    return 40 if name.startswith("twitter-recap") else 300


# --- Weights -----------------------------------------------------------------


def _fill(tensor, values):
    with torch.no_grad():
        tensor.copy_(torch.as_tensor(values))


def randomize_weights(model, rng):
    """Draws every tensor of `model` (a MaskNetReference) from `rng`.

    Dense weights xavier-uniform; biases U(-0.1, 0.1); LN and BN scales 1 +
    U(-0.2, 0.2), shifts U(-0.1, 0.1); BN running_mean N(0, 0.3), running_var
    U(0.5, 2); affine scale U(0.5, 1.5), shift U(-0.3, 0.3); embeddings
    (tables and embedded scalars' vectors) N(0, 0.5).
    """
    for module in model.modules():
        if isinstance(module, nn.Linear):
            fan_out, fan_in = module.weight.shape
            bound = math.sqrt(6 / (fan_in + fan_out))
            _fill(module.weight, rng.uniform(-bound, bound,
                                             module.weight.shape))
            if module.bias is not None:
                _fill(module.bias, rng.uniform(-0.1, 0.1, module.bias.shape))
        elif isinstance(module, reference.LayerNorm):
            _fill(module.weight,
                  1 + rng.uniform(-0.2, 0.2, module.weight.shape))
            _fill(module.bias, rng.uniform(-0.1, 0.1, module.bias.shape))
        elif isinstance(module, reference.BatchNorm):
            _fill(module.running_mean,
                  rng.normal(0, 0.3, module.running_mean.shape))
            _fill(module.running_var,
                  rng.uniform(0.5, 2, module.running_var.shape))
            if module.affine:
                _fill(module.weight,
                      1 + rng.uniform(-0.2, 0.2, module.weight.shape))
                _fill(module.bias, rng.uniform(-0.1, 0.1, module.bias.shape))
        elif isinstance(module, reference.DenseFieldEncoder):
            if module.normalization == "affine":
                _fill(module.scale, rng.uniform(0.5, 1.5, module.scale.shape))
                _fill(module.shift, rng.uniform(-0.3, 0.3, module.shift.shape))
            if module.embedded:
                _fill(module.embedding,
                      rng.normal(0, 0.5, module.embedding.shape))
        elif isinstance(module, reference.CategoricalFieldEncoder):
            _fill(module.embedding, rng.normal(0, 0.5, module.embedding.shape))


def rescale_heads(model, batch):
    """Rescales the heads' last layers so that scores on `batch` spread out.

    Each head's calibrated logits get mean -0.3 and standard deviation 1.2 on
    `batch`: a task with negative_sampling_rate r gets its logits shifted by
    -log(r), as calibration adds log(r) to the logit.
    """
    with torch.no_grad():
        logits = model.logits(batch)
        for i, (name, rate) in enumerate(
                zip(model.task_names, model.negative_sampling_rates)):
            last = model.tasks[name][-1]
            column = logits[:, i]
            factor = _LOGIT_STD / column.std().item()
            target_mean = _LOGIT_MEAN - math.log(rate or 1.0)
            last.weight.mul_(factor)
            last.bias.copy_(target_mean - (column.mean() - last.bias) * factor)


# --- Requests ----------------------------------------------------------------


def _random_ids(field, count, rng, at_edges):
    """`count` ids of a categorical field: in range (IDENTITY) or any (MODULO).

    MODULO ids mix small, negative, huge and extreme values; `at_edges` gives
    only the extremes int64 min, int64 max, -1 and 0.
    """
    categorical = field.categorical
    if categorical.bucket_rule == config_pb2.IDENTITY:
        return [int(i) for i in rng.integers(0, categorical.num_buckets, count)]
    extremes = [_INT64_MIN, _INT64_MAX, -1, 0]
    if at_edges:
        return [extremes[i % len(extremes)] for i in range(count)]
    buckets = int(categorical.num_buckets)
    ranges = [(0, 3 * buckets), (-3 * buckets, 0), (1 << 40, _INT64_MAX),
              (_INT64_MIN, -(1 << 40))]
    ids = []
    for _ in range(count):
        kind = rng.choice(len(ranges) + 1, p=[0.4, 0.25, 0.15, 0.15, 0.05])
        if kind == len(ranges):
            ids.append(int(rng.choice(extremes)))
        else:
            ids.append(int(rng.integers(*ranges[kind])))
    return ids


def _random_dense(field, rng, at_edges):
    """`width` values of a dense field.

    Heavy-tailed for SIGNED_LOG1P, wide where clamped, with NaN and ±Inf where
    they are replaced.
    """
    dense = field.dense
    if dense.transform == config_pb2.SIGNED_LOG1P:
        signs = rng.choice([-1, 1], dense.width)
        values = signs * np.expm1(np.abs(rng.normal(0, 2.5, dense.width)))
    else:
        clamped = dense.HasField("clamp_min") or dense.HasField("clamp_max")
        values = rng.normal(0, 3.0 if clamped else 1.5, dense.width)
    if at_edges:
        values = values * 20
    if dense.non_finite == config_pb2.REPLACE_WITH_ZERO:
        replace = rng.random(dense.width) < (0.5 if at_edges else 0.06)
        non_finite = rng.choice([np.nan, np.inf, -np.inf], dense.width)
        values = np.where(replace, non_finite, values)
    return values.tolist()


def random_scope_values(model_config, scope, rng, at_edges=False):
    """Random values of every field of `scope`, as features.make_features takes.

    With `at_edges`: empty id lists where allowed (else the most ids, all
    extreme), values 20x wider (beyond the clamps), more NaN and ±Inf.
    """
    values = {}
    for field in config.scope_fields(model_config, scope):
        if field.WhichOneof("kind") == "dense":
            values[field.name] = _random_dense(field, rng, at_edges)
            continue
        most = config.max_ids(field)
        least = 0 if field.categorical.allow_empty else 1
        if at_edges:
            count = least if least == 0 else most
        else:
            count = int(rng.integers(least, most + 1))
        values[field.name] = _random_ids(field, count, rng, at_edges)
    return values


def random_request(model_config,
                   model_name,
                   num_candidates,
                   rng,
                   context_at_edges=False):
    """A RankRequest with random features and distinct random candidate ids."""
    request = ranker_pb2.RankRequest(model_name=model_name,
                                     model_version=VERSION)
    context = random_scope_values(model_config, config_pb2.CONTEXT, rng,
                                  context_at_edges)
    request.context.CopyFrom(
        features.make_features(model_config,
                               config_pb2.CONTEXT,
                               context,
                               explicit_counts=bool(rng.integers(2))))
    ids = []
    while len(ids) < num_candidates:
        candidate_id = int(rng.integers(_INT64_MIN, _INT64_MAX))
        if candidate_id not in ids:
            ids.append(candidate_id)
    for i, candidate_id in enumerate(ids):
        candidate = request.candidates.add(id=candidate_id)
        values = random_scope_values(model_config, config_pb2.CANDIDATE, rng)
        candidate.features.CopyFrom(
            features.make_features(model_config,
                                   config_pb2.CANDIDATE,
                                   values,
                                   explicit_counts=i % 2 == 0))
    return request


# --- Checks ------------------------------------------------------------------


def check_not_saturated(scores, description):
    """Requires spread scores: per task std > 0.02 and 90% in (0.01, 0.99)."""
    for task in range(scores.shape[1]):
        column = scores[:, task]
        inside = ((column > 0.01) & (column < 0.99)).double().mean().item()
        spread = column.std().item()
        if spread <= 0.02 or inside < 0.9:
            raise AssertionError(f"{description}: task {task} saturates (std "
                                 f"{spread:.4f}, {inside:.0%} in (0.01, 0.99))")


def check_coverage(model, batches):
    """Requires the cases to exercise each field's edge options at least once.

    NaN, +Inf and -Inf where REPLACE_WITH_ZERO; zero ids where allowed;
    negative ids for MODULO; both clamp bounds reached by candidate fields (a
    context field has only one value per case).
    """
    problems = []
    for field in model.model_config.fields:
        name = field.name
        if field.WhichOneof("kind") == "dense":
            dense = field.dense
            values = torch.cat([batch.dense[name] for batch in batches])
            has_all_non_finite = (values.isnan().any() and
                                  (values == math.inf).any() and
                                  (values == -math.inf).any())
            if (dense.non_finite == config_pb2.REPLACE_WITH_ZERO and
                    not has_all_non_finite):
                problems.append(f"{name}: misses NaN, +Inf or -Inf")
            encoded = model.fields[name].processed(values)
            for bound in ("clamp_min", "clamp_max"):
                if (field.scope == config_pb2.CANDIDATE and
                        dense.HasField(bound) and
                        not (encoded == getattr(dense, bound)).any()):
                    problems.append(f"{name}: {bound} never reached")
        else:
            counts = torch.cat([batch.counts[name] for batch in batches])
            ids = torch.cat([batch.ids[name].flatten() for batch in batches])
            if field.categorical.allow_empty and not (counts == 0).any():
                problems.append(f"{name}: never empty")
            if (field.categorical.bucket_rule == config_pb2.MODULO and
                    not (ids < 0).any()):
                problems.append(f"{name}: no negative id")
    if problems:
        raise AssertionError("cases miss edge inputs:\n  " +
                             "\n  ".join(problems))


# --- Writing -----------------------------------------------------------------


def expected_response(model, request):
    """The RankResponse of the float64 reference `model`, scores in float32.

    Returns:
      (response, batch, scores): the response, the request's FieldBatch and
      the float64 scores [n, tasks].
    """
    batch = features.batch_from_rank_request(model.model_config, request)
    with torch.no_grad():
        scores = model.probabilities_from_logits(model.logits(batch))
    response = ranker_pb2.RankResponse(model_name=request.model_name,
                                       model_version=request.model_version,
                                       tasks=model.task_names)
    for candidate, row in zip(request.candidates,
                              scores.numpy().astype(np.float32)):
        response.candidates.add(id=candidate.id, scores=row.tolist())
    return response, batch, scores


def write_fixture(name, fixtures_root):
    """Writes fixture `name` under `fixtures_root`; returns its directory.

    Raises:
      AssertionError: the scores saturate or the cases miss an edge input.
    """
    model_config = reference_configs.get(name)
    rng = np.random.default_rng(fixture_seed(name))
    model = reference.MaskNetReference(model_config).double()
    randomize_weights(model, rng)
    sample = random_request(model_config, name, 200, rng)
    rescale_heads(model, features.batch_from_rank_request(model_config, sample))

    fixture_dir = os.path.join(fixtures_root, name)
    version_dir = export.export_model(model_config,
                                      model.state_dict(),
                                      os.path.join(fixture_dir, "models"),
                                      name,
                                      VERSION,
                                      bf16=name in BF16_FIXTURES,
                                      overwrite=True)
    stored = export.load_reference(version_dir, torch.float64)

    plan = [
        ("one candidate", 1, False),
        ("seven candidates; the context at its edges (no ids where allowed, "
         "extreme ids, values beyond the clamps, NaN and infinities where "
         "replaced)", 7, True),
        (f"{many_candidates(name)} candidates", many_candidates(name), False),
        ("no candidates: an empty answer", 0, False)
    ]
    fixture, batches = fixture_pb2.ParityFixture(), []
    for description, count, context_at_edges in plan:
        request = random_request(model_config, name, count, rng,
                                 context_at_edges)
        response, batch, scores = expected_response(stored, request)
        if count >= 7:
            check_not_saturated(scores, f"{name}: {description}")
        fixture.cases.add(description=description,
                          request=request,
                          expected=response)
        batches.append(batch)
    check_coverage(stored, batches)
    with open(os.path.join(fixture_dir, CASES_FILE), "wb") as f:
        f.write(fixture.SerializeToString(deterministic=True))
    return fixture_dir


def read_fixture(fixture_dir):
    """The ParityFixture of a fixture directory."""
    with open(os.path.join(fixture_dir, CASES_FILE), "rb") as f:
        return fixture_pb2.ParityFixture.FromString(f.read())
