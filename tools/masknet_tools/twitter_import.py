"""Imports the MaskNet of Twitter's the-algorithm-ml recap model.

Twitter's modules (projects/home/recap/model/mask_net.py and mlp.py) name
their tensors, under the MaskNet's prefix p (block k):

    p_mask_blocks.k._input_layer_norm.*  LayerNorm, with input_layer_norm
    p_mask_blocks.k._mask_layer.0.*      Linear: mask input -> aggregation
    p_mask_blocks.k._mask_layer.2.*      Linear: aggregation -> masked width
    p_mask_blocks.k._hidden_layer.*      Linear, always with a bias
    p_mask_blocks.k._layer_norm.*        LayerNorm
    p_dense_layers.layers.<j>.*          Mlp: per layer Linear, [BatchNorm1d],
                                         ReLU, [Dropout]; then the last Linear
                                         [and ReLU if final_layer_activation]

which become masknet.blocks.<k>.{input_norm, mask.aggregation,
mask.projection, hidden, layer_norm}.* and mlp.<i>.{weight, bias,
batch_norm.*}. Twitter's blocks have no activation after their LayerNorm and
its LayerNorms and BatchNorms use torch's default eps 1e-5. Its serial mode
indexes the MLP instead of calling it (a bug); we serve a serial model as
blocks, then MLP.
"""

import collections
import re

import torch

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools.protos import config_pb2

_BLOCK_MODULES = {
    "_input_layer_norm": "input_norm",
    "_mask_layer.0": "mask.aggregation",
    "_mask_layer.2": "mask.projection",
    "_hidden_layer": "hidden",
    "_layer_norm": "layer_norm",
}


def map_masknet(state_dict, prefix=""):
    """Renames the tensors of a Twitter `MaskNet` found under `prefix`.

    Args:
      state_dict: a Twitter state dict (name to tensor).
      prefix: the MaskNet's prefix, e.g. "_backbone." ("" for a bare MaskNet).

    Returns:
      A new dict: the MaskNet's tensors under our names; every key not under
      `prefix + "_mask_blocks."` or `prefix + "_dense_layers.layers."` passed
      through.

    Raises:
      ValueError: a MaskNet key is not one of the layout above.
    """
    block_pattern = re.compile(
        re.escape(prefix) + r"_mask_blocks\.(\d+)\.(.+)\.(weight|bias)")
    # An Mlp: Linear, [BatchNorm1d], ReLU, [Dropout] per layer in `layers`.
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
        block, module, tensor = match[1], _BLOCK_MODULES[match[2]], match[3]
        mapped[f"masknet.blocks.{block}.{module}.{tensor}"] = value
    return mapped


def masknet_config(state_dict, prefix, mode, final_layer_activation=False):
    """The MaskNet and MLP config of a Twitter MaskNet, from its tensor shapes.

    Aggregation widths are written explicitly (Twitter truncates
    `reduction_factor * mask input width` to an integer).

    Args:
      state_dict: a Twitter state dict.
      prefix: the MaskNet's prefix, as for map_masknet.
      mode: config_pb2.PARALLEL or SERIAL (Twitter's use_parallel).
      final_layer_activation: the Twitter MlpConfig option of the same name.

    Returns:
      (masknet, mlp): a config_pb2.MaskNet and a list of config_pb2.DenseLayer.
    """
    return _masknet_config_of(map_masknet(state_dict, prefix), mode,
                              final_layer_activation)


def _masknet_config_of(mapped, mode, final_layer_activation):
    """masknet_config of tensors map_masknet has renamed."""
    blocks = []
    while f"masknet.blocks.{len(blocks)}.hidden.weight" in mapped:
        block = f"masknet.blocks.{len(blocks)}."
        if block + "input_norm.weight" in mapped:
            norm = config_pb2.LAYER_NORM
        else:
            norm = config_pb2.NORM_NONE
        hidden = mapped[block + "hidden.weight"]
        aggregation = mapped[block + "mask.aggregation.weight"]
        blocks.append(
            config.mask_block(output_size=hidden.shape[0],
                              aggregation_size=aggregation.shape[0],
                              hidden_bias=True,
                              activation=config_pb2.ACTIVATION_NONE,
                              input_norm=norm,
                              input_norm_eps=checkpoints.TORCH_DEFAULT_EPS,
                              layer_norm_eps=checkpoints.TORCH_DEFAULT_EPS))
    mlp = checkpoints.dense_layers(
        mapped, "mlp.", config_pb2.RELU
        if final_layer_activation else config_pb2.ACTIVATION_NONE)
    return config.masknet(mode, blocks), mlp


