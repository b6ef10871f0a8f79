"""Imports Twitter's the-algorithm-ml heavy ranker (MultiTaskRankingModel).

The architecture comes from the RecapConfig YAML alone, read as
the-algorithm-ml reads it (projects/home/recap/config.py, model/config.py,
data/config.py): from it `expected_tensors` lists every tensor the
checkpoint must hold, with its shape, and the checkpoint is compared with
that list in one place before anything is imported. What the YAML does not
give -- the number of continuous features without a mask file, the TwHIN
embeddings' widths, the binary features -- comes from the tensors, and every
tensor that has such a width must agree on it.

MultiTaskRankingModel, under its tensor names (projects/home/recap/model/
entrypoint.py, feature_transform.py, mask_net.py, mlp.py,
numeric_calibration.py):

  _preprocessor (DoubleNormLog) on the continuous features:
    _before_concat_layers: InputNonFinite (NaN, +-inf -> 0), Log1pAbs
      (sign(x) log1p|x|), [2: BatchNorm1d .layer.*, eps 1e-5, affine or
      not], Clamp: .<2 or 3>.min_value, .max_value (0-d buffers)
    then concatenated with the binary features; [layer_norm.layer.*: one
      LayerNorm over continuous + binary, eps from layer_norm_config,
      affine when center (= scale)]
  _user_embedding_layer_norm, _user_eng_embedding_layer_norm,
  _author_embedding_layer_norm: a LayerNorm (eps 1e-5) on each TwHIN vector
    named in train_data.seg_dense_schema.renamed_features
  V = [features, user, user_eng, author] -> _backbone (MaskNet, share_all):
    _mask_blocks.<k>: [_input_layer_norm], _mask_layer.0 (Linear V ->
      aggregation), ReLU, _mask_layer.2 (Linear -> the block's input width),
      _hidden_layer (Linear), _layer_norm (eps 1e-5); no activation
    parallel: every block reads V, outputs concatenated; serial: block k
      reads block k-1's output, every mask reads V
    [_dense_layers.layers.<i>: an Mlp]
  per task t (safe name: "." -> "__"): _towers.<t>.layers.<i> (Mlp) ->
    logit, [_affine_maps.<t>: Linear(1, 1)], sigmoid, _calibrators.<t>.ratio
    r: p r / (1 - p + p r).

An Mlp is, per layer_sizes entry but the last: Linear, [BatchNorm1d],
ReLU, [Dropout]; then the last Linear [and ReLU if final_layer_activation].

The viewer's embeddings are request context; everything else is per
candidate (Twitter's continuous and binary features mix viewer and tweet
features in one tensor, after train_data.preprocess.truncate_and_slice:
requests send them sliced). The affine map is folded into the tower's last
layer in float64.
"""

import math
import os
import re

import numpy as np
import torch

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools.checkpoints import Derived, ExpectedTensors
from masknet_tools.protos import config_pb2

EPS = checkpoints.TORCH_DEFAULT_EPS
# The eps that replaces a LayerNorm eps of 0 (the format needs eps > 0).
ZERO_EPS_REPLACEMENT = 1e-12

_BLOCK_MODULES = {
    "_input_layer_norm": "input_norm",
    "_mask_layer.0": "mask.aggregation",
    "_mask_layer.2": "mask.projection",
    "_hidden_layer": "hidden",
    "_layer_norm": "layer_norm",
}
# Twitter's embedding inputs, in V's order: (renamed feature, scope).
_EMBEDDINGS = (
    ("user_embedding", config_pb2.CONTEXT),
    ("user_eng_embedding", config_pb2.CONTEXT),
    ("author_embedding", config_pb2.CANDIDATE),
)
_PREPROCESSOR = "_preprocessor._before_concat_layers."
_LAYER_NORM = "_preprocessor.layer_norm.layer."


class RecapImportError(checkpoints.CheckpointError):
    """The checkpoint or its config cannot be served; the message says why."""


