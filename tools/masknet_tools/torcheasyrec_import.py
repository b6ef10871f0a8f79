"""Imports a MaskNet rank model of Alibaba's TorchEasyRec.

TorchEasyRec's MaskNet (tzrec/models/masknet.py around
tzrec/modules/masknet.py), under its tensor names:

    embedding_group.emb_impls.__BASE__.ebc.embedding_bags.<table>.weight
        an id feature's table [rows, dim]; <table> is its embedding_name or
        "<feature_name>_emb"; the ids of a feature pool by sum or mean
    mask_net_layer.ln_emb.*                 LayerNorm over the group vector
    mask_net_layer.mask_blocks.<i>.mask_generator.0.*  Linear: raw vector ->
                                                       aggregation
    mask_net_layer.mask_blocks.<i>.mask_generator.2.*  Linear -> block input
    mask_net_layer.mask_blocks.<i>.ffn.0.*  Linear (with bias)
    mask_net_layer.mask_blocks.<i>.ffn.1.*  LayerNorm; then ReLU
    mask_net_layer.top_mlp.mlp.<j>.perceptron.0.*  Linear (no bias with
        use_bn), .1.* BatchNorm1d with use_bn; then the activation (after
        the last layer too)
    output_linear.weight                    Linear without bias -> the logit

The group vector V is the first feature group's features in its order: an id
feature's pooled embedding, a raw feature's value_dim values. The blocks mask
ln_emb(V) (the first serial block; every parallel one) with masks that read
the raw V. Widths come from the tensor shapes (TorchEasyRec's reduction_ratio
overrides aggregation_dim unless it is 0, and truncates). The score is
sigmoid(logit) (binary_cross_entropy, num_class 1).

Feature generation (hashing, vocabularies, raw-feature normalizers) happens
outside the model, in TorchEasyRec's feature generator: requests carry the
ids and values it produces; ids are rows of the tables (IDENTITY).
"""

import re

import torch

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools import textproto
from masknet_tools.protos import config_pb2



class TorchEasyRecImportError(checkpoints.CheckpointError):
    """The checkpoint or its config cannot be served; the message says why."""




def _only(message, where, allowed):
    """Refuses fields of `message` not in `allowed`, by name."""
    for name in message:
        if name not in allowed:
            raise TorchEasyRecImportError(
                f"{where}.{name} is not supported (supported here: "
                f"{', '.join(sorted(allowed))})")


# Options of an id feature that change what the model computes from its ids
# and that a request cannot express.
_UNSERVED_ID_OPTIONS = ("weighted", "zch", "dynamicemb", "value_dim")


def _features(pipeline):
    """Feature name -> (kind, options) of the pipeline's feature_configs."""
    features = {}
    for feature_config in textproto.all_of(pipeline, "feature_configs"):
        if not isinstance(feature_config, dict):
            raise TorchEasyRecImportError(
                f"feature_configs: expected a message, got {feature_config!r}")
        for kind in feature_config:
            options = textproto.first(feature_config, kind, kind=dict)
            name = textproto.first(options, "feature_name", kind=str)
            features[name] = (kind, options)
    return features


def _table(state, name):
    """(key, table) of the embedding_bags table `name`, removed from state."""
    pattern = re.compile(r"embedding_group\..*\.embedding_bags\." +
                         re.escape(name) + r"\.weight")
    keys = [k for k in state if pattern.fullmatch(k)]
    if len(keys) != 1:
        raise TorchEasyRecImportError(
            f"missing tensor 'embedding_group.emb_impls.__BASE__.ebc."
            f"embedding_bags.{name}.weight' (the table of an id feature)"
            if not keys else f"several tables named {name!r}: {keys}")
    return keys[0], state[keys[0]]


def import_masknet(state_dict, pipeline_text, max_ids=1):
    """A TorchEasyRec MaskNet rank model as our model.

    Args:
      state_dict: the model's state_dict, without TrainWrapper's "model."
        prefix.
      pipeline_text: the pipeline config (protobuf text) it was trained with.
      max_ids: the most ids a request may send for one id feature. A feature
        may also send none (its pooled embedding is then zeros, as an empty
        bag is in TorchEasyRec).

    Returns:
      (model_config, weights, notes).

    Raises:
      TorchEasyRecImportError: an option we cannot serve (named), a missing
        or unexpected tensor, or a config that is not protobuf text.
    """
    try:
        return _import_masknet(state_dict, pipeline_text, max_ids)
    except textproto.TextProtoError as e:
        raise TorchEasyRecImportError(f"pipeline config: {e}") from None