# --- The whole heavy ranker (projects/home/recap/model/entrypoint.py) -------
#
# MultiTaskRankingModel, under its tensor names:
#   _preprocessor (DoubleNormLog) on the continuous features:
#     _before_concat_layers: InputNonFinite (NaN, +-inf -> 0), Log1pAbs
#       (sign(x) log1p|x|), [BatchNorm: .<i>.layer.* (BatchNorm1d, eps 1e-5)],
#       Clamp: .<j>.min_value, .<j>.max_value (0-d buffers)
#     then concatenated with the binary features, [layer_norm.layer.*: one
#       LayerNorm over continuous + binary, eps from layer_norm_config]
#   _user_embedding_layer_norm, _user_eng_embedding_layer_norm,
#   _author_embedding_layer_norm: a LayerNorm (eps 1e-5) on each TwHIN vector
#   V = [features, user, user_eng, author]; _backbone (MaskNet, share_all)
#   per task (safe name: "." -> "__"): _towers.<t> (Mlp) -> logit,
#   [_affine_maps.<t>: Linear(1, 1): scale * logit + bias], sigmoid,
#   _calibrators.<t>.ratio r: p r / (1 - p + p r).
#
# The viewer's embeddings are request context; everything else is per
# candidate (Twitter's continuous and binary features mix viewer and tweet
# features in one tensor). The affine map is folded into the tower's last
# layer in float64.

# Twitter's embedding inputs, in V's order: (attribute, our field, scope).
_RECAP_EMBEDDINGS = (
    ("_user_embedding_layer_norm", "user_embedding", config_pb2.CONTEXT),
    ("_user_eng_embedding_layer_norm", "user_eng_embedding",
     config_pb2.CONTEXT),
    ("_author_embedding_layer_norm", "author_embedding", config_pb2.CANDIDATE),
)
# The eps that replaces a LayerNorm eps of 0 (the format needs eps > 0).
ZERO_EPS_REPLACEMENT = 1e-12


class RecapImportError(checkpoints.CheckpointError):
    """The checkpoint or its config cannot be served; the message says why."""