def map_masknet(state_dict, prefix=""):
    """Renames the tensors of a Twitter `MaskNet` found under `prefix` to ours
    (masknet.blocks.<k>.*, mlp.<i>.*); every other key passes through.

    For export_model.py's --twitter_masknet_prefix: a MaskNet alone, whose
    config the caller writes. Raises ValueError for a MaskNet key that is
    not one of Twitter's.
    """
    block_pattern = re.compile(
        re.escape(prefix) + r"_mask_blocks\.(\d+)\.(.+)\.(weight|bias)")
    mlp_prefix = prefix + "_dense_layers.layers."
    mapped = checkpoints.map_dense_stack(state_dict, mlp_prefix, "mlp.")
    for key, value in state_dict.items():
        if key.startswith(mlp_prefix):
            continue
        if not key.startswith(prefix + "_mask_blocks."):
            mapped[key] = value
            continue
        match = block_pattern.fullmatch(key)
        if not match or match[2] not in _BLOCK_MODULES:
            raise ValueError(f"unrecognised MaskNet tensor {key!r}")
        mapped[f"masknet.blocks.{match[1]}.{_BLOCK_MODULES[match[2]]}."
               f"{match[3]}"] = value
    return mapped


# --- Reading the YAML as the-algorithm-ml's pydantic classes do -----------

def _section(value, where, known, required=()):
    """A YAML mapping (None: empty) with only `known` keys and every one of
    `required`."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RecapImportError(f"{where}: expected a mapping, got "
                               f"{type(value).__name__}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise RecapImportError(
            f"{where}.{unknown[0]}: not an option the-algorithm-ml's config "
            f"has here (it has: {', '.join(sorted(known))})")
    for key in required:
        if value.get(key) is None:
            raise RecapImportError(f"{where}.{key} is missing")
    return value


def _bool(section, key, where, default):
    value = section.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise RecapImportError(f"{where}.{key}: {value!r} is not true or false")
    return value


def _number(section, key, where, default=None, positive=False):
    value = section.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or (positive and value <= 0):
        raise RecapImportError(f"{where}.{key}: {value!r} is not a "
                               f"{'positive ' if positive else ''}number")
    return value


def _positive_int(section, key, where, default=None):
    value = section.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RecapImportError(f"{where}.{key}: {value!r} is not a positive "
                               "integer")
    return value


class _Mlp:
    """An MlpConfig: layer sizes, batch norm (affine or not) or None,
    dropout (its module index counts), final_layer_activation."""

    def __init__(self, value, where):
        section = _section(value, where, {"layer_sizes", "batch_norm",
                                          "dropout", "final_layer_activation"},
                           required=("layer_sizes",))
        sizes = section["layer_sizes"]
        if not isinstance(sizes, list) or not sizes or any(
                isinstance(s, bool) or not isinstance(s, int) or s <= 0
                for s in sizes):
            raise RecapImportError(f"{where}.layer_sizes: {sizes!r} is not a "
                                   "list of positive integers")
        self.sizes = sizes
        self.batch_norm = None
        if section.get("batch_norm") is not None:
            bn = _section(section["batch_norm"], where + ".batch_norm",
                          {"affine", "momentum"})
            _number(bn, "momentum", where + ".batch_norm", positive=True)
            self.batch_norm = _bool(bn, "affine", where + ".batch_norm", True)
        self.dropout = section.get("dropout") is not None
        if self.dropout:
            dropout = _section(section["dropout"], where + ".dropout", {"rate"})
            _number(dropout, "rate", where + ".dropout", positive=True)
        self.final_activation = _bool(section, "final_layer_activation", where,
                                      False)
        if len(sizes) == 1 and not self.final_activation:
            raise RecapImportError(
                f"{where}.layer_sizes: a single layer without "
                "final_layer_activation is not a model the-algorithm-ml can "
                "run (its Mlp.forward fails: shared_layer is never set)")

    def expect(self, spec, prefix, inputs):
        """Adds the Mlp's tensors under `prefix` (ending in "layers.")."""
        index = 0
        for size in self.sizes[:-1]:
            spec.add_linear(f"{prefix}{index}.", inputs, size)
            index += 1
            if self.batch_norm is not None:
                spec.add_batch_norm(f"{prefix}{index}.", size, self.batch_norm)
                index += 1
            index += 1 + self.dropout  # ReLU, [Dropout]
            inputs = size
        spec.add_linear(f"{prefix}{index}.", inputs, self.sizes[-1])

    def take(self, state, prefix, target):
        """Our tensors (`target`<i>.*) and DenseLayers of the Mlp's tensors."""
        weights, layers, index = {}, [], 0
        for j, size in enumerate(self.sizes):
            last = j == len(self.sizes) - 1
            for tensor in ("weight", "bias"):
                weights[f"{target}{j}.{tensor}"] = state[f"{prefix}{index}.{tensor}"]
            index += 1
            batch_norm = None
            if not last and self.batch_norm is not None:
                for tensor in (("weight", "bias") if self.batch_norm else ()) + (
                        "running_mean", "running_var"):
                    weights[f"{target}{j}.batch_norm.{tensor}"] = state[
                        f"{prefix}{index}.{tensor}"]
                batch_norm = config.batch_norm(EPS, self.batch_norm)
                index += 1
            if not last:
                index += 1 + self.dropout
            activation = config_pb2.RELU if not last or self.final_activation \
                else config_pb2.ACTIVATION_NONE
            layers.append(config.dense_layer(size, activation, batch_norm))
        return weights, layers