def _import_masknet(state_dict, pipeline_text, max_ids):
    """The body of import_masknet."""
    state = checkpoints.without_counters(state_dict)
    pipeline = textproto.parse(pipeline_text)
    model = textproto.first(pipeline, "model_config", kind=dict)
    if model is None:
        raise TorchEasyRecImportError("the config has no model_config")
    mask_net = textproto.first(model, "mask_net", kind=dict)
    if mask_net is None:
        other = [k for k in model if k not in ("feature_groups", "num_class",
                                               "losses", "metrics")]
        raise TorchEasyRecImportError(
            "model_config is not a MaskNet rank model (mask_net)" +
            (f": it has {other[0]}" if other else ""))
    module = textproto.first(mask_net, "mask_net_module", {}, kind=dict)
    _only(module, "mask_net.mask_net_module",
          {"n_mask_blocks", "mask_block", "top_mlp", "use_parallel"})
    num_class = textproto.first(model, "num_class", 1, kind=int)
    losses = [
        name for loss in textproto.all_of(model, "losses")
        for name in (loss if isinstance(loss, dict) else [str(loss)])
    ]
    if num_class != 1 or any(l != "binary_cross_entropy" for l in losses):
        raise TorchEasyRecImportError(
            "only binary classification is supported (num_class 1, "
            f"binary_cross_entropy); the config has num_class {num_class} and "
            f"losses {losses or ['(none)']}")
    groups = textproto.all_of(model, "feature_groups")
    if len(groups) != 1:
        raise TorchEasyRecImportError(
            f"model_config has {len(groups)} feature_groups; the MaskNet rank "
            "model reads exactly one")
    group = groups[0]
    if not isinstance(group, dict):
        raise TorchEasyRecImportError(
            f"feature_groups: expected a message, got {group!r}")
    if textproto.first(group, "group_type", "DEEP") != "DEEP":
        raise TorchEasyRecImportError(
            f"feature group {textproto.first(group, 'group_name')!r}: only a "
            "DEEP group is supported")
    if textproto.all_of(group, "sequence_groups") or textproto.all_of(
            group, "sequence_encoders"):
        raise TorchEasyRecImportError(
            "sequence_groups and sequence_encoders are not supported")

    # Fields: the group's features in order.
    features = _features(pipeline)
    fields, weights, tables = [], {}, set()
    for name in textproto.all_of(group, "feature_names"):
        if not isinstance(name, str) or name not in features:
            raise TorchEasyRecImportError(
                f"feature {name!r} of the group has no feature_configs entry")
        kind, options = features[name]
        where = f"{kind} {name!r}"
        if not config.valid_name(name):
            raise TorchEasyRecImportError(
                f"{where}: a field name must be 1-128 letters, digits or '_'")
        if kind == "id_feature":
            for option in _UNSERVED_ID_OPTIONS:
                if textproto.first(options, option) not in (None, False):
                    raise TorchEasyRecImportError(
                        f"{where}: {option} is not supported")
            table_name = textproto.first(options,
                                         "embedding_name",
                                         f"{name}_emb",
                                         kind=str)
            key, table = _table(state, table_name)
            if table.dim() != 2:
                raise TorchEasyRecImportError(
                    f"tensor {key!r} has shape {list(table.shape)}, expected "
                    "[rows, embedding_dim]")
            tables.add(key)  # shared tables are read by several features
            pooling = str(textproto.first(options, "pooling", "sum")).lower()
            if pooling not in ("sum", "mean"):
                raise TorchEasyRecImportError(
                    f"{where}: pooling {pooling!r} is not sum or mean")
            fields.append(
                config.categorical_field(
                    name,
                    config_pb2.CANDIDATE,
                    table.shape[0],
                    table.shape[1],
                    bucket_rule=config_pb2.IDENTITY,
                    pooling=config_pb2.SUM
                    if pooling == "sum" else config_pb2.MEAN,
                    max_ids=max_ids,
                    allow_empty=True))
            weights[f"fields.{name}.embedding"] = table
        elif kind == "raw_feature":
            for unsupported in ("boundaries", "mlp", "autodis"):
                if textproto.all_of(options, unsupported):
                    raise TorchEasyRecImportError(
                        f"{where}: {unsupported} is not supported (only raw "
                        "values passed straight to the model)")
            fields.append(
                config.dense_field(
                    name, config_pb2.CANDIDATE,
                    textproto.first(options, "value_dim", 1, kind=int)))
        else:
            raise TorchEasyRecImportError(
                f"{where}: {kind} is not supported (id_feature and "
                "raw_feature are)")
    for key in tables:
        del state[key]

    # The MaskNet.
    use_parallel = textproto.first(module, "use_parallel", True, kind=bool)
    weights["masknet.input_norm.weight"] = checkpoints.take(state,
                                                 "mask_net_layer.ln_emb.weight")
    weights["masknet.input_norm.bias"] = checkpoints.take(state,
                                               "mask_net_layer.ln_emb.bias")
    blocks = []
    while f"mask_net_layer.mask_blocks.{len(blocks)}.ffn.0.weight" in state:
        k = len(blocks)
        both = ("weight", "bias")
        blocks.append(
            checkpoints.take_mask_block(
                state,
                weights,
                k,
                f"mask_net_layer.mask_blocks.{k}.",
                [("mask_generator.0", "mask.aggregation", both),
                 ("mask_generator.2", "mask.projection", both),
                 ("ffn.0", "hidden", both), ("ffn.1", "layer_norm", both)],
                hidden_bias=True,
                activation=config_pb2.RELU))
    if not blocks:
        raise TorchEasyRecImportError(
            "missing tensors mask_net_layer.mask_blocks.0.*")
    expected_blocks = textproto.first(module, "n_mask_blocks", kind=int)
    if expected_blocks is not None and expected_blocks != len(blocks):
        raise TorchEasyRecImportError(
            f"mask_net_module.n_mask_blocks is {expected_blocks} but the "
            f"checkpoint has {len(blocks)} mask blocks")
    masknet = config.masknet(
        config_pb2.PARALLEL if use_parallel else config_pb2.SERIAL,
        blocks,
        input_norm=config_pb2.LAYER_NORM,
        input_norm_eps=checkpoints.TORCH_DEFAULT_EPS,
        mask_input=config_pb2.MASK_INPUT_RAW)

    # The top MLP (an activation after every layer) and the output layer.
    top_mlp = textproto.first(module, "top_mlp", kind=dict)
    if top_mlp is None:
        raise TorchEasyRecImportError("mask_net_module.top_mlp is missing")
    _only(top_mlp, "top_mlp",
          {"hidden_units", "activation", "use_bn", "dropout_ratio", "bias"})
    activation = textproto.first(top_mlp, "activation", "nn.ReLU")
    if activation != "nn.ReLU":
        raise TorchEasyRecImportError(
            f"top_mlp.activation {activation!r} is not supported (nn.ReLU is)")
    use_bn = textproto.first(top_mlp, "use_bn", False, kind=bool)
    mlp = []
    for j, size in enumerate(textproto.all_of(top_mlp, "hidden_units")):
        if not isinstance(size, int) or isinstance(size, bool):
            raise TorchEasyRecImportError(
                f"top_mlp.hidden_units: {size!r} is not an integer")
        source = f"mask_net_layer.top_mlp.mlp.{j}.perceptron."
        weights[f"mlp.{j}.weight"] = checkpoints.take(state, source + "0.weight")
        bias = state.pop(source + "0.bias", None)
        weights[f"mlp.{j}.bias"] = bias if bias is not None else torch.zeros(
            size)
        batch_norm = None
        if use_bn:
            batch_norm = config.batch_norm(checkpoints.TORCH_DEFAULT_EPS, affine=True)
            for tensor in ("running_mean", "running_var", "weight", "bias"):
                weights[f"mlp.{j}.batch_norm.{tensor}"] = checkpoints.take(
                    state, f"{source}1.{tensor}")
        mlp.append(config.dense_layer(size, config_pb2.RELU, batch_norm))
    output = checkpoints.take(state, "output_linear.weight")
    weights["tasks.probs.0.weight"] = output
    weights["tasks.probs.0.bias"] = state.pop("output_linear.bias",
                                              torch.zeros(output.shape[0]))
    checkpoints.refuse_leftovers(state)
    model_config = config_pb2.ModelConfig(
        description="TorchEasyRec MaskNet rank model (imported)",
        fields=fields,
        masknet=masknet,
        mlp=mlp,
        tasks=[config.task_head("probs")])
    model_config.metadata["imported_from"] = "torcheasyrec"
    return model_config, weights, []