def _options(section, where, known):
    """`section` (a YAML mapping or None) as a dict; refuses unknown keys."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise RecapImportError(f"{where}: expected a mapping, got "
                               f"{type(section).__name__}")
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise RecapImportError(
            f"{where}: option {unknown[0]!r} is not one the-algorithm-ml's "
            f"config has here, or not one this importer can serve "
            f"(known: {', '.join(sorted(known))})")
    return section


def _model_section(yaml_config):
    if isinstance(yaml_config, dict) and isinstance(yaml_config.get("model"),
                                                    dict):
        return yaml_config["model"]
    return yaml_config


def _continuous_truncation(yaml_config):
    """train_data.preprocess.truncate_and_slice.continuous_feature_truncation."""
    try:
        return int(yaml_config["train_data"]["preprocess"]["truncate_and_slice"]
                   ["continuous_feature_truncation"])
    except (KeyError, TypeError, ValueError):
        return None


def _mlp_options(options, where):
    options = _options(options, where, {
        "layer_sizes", "batch_norm", "dropout", "final_layer_activation"
    })
    if "layer_sizes" not in options:
        raise RecapImportError(f"{where}: layer_sizes is missing")
    return options


def _layer_norm_tensors(state, prefix, width, where):
    """(weight, bias) of a LayerNorm under `prefix` (ones, zeros if absent)."""
    weight = state.pop(prefix + "weight", None)
    bias = state.pop(prefix + "bias", None)
    if (weight is None) != (bias is None):
        raise RecapImportError(
            f"{where}: {prefix}weight and {prefix}bias must come together")
    if weight is None:
        return torch.ones(width), torch.zeros(width)
    return weight, bias


def _vector_width(tensor, name):
    """The length of 1-d tensor `name`; an error naming it otherwise."""
    if tensor.dim() != 1:
        raise RecapImportError(f"tensor {name!r} has shape {list(tensor.shape)}"
                               ", expected one dimension")
    return tensor.shape[0]


def _eps(value, where, notes):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecapImportError(f"{where}.epsilon: {value!r} is not a number")
    eps = float(value)
    if eps == 0:
        notes.append(f"{where}: eps 0 served as {ZERO_EPS_REPLACEMENT} (the "
                     "format needs eps > 0; the scores differ only where "
                     "Twitter's would divide by a zero variance)")
        return ZERO_EPS_REPLACEMENT
    return eps


def import_recap(state_dict, yaml_config):
    """A MultiTaskRankingModel of the-algorithm-ml as our model.

    Args:
      state_dict: the model's state_dict, without the training wrapper's
        "model." prefix.
      yaml_config: the parsed model config YAML: the whole RecapConfig (its
        `model` section is read, and `train_data` for the continuous feature
        count when the preprocessor has no BatchNorm) or the model section.

    Returns:
      (model_config, weights, notes): a ModelConfig, our tensors, and a list
      of remarks for the user (substitutions made).

    Raises:
      RecapImportError: an option we cannot serve (named), or a missing,
        unexpected or inconsistent tensor (named by its checkpoint name).
    """
    state = checkpoints.without_counters(state_dict)
    notes = []
    model = _options(
        _model_section(yaml_config), "model", {
            "tasks", "large_embeddings", "small_embeddings",
            "position_debias_config", "featurization_config",
            "multi_task_type", "backbone", "stratifiers"
        })
    for unsupported in ("large_embeddings", "small_embeddings",
                        "position_debias_config"):
        if model.get(unsupported):
            raise RecapImportError(
                f"model.{unsupported} is not supported: only continuous, "
                "binary and the three TwHIN embedding inputs are")
    multi_task_type = model.get("multi_task_type", "share_none")
    if multi_task_type != "share_all":
        raise RecapImportError(
            f"model.multi_task_type {multi_task_type!r} is not supported: "
            "only share_all (every tower reads the MaskNet backbone's output)"
            " maps to a MaskNet; share_partial towers also read the raw "
            "input and share_none has no backbone")
    backbone = _options(model.get("backbone"), "model.backbone", {
        "mlp_config", "dcn_config", "dlrm_config", "mask_net_config",
        "affine_map", "pos_weight"
    })
    if not backbone.get("mask_net_config"):
        kinds = [k for k in ("mlp_config", "dcn_config", "dlrm_config")
                 if backbone.get(k)]
        raise RecapImportError(
            "model.backbone is not a MaskNet (mask_net_config)" +
            (f": it is {kinds[0]}" if kinds else ""))
    mask_net = _options(backbone["mask_net_config"],
                        "model.backbone.mask_net_config",
                        {"mask_blocks", "mlp", "use_parallel"})
    mode = config_pb2.PARALLEL if mask_net.get(
        "use_parallel", False) else config_pb2.SERIAL
    backbone_mlp = _mlp_options(mask_net["mlp"],
                                "model.backbone.mask_net_config.mlp"
                               ) if mask_net.get("mlp") else None

    # The backbone (with its MLP).
    backbone_state = checkpoints.pop_prefixed(state, "_backbone.")
    if not backbone_state:
        raise RecapImportError("missing the backbone: no _backbone.* tensors")
    try:
        weights = map_masknet(backbone_state, "_backbone.")
    except ValueError as e:
        raise RecapImportError(str(e)) from None
    masknet_message, mlp = _masknet_config_of(
        weights, mode,
        bool(backbone_mlp and backbone_mlp.get("final_layer_activation")))
    if bool(mlp) != bool(backbone_mlp):
        raise RecapImportError(
            "model.backbone.mask_net_config.mlp is " +
            ("set but the checkpoint has no _backbone._dense_layers tensors"
             if backbone_mlp else "not set but the checkpoint has "
             "_backbone._dense_layers tensors"))
    if "masknet.blocks.0.mask.aggregation.weight" not in weights:
        raise RecapImportError(
            "missing tensor '_backbone._mask_blocks.0._mask_layer.0.weight'")
    aggregation = weights["masknet.blocks.0.mask.aggregation.weight"]
    if aggregation.dim() != 2:
        raise RecapImportError(
            "tensor '_backbone._mask_blocks.0._mask_layer.0.weight' has shape "
            f"{list(aggregation.shape)}, expected two dimensions")
    d = aggregation.shape[1]

    # Inputs: continuous and binary features, then the TwHIN embeddings.
    featurization = _options(model.get("featurization_config"),
                             "model.featurization_config", {
                                 "log1p_abs_config", "clip_log1p_abs_config",
                                 "z_score_log_config", "double_norm_log_config",
                                 "feature_names_to_concat"
                             })
    double_norm = _options(
        featurization.get("double_norm_log_config"),
        "model.featurization_config.double_norm_log_config",
        {"batch_norm_config", "clip_magnitude", "layer_norm_config"})
    if not featurization.get("double_norm_log_config"):
        raise RecapImportError(
            "model.featurization_config.double_norm_log_config is missing: "
            "the-algorithm-ml builds its preprocessor from it alone")
    layers = collections.defaultdict(dict)
    pattern = re.compile(r"_preprocessor\._before_concat_layers\.(\d+)\.(.+)")
    for key in list(state):
        match = pattern.fullmatch(key)
        if match:
            layers[int(match[1])][match[2]] = state.pop(key)
    batch_norm = clamp = None
    for index in sorted(layers):
        tensors = layers[index]
        if "layer.running_mean" in tensors and batch_norm is None:
            batch_norm = tensors
        elif set(tensors) == {"min_value", "max_value"} and clamp is None:
            clamp = tensors
        else:
            raise RecapImportError(
                f"unexpected tensors under _preprocessor._before_concat_layers."
                f"{index}: {sorted(tensors)}")
    if bool(batch_norm) != bool(double_norm.get("batch_norm_config")):
        raise RecapImportError(
            "double_norm_log_config.batch_norm_config and the checkpoint "
            "disagree: the preprocessor's BatchNorm tensors are " +
            ("present" if batch_norm else "missing"))
    if clamp is None:
        raise RecapImportError(
            "missing tensors _preprocessor._before_concat_layers.<i>."
            "{min_value,max_value} (the Clamp)")

    embeddings = []
    for attribute, field, scope in _RECAP_EMBEDDINGS:
        if attribute + ".weight" in state:
            width = _vector_width(state[attribute + ".weight"],
                                  attribute + ".weight")
            embeddings.append((attribute, field, scope, width))
    if batch_norm:
        continuous = _vector_width(
            batch_norm["layer.running_mean"],
            "_preprocessor._before_concat_layers.<i>.layer.running_mean")
    else:
        continuous = _continuous_truncation(yaml_config)
        if continuous is None:
            raise RecapImportError(
                "cannot tell how many continuous features the model reads: "
                "its preprocessor has no BatchNorm and the config has no "
                "train_data.preprocess.truncate_and_slice."
                "continuous_feature_truncation")
    binary = d - continuous - sum(e[3] for e in embeddings)
    if binary < 0:
        raise RecapImportError(
            f"the backbone reads {d} values, fewer than the {continuous} "
            "continuous features and the embeddings")

    fields = [
        config.dense_field(
            "continuous",
            config_pb2.CANDIDATE,
            continuous,
            non_finite=config_pb2.REPLACE_WITH_ZERO,
            transform=config_pb2.SIGNED_LOG1P,
            batch_norm=config.batch_norm(
                checkpoints.TORCH_DEFAULT_EPS, "layer.weight" in batch_norm)
            if batch_norm else None,
            clamp_min=float(clamp["min_value"]),
            clamp_max=float(clamp["max_value"]))
    ]
    if batch_norm:
        for name in ("running_mean", "running_var", "weight", "bias"):
            if "layer." + name in batch_norm:
                weights["fields.continuous.batch_norm." +
                        name] = batch_norm["layer." + name]
    feature_fields = ["continuous"]
    if binary:
        fields.append(config.dense_field("binary", config_pb2.CANDIDATE,
                                         binary))
        feature_fields.append("binary")
    input_norms = []
    layer_norm = _options(
        double_norm.get("layer_norm_config"),
        "double_norm_log_config.layer_norm_config",
        {"epsilon", "axis", "center", "scale"})
    if double_norm.get("layer_norm_config"):
        if layer_norm.get("axis", -1) != -1 or layer_norm.get(
                "center", True) != layer_norm.get("scale", True):
            raise RecapImportError(
                "double_norm_log_config.layer_norm_config: only axis -1 with "
                "center == scale is supported (as the-algorithm-ml requires)")
        eps = _eps(layer_norm.get("epsilon", 1e-3),
                   "double_norm_log_config.layer_norm_config", notes)
        input_norms.append(config.input_norm("features", feature_fields, eps))
        (weights["input_norms.features.weight"],
         weights["input_norms.features.bias"]) = _layer_norm_tensors(
             state, "_preprocessor.layer_norm.layer.", continuous + binary,
             "the preprocessor's LayerNorm")
    for attribute, field, scope, width in embeddings:
        fields.append(config.dense_field(field, scope, width))
        input_norms.append(
            config.input_norm(field, [field], checkpoints.TORCH_DEFAULT_EPS))
        weights[f"input_norms.{field}.weight"] = state.pop(attribute +
                                                           ".weight")
        weights[f"input_norms.{field}.bias"] = checkpoints.take(
            state, attribute + ".bias")

    # The towers, each with its affine map and calibrator.
    tasks_yaml = model.get("tasks")
    if not isinstance(tasks_yaml, dict) or not tasks_yaml:
        raise RecapImportError("model.tasks is missing or empty")
    tasks, task_names = [], {}
    for task_name, task_options in tasks_yaml.items():
        safe = str(task_name).replace(".", "__")
        where = f"model.tasks.{task_name}"
        task_options = _options(task_options, where, {
            "mlp_config", "dcn_config", "dlrm_config", "mask_net_config",
            "affine_map", "pos_weight"
        })
        if not task_options.get("mlp_config"):
            raise RecapImportError(
                f"{where}: only MLP towers (mlp_config) are supported")
        tower = _mlp_options(task_options["mlp_config"], where + ".mlp_config")
        if tower.get("final_layer_activation"):
            raise RecapImportError(
                f"{where}.mlp_config.final_layer_activation: a ReLU after the "
                "logit is not supported (a task's last layer is its logit)")
        tower_state = checkpoints.pop_prefixed(state, f"_towers.{safe}.")
        if not tower_state:
            raise RecapImportError(
                f"{where}: missing tensors _towers.{safe}.layers.*")
        mapped = checkpoints.map_dense_stack(tower_state,
                                             f"_towers.{safe}.layers.",
                                             f"tasks.{safe}.")
        head = config_pb2.TaskHead(name=safe)
        head.layers.extend(
            checkpoints.dense_layers(mapped, f"tasks.{safe}.",
                                     config_pb2.ACTIVATION_NONE))
        last = f"tasks.{safe}.{len(head.layers) - 1}."
        scale = state.pop(f"_affine_maps.{safe}.weight", None)
        shift = state.pop(f"_affine_maps.{safe}.bias", None)
        if (scale is None) != (task_options.get("affine_map") is None):
            raise RecapImportError(
                f"{where}.affine_map and the checkpoint disagree: "
                f"_affine_maps.{safe}.* is " +
                ("missing" if scale is None else "present"))
        if scale is not None:
            if shift is None or scale.numel() != 1 or shift.numel() != 1:
                raise RecapImportError(
                    f"_affine_maps.{safe}: expected weight [1, 1] and bias "
                    "[1] (a Linear(1, 1))")
            s, c = scale.double().reshape(()), shift.double().reshape(())
            mapped[last + "weight"] = mapped[last + "weight"].double() * s
            mapped[last + "bias"] = mapped[last + "bias"].double() * s + c
        ratio = checkpoints.take(state, f"_calibrators.{safe}.ratio")
        if ratio.numel() != 1:
            raise RecapImportError(
                f"_calibrators.{safe}.ratio: expected one value, got shape "
                f"{list(ratio.shape)}")
        r = float(ratio.reshape(()))
        if r != 1.0:
            head.negative_sampling_rate = r
        weights.update(mapped)
        tasks.append(head)
        if safe != task_name:
            task_names[safe] = str(task_name)

    checkpoints.refuse_leftovers(state)
    model_config = config_pb2.ModelConfig(
        description="the-algorithm-ml MultiTaskRankingModel (imported)",
        fields=fields,
        input_norms=input_norms,
        masknet=masknet_message,
        mlp=mlp,
        tasks=tasks)
    model_config.metadata["imported_from"] = "the-algorithm-ml"
    for safe, task_name in task_names.items():
        model_config.metadata["task." + safe] = task_name
    return model_config, weights, notes