class _Recap:
    """What the YAML says the model is."""

    def __init__(self, yaml_config, config_dir, notes):
        if not isinstance(yaml_config, dict) or not isinstance(
                yaml_config.get("model"), dict) or not isinstance(
                    yaml_config.get("train_data"), dict):
            raise RecapImportError(
                "--config must be the whole RecapConfig YAML the model was "
                "trained with (its model: and train_data: sections): "
                "train_data says which inputs the model reads "
                "(seg_dense_schema.renamed_features, preprocess."
                "truncate_and_slice)")
        model = _section(yaml_config["model"], "model", {
            "tasks", "large_embeddings", "small_embeddings",
            "position_debias_config", "featurization_config",
            "multi_task_type", "backbone", "stratifiers"
        })
        for unsupported in ("large_embeddings", "small_embeddings",
                            "position_debias_config"):
            if model.get(unsupported) is not None:
                raise RecapImportError(
                    f"model.{unsupported} is not supported: only continuous, "
                    "binary and the three TwHIN embedding inputs are")
        multi_task_type = model.get("multi_task_type", "share_none")
        if multi_task_type != "share_all":
            raise RecapImportError(
                f"model.multi_task_type {multi_task_type!r} is not supported: "
                "only share_all (every tower reads the MaskNet backbone's "
                "output) maps to a MaskNet; share_partial towers also read "
                "the raw input and share_none has no backbone")
        self._backbone(model.get("backbone"))
        self._preprocessor(model.get("featurization_config"), notes)
        self._inputs(yaml_config["train_data"], config_dir)
        self._tasks(model.get("tasks"), yaml_config["train_data"])

    def _backbone(self, value):
        where = "model.backbone"
        backbone = _section(value, where, _TASK_KEYS)
        if backbone.get("mask_net_config") is None:
            kinds = [k for k in ("mlp_config", "dcn_config", "dlrm_config")
                     if backbone.get(k) is not None]
            raise RecapImportError(
                f"{where} is not a MaskNet (mask_net_config)" +
                (f": it is {kinds[0]}" if kinds else ""))
        where += ".mask_net_config"
        masknet = _section(backbone["mask_net_config"], where,
                           {"mask_blocks", "mlp", "use_parallel"},
                           required=("mask_blocks",))
        self.parallel = _bool(masknet, "use_parallel", where, False)
        blocks = masknet["mask_blocks"]
        if not isinstance(blocks, list) or not blocks:
            raise RecapImportError(f"{where}.mask_blocks: expected a non-empty "
                                   "list")
        self.blocks = []
        for k, block in enumerate(blocks):
            at = f"{where}.mask_blocks[{k}]"
            block = _section(block, at, {"output_size", "reduction_factor",
                                         "aggregation_size", "input_layer_norm"},
                             required=("output_size", "input_layer_norm"))
            rf = _number(block, "reduction_factor", at, positive=True)
            aggregation = _positive_int(block, "aggregation_size", at)
            if (rf is None) == (aggregation is None):
                raise RecapImportError(
                    f"{at}: give exactly one of reduction_factor and "
                    "aggregation_size")
            self.blocks.append((_positive_int(block, "output_size", at), rf,
                                aggregation,
                                _bool(block, "input_layer_norm", at, False)))
        self.mlp = None
        if masknet.get("mlp") is not None:
            if not self.parallel:
                raise RecapImportError(
                    f"{where}.mlp with use_parallel false is not a model the-"
                    "algorithm-ml can run: its serial MaskNet indexes the Mlp "
                    "instead of calling it (TypeError)")
            self.mlp = _Mlp(masknet["mlp"], where + ".mlp")
        outputs = [b[0] for b in self.blocks]
        self.backbone_width = sum(outputs) if self.parallel else outputs[-1]
        if self.mlp is not None:
            self.out_features = self.mlp.sizes[-1]
        else:
            self.out_features = self.backbone_width

    def _preprocessor(self, value, notes):
        where = "model.featurization_config"
        featurization = _section(value, where, {
            "log1p_abs_config", "clip_log1p_abs_config", "z_score_log_config",
            "double_norm_log_config", "feature_names_to_concat"
        })
        if featurization.get("double_norm_log_config") is None:
            raise RecapImportError(
                f"{where}.double_norm_log_config is missing: the-algorithm-ml "
                "builds its preprocessor from it alone (with another "
                "featurization its model fails to build)")
        where += ".double_norm_log_config"
        double_norm = _section(featurization["double_norm_log_config"], where,
                               {"batch_norm_config", "clip_magnitude",
                                "layer_norm_config"})
        self.batch_norm = None  # else: affine
        if double_norm.get("batch_norm_config") is not None:
            bn = _section(double_norm["batch_norm_config"],
                          where + ".batch_norm_config", {"affine", "momentum"})
            _number(bn, "momentum", where + ".batch_norm_config", positive=True)
            self.batch_norm = _bool(bn, "affine", where + ".batch_norm_config",
                                    True)
        _number(double_norm, "clip_magnitude", where)
        self.layer_norm = None  # else: (eps, affine)
        if double_norm.get("layer_norm_config") is not None:
            at = where + ".layer_norm_config"
            ln = _section(double_norm["layer_norm_config"], at,
                          {"epsilon", "axis", "center", "scale"})
            axis = ln.get("axis", -1)
            center = _bool(ln, "center", at, True)
            if axis != -1 or center != _bool(ln, "scale", at, True):
                raise RecapImportError(
                    f"{at}: only axis -1 with center == scale is a model the-"
                    "algorithm-ml can build")
            eps = float(_number(ln, "epsilon", at, 1e-3))
            if eps < 0:
                raise RecapImportError(f"{at}.epsilon: {eps} is negative")
            if eps == 0:
                notes.append(
                    f"{at}: eps 0 served as {ZERO_EPS_REPLACEMENT} (the format "
                    "needs eps > 0; the scores differ only where Twitter's "
                    "would divide by a zero variance)")
                eps = ZERO_EPS_REPLACEMENT
            self.layer_norm = (eps, center)

    def _inputs(self, train_data, config_dir):
        """The TwHIN embeddings the model reads, and the continuous and
        binary widths truncate_and_slice makes (None: the data's own)."""
        schema = train_data.get("seg_dense_schema")
        if not isinstance(schema, dict):
            raise RecapImportError("train_data.seg_dense_schema is missing")
        renamed = schema.get("renamed_features") or {}
        if not isinstance(renamed, dict):
            raise RecapImportError(
                "train_data.seg_dense_schema.renamed_features: expected a "
                "mapping")
        self.embeddings = [(name, scope) for name, scope in _EMBEDDINGS
                           if name in renamed]
        preprocess = train_data.get("preprocess") or {}
        where = "train_data.preprocess.truncate_and_slice"
        sliced = (preprocess.get("truncate_and_slice") or {}) if isinstance(
            preprocess, dict) else {}
        sliced = _section(sliced, where, {
            "continuous_feature_truncation", "binary_feature_truncation",
            "continuous_feature_mask_path", "binary_feature_mask_path"
        })
        self.widths = {}
        for kind in ("continuous", "binary"):
            truncation = _positive_int(sliced, f"{kind}_feature_truncation",
                                       where)
            mask_path = sliced.get(f"{kind}_feature_mask_path")
            if mask_path is not None:
                indices = _mask_indices(mask_path, config_dir,
                                        f"{where}.{kind}_feature_mask_path")
                if truncation is not None and indices.size and \
                        indices.max() >= truncation:
                    raise RecapImportError(
                        f"{where}.{kind}_feature_mask_path selects column "
                        f"{int(indices.max())}, beyond the "
                        f"{kind}_feature_truncation of {truncation}: the-"
                        "algorithm-ml's TruncateAndSlice fails on it")
                self.widths[kind] = int(indices.size)
            elif truncation is not None:
                # The data has at least this many (Twitter's have thousands).
                self.widths[kind] = truncation
        if "continuous" not in self.widths and self.batch_norm is None:
            raise RecapImportError(
                "cannot tell how many continuous features the model reads: "
                "its preprocessor has no BatchNorm and the config has neither "
                f"{where}.continuous_feature_truncation nor "
                "continuous_feature_mask_path")

    def _tasks(self, value, train_data):
        if not isinstance(value, dict) or not value:
            raise RecapImportError("model.tasks is missing or empty")
        data_tasks = train_data.get("tasks")
        self.tasks = []
        for task_name, task in value.items():
            where = f"model.tasks.{task_name}"
            task = _section(task, where, _TASK_KEYS)
            if not isinstance(data_tasks, dict) or task_name not in data_tasks:
                raise RecapImportError(
                    f"{where}: train_data.tasks has no {task_name!r} (the-"
                    "algorithm-ml builds each task's calibrator from it)")
            if task.get("mlp_config") is None:
                raise RecapImportError(
                    f"{where}: only MLP towers (mlp_config) are supported")
            tower = _Mlp(task["mlp_config"], where + ".mlp_config")
            if tower.final_activation:
                raise RecapImportError(
                    f"{where}.mlp_config.final_layer_activation: a ReLU after "
                    "the logit is not supported (a task's last layer is its "
                    "logit)")
            if tower.sizes[-1] != 1:
                raise RecapImportError(
                    f"{where}.mlp_config.layer_sizes: the last size is "
                    f"{tower.sizes[-1]}, but a tower ends in its one logit")
            if task.get("affine_map") is not None:
                affine = _section(task["affine_map"], where + ".affine_map",
                                  {"scale", "bias"})
                _number(affine, "scale", where + ".affine_map")
                _number(affine, "bias", where + ".affine_map")
            self.tasks.append((str(task_name), tower,
                               task.get("affine_map") is not None))


_TASK_KEYS = {"mlp_config", "dcn_config", "dlrm_config", "mask_net_config",
              "affine_map", "pos_weight"}


def _mask_indices(path, config_dir, where):
    """The columns a truncate_and_slice mask keeps (np.load(f).nonzero()[0],
    as the-algorithm-ml does); a relative path is read from the config's
    folder."""
    if not isinstance(path, str) or not path:
        raise RecapImportError(f"{where}: {path!r} is not a file name")
    full = path if os.path.isabs(path) else os.path.join(config_dir or ".",
                                                         path)
    try:
        mask = np.load(full, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RecapImportError(
            f"{where}: cannot read {full!r} ({e}); the model's inputs depend "
            "on it (a relative path is read from the --config file's folder)"
        ) from None
    if mask.ndim != 1:
        raise RecapImportError(f"{where}: {full!r} has shape "
                               f"{list(mask.shape)}, expected one dimension")
    return mask.nonzero()[0]


def expected_tensors(recap, name_prefix=""):
    """The checkpoint's tensors and shapes that the config `recap` implies.

    Widths the data gives: "continuous", "continuous+binary" (the
    preprocessor's LayerNorm), each embedding's name, and "V" (what the
    backbone reads).
    """
    spec = ExpectedTensors(name_prefix)
    index = 2
    if recap.batch_norm is not None:
        spec.add_batch_norm(f"{_PREPROCESSOR}2.layer.", "continuous",
                            recap.batch_norm)
        index = 3
    spec.add(f"{_PREPROCESSOR}{index}.min_value", ())
    spec.add(f"{_PREPROCESSOR}{index}.max_value", ())
    if recap.layer_norm is not None:
        spec.add_layer_norm(_LAYER_NORM, "continuous+binary",
                            recap.layer_norm[1])
    for name, _ in recap.embeddings:
        spec.add_layer_norm(f"_{name}_layer_norm.", name)
    width = "V"
    for k, (output, rf, aggregation, input_norm) in enumerate(recap.blocks):
        block = f"_backbone._mask_blocks.{k}."
        if rf is not None:
            aggregation = Derived(lambda w, rf=rf: int(w["V"] * rf),
                                  f"int(V × {rf})")
        if input_norm:
            spec.add_layer_norm(block + "_input_layer_norm.", width)
        spec.add_linear(block + "_mask_layer.0.", "V", aggregation)
        spec.add_linear(block + "_mask_layer.2.", aggregation, width)
        spec.add_linear(block + "_hidden_layer.", width, output)
        spec.add_layer_norm(block + "_layer_norm.", output)
        if not recap.parallel:
            width = output
    if recap.mlp is not None:
        recap.mlp.expect(spec, "_backbone._dense_layers.layers.",
                         recap.backbone_width)
    for task_name, tower, affine in recap.tasks:
        safe = task_name.replace(".", "__")
        tower.expect(spec, f"_towers.{safe}.layers.", recap.out_features)
        if affine:
            spec.add_linear(f"_affine_maps.{safe}.", 1, 1)
        spec.add(f"_calibrators.{safe}.ratio", ())
    # V = continuous + binary + the embeddings.
    embeddings = [name for name, _ in recap.embeddings]
    if "binary" in recap.widths:
        spec.add_relation(
            "V", lambda w: w["continuous"] + w["binary"] + sum(
                w[e] for e in embeddings),
            " + ".join(["continuous", "binary"] + embeddings))
    if recap.layer_norm is not None and recap.layer_norm[1]:
        if "binary" in recap.widths:
            spec.add_relation("continuous+binary",
                              lambda w: w["continuous"] + w["binary"],
                              "continuous + binary")
        else:
            spec.add_relation("V", lambda w: w["continuous+binary"] + sum(
                w[e] for e in embeddings), " + ".join(
                    ["continuous+binary"] + embeddings))
    return spec


def import_recap(state_dict, yaml_config, config_dir=None, name_prefix=""):
    """A MultiTaskRankingModel of the-algorithm-ml as our model.

    Args:
      state_dict: the model's state_dict, without the training wrapper's
        prefix.
      yaml_config: the parsed RecapConfig YAML (model and train_data).
      config_dir: the YAML's folder, from which relative mask paths are read.
      name_prefix: the prefix the checkpoint file's names had, for messages.

    Returns:
      (model_config, weights, notes): a ModelConfig, our tensors, and a list
      of remarks for the user (substitutions made).

    Raises:
      RecapImportError: an option we cannot serve (named), or a checkpoint
        that is not the model the config describes (every missing,
        unexpected and mis-shaped tensor named by its checkpoint name).
    """
    notes = []
    recap = _Recap(yaml_config, config_dir, notes)
    spec = expected_tensors(recap, name_prefix)
    widths = spec.match(state_dict, recap.widths)
    state = state_dict
    continuous = widths["continuous"]
    embedded = sum(widths[name] for name, _ in recap.embeddings)
    if "binary" in recap.widths:
        binary = recap.widths["binary"]
    elif "continuous+binary" in widths:
        binary = widths["continuous+binary"] - continuous
    else:
        binary = widths["V"] - continuous - embedded
    if binary < 0 or widths["V"] != continuous + binary + embedded:
        raise RecapImportError(
            f"the backbone reads V = {widths['V']} values, which the "
            f"{continuous} continuous features and the embeddings "
            f"({embedded}) cannot make")

    weights = {}
    clamp = 3 if recap.batch_norm is not None else 2
    fields = [
        config.dense_field(
            "continuous", config_pb2.CANDIDATE, continuous,
            non_finite=config_pb2.REPLACE_WITH_ZERO,
            transform=config_pb2.SIGNED_LOG1P,
            batch_norm=None if recap.batch_norm is None else config.batch_norm(
                EPS, recap.batch_norm),
            clamp_min=float(state[f"{_PREPROCESSOR}{clamp}.min_value"]),
            clamp_max=float(state[f"{_PREPROCESSOR}{clamp}.max_value"]))
    ]
    if recap.batch_norm is not None:
        for name in ("running_mean", "running_var") + (
                ("weight", "bias") if recap.batch_norm else ()):
            weights["fields.continuous.batch_norm." + name] = state[
                f"{_PREPROCESSOR}2.layer.{name}"]
    feature_fields = ["continuous"]
    if binary:
        fields.append(config.dense_field("binary", config_pb2.CANDIDATE,
                                         binary))
        feature_fields.append("binary")
    input_norms = []
    if recap.layer_norm is not None:
        eps, affine = recap.layer_norm
        input_norms.append(config.input_norm("features", feature_fields, eps))
        if affine:
            weights["input_norms.features.weight"] = state[_LAYER_NORM + "weight"]
            weights["input_norms.features.bias"] = state[_LAYER_NORM + "bias"]
        else:
            weights["input_norms.features.weight"] = torch.ones(
                continuous + binary)
            weights["input_norms.features.bias"] = torch.zeros(
                continuous + binary)
    for name, scope in recap.embeddings:
        fields.append(config.dense_field(name, scope, widths[name]))
        input_norms.append(config.input_norm(name, [name], EPS))
        for tensor in ("weight", "bias"):
            weights[f"input_norms.{name}.{tensor}"] = state[
                f"_{name}_layer_norm.{tensor}"]

    blocks = []
    for k, (output, _, _, input_norm) in enumerate(recap.blocks):
        source = f"_backbone._mask_blocks.{k}."
        for theirs, ours in _BLOCK_MODULES.items():
            if theirs == "_input_layer_norm" and not input_norm:
                continue
            for tensor in ("weight", "bias"):
                weights[f"masknet.blocks.{k}.{ours}.{tensor}"] = state[
                    f"{source}{theirs}.{tensor}"]
        blocks.append(config.mask_block(
            output_size=output,
            aggregation_size=state[source + "_mask_layer.0.weight"].shape[0],
            hidden_bias=True,
            activation=config_pb2.ACTIVATION_NONE,
            input_norm=config_pb2.LAYER_NORM if input_norm else
            config_pb2.NORM_NONE,
            input_norm_eps=EPS,
            layer_norm_eps=EPS))
    mlp = []
    if recap.mlp is not None:
        mlp_weights, mlp = recap.mlp.take(state, "_backbone._dense_layers.layers.",
                                          "mlp.")
        weights.update(mlp_weights)

    tasks, task_names = [], {}
    for task_name, tower, affine in recap.tasks:
        safe = task_name.replace(".", "__")
        tower_weights, layers = tower.take(state, f"_towers.{safe}.layers.",
                                           f"tasks.{safe}.")
        if affine:
            last = f"tasks.{safe}.{len(layers) - 1}."
            s = state[f"_affine_maps.{safe}.weight"].double().reshape(())
            c = state[f"_affine_maps.{safe}.bias"].double().reshape(())
            tower_weights[last + "weight"] = tower_weights[last + "weight"].double() * s
            tower_weights[last + "bias"] = tower_weights[last + "bias"].double() * s + c
        head = config_pb2.TaskHead(name=safe, layers=layers)
        ratio = float(state[f"_calibrators.{safe}.ratio"])
        if not math.isfinite(ratio) or ratio <= 0:
            raise RecapImportError(
                f"tensor {name_prefix}_calibrators.{safe}.ratio is {ratio}: a "
                "calibration ratio (negative over positive down-sampling "
                "rate) must be positive")
        if ratio != 1.0:
            head.negative_sampling_rate = ratio
        weights.update(tower_weights)
        tasks.append(head)
        if safe != task_name:
            task_names[safe] = task_name

    model_config = config_pb2.ModelConfig(
        description="the-algorithm-ml MultiTaskRankingModel (imported)",
        fields=fields,
        input_norms=input_norms,
        masknet=config.masknet(
            config_pb2.PARALLEL if recap.parallel else config_pb2.SERIAL, blocks),
        mlp=mlp,
        tasks=tasks)
    model_config.metadata["imported_from"] = "the-algorithm-ml"
    for safe, task_name in task_names.items():
        model_config.metadata["task." + safe] = task_name
    return model_config, weights, notes
