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

The group vector V is the feature group's features in its order: an id
feature's pooled embedding, a raw feature's value_dim values. The blocks mask
ln_emb(V) (the first serial block; every parallel one) with masks that read
the raw V. Without top_mlp the blocks' output goes straight to output_linear
(TorchEasyRec's MaskNetModule allows it; its MaskNet rank model, at the
commit of our fixtures, fails to build without one). The score is
sigmoid(logit) (binary_cross_entropy, num_class 1).

The architecture comes from the pipeline config alone, read as TorchEasyRec
reads it (tzrec/protos/module.proto's defaults; a MaskBlock's
reduction_ratio, 1.0 unless set, overrides aggregation_dim unless it is 0,
and int(block input x ratio) is the aggregation width; a table's rows from
num_buckets, hash_bucket_size, vocab_list or vocab_dict as its IdFeature
counts them): `expected_tensors` lists every tensor the checkpoint must
hold, with its shape, and the checkpoint is compared with it in one place.

Feature generation (hashing, vocabularies, raw-feature normalizers) happens
outside the model, in TorchEasyRec's feature generator: requests carry the
ids and values it produces; ids are rows of the tables (IDENTITY).
"""

import torch

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools import textproto
from masknet_tools.checkpoints import ExpectedTensors
from masknet_tools.protos import config_pb2

EPS = checkpoints.TORCH_DEFAULT_EPS
_TABLES = "embedding_group.emb_impls.__BASE__.ebc.embedding_bags."


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
_UNSERVED_ID_OPTIONS = ("weighted", "zch", "dynamicemb")
# Options of an id feature that make its table's rows.
_ROWS = ("hash_bucket_size", "num_buckets", "vocab_list", "vocab_dict",
         "vocab_file")


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


def _rows(options, where):
    """An id feature's table rows, as its IdFeature.num_embeddings counts
    them; a str (a width the tensor gives) for a vocab_file."""
    for key in ("hash_bucket_size", "num_buckets"):
        value = textproto.first(options, key, kind=int)
        if value is not None:
            if value < 1:
                raise TorchEasyRecImportError(f"{where}: {key} {value} is not "
                                              "positive")
            return value
    vocab = textproto.all_of(options, "vocab_list")
    default_bucket = textproto.first(options, "default_bucketize_value")
    if vocab:
        return len(vocab) + (0 if default_bucket is not None else 2)
    entries = textproto.all_of(options, "vocab_dict")
    if entries:
        values = []
        for entry in entries:
            value = entry.get("value", [None])[0] if isinstance(entry,
                                                                dict) else None
            if isinstance(value, bool) or not isinstance(value, int):
                raise TorchEasyRecImportError(f"{where}: vocab_dict entry "
                                              f"{entry!r} has no integer value")
            values.append(value)
        return max(values) + 1
    if textproto.first(options, "vocab_file") is not None:
        return f"rows of {where}"
    raise TorchEasyRecImportError(
        f"{where}: no hash_bucket_size, num_buckets, vocab_list, vocab_dict "
        "or vocab_file (TorchEasyRec cannot build its table)")


class _Field:
    """One feature of the group: an id feature's table or a raw feature."""

    def __init__(self, name, kind, options, tables):
        where = f"{kind} {name!r}"
        self.name, self.kind = name, kind
        if not config.valid_name(name):
            raise TorchEasyRecImportError(
                f"{where}: a field name must be 1-128 letters, digits or '_'")
        if kind == "id_feature":
            for option in _UNSERVED_ID_OPTIONS:
                if textproto.first(options, option) not in (None, False):
                    raise TorchEasyRecImportError(
                        f"{where}: {option} is not supported")
            self.dim = textproto.first(options, "embedding_dim", kind=int)
            if self.dim is None or self.dim < 1:
                raise TorchEasyRecImportError(
                    f"{where}: embedding_dim is missing or not positive")
            self.table = textproto.first(options, "embedding_name",
                                         f"{name}_emb", kind=str)
            shape = (_rows(options, where), self.dim)
            if self.table in tables and tables[self.table] != shape:
                raise TorchEasyRecImportError(
                    f"{where}: shares table {self.table!r} but its rows and "
                    f"embedding_dim {list(shape)} differ from "
                    f"{list(tables[self.table])}")
            tables[self.table] = shape
            self.shape = shape
            pooling = str(textproto.first(options, "pooling", "sum")).lower()
            if pooling not in ("sum", "mean"):
                raise TorchEasyRecImportError(
                    f"{where}: pooling {pooling!r} is not sum or mean")
            self.pooling = config_pb2.SUM if pooling == "sum" else \
                config_pb2.MEAN
        elif kind == "raw_feature":
            for unsupported in ("boundaries", "mlp", "autodis"):
                if textproto.all_of(options, unsupported):
                    raise TorchEasyRecImportError(
                        f"{where}: {unsupported} is not supported (only raw "
                        "values passed straight to the model)")
            self.dim = textproto.first(options, "value_dim", 1, kind=int)
            if self.dim < 1:
                raise TorchEasyRecImportError(f"{where}: value_dim {self.dim} "
                                              "is not positive")
        else:
            raise TorchEasyRecImportError(
                f"{where}: {kind} is not supported (id_feature and "
                "raw_feature are)")


class _MaskNet:
    """What the pipeline config says the MaskNet rank model is."""

    def __init__(self, pipeline):
        model = textproto.first(pipeline, "model_config", kind=dict)
        if model is None:
            raise TorchEasyRecImportError("the config has no model_config")
        mask_net = textproto.first(model, "mask_net", kind=dict)
        if mask_net is None:
            other = [k for k in model if k not in (
                "feature_groups", "num_class", "losses", "metrics")]
            raise TorchEasyRecImportError(
                "model_config is not a MaskNet rank model (mask_net)" +
                (f": it has {other[0]}" if other else ""))
        for option in ("variational_dropout", "embedding_name_suffix"):
            if textproto.first(model, option) is not None:
                raise TorchEasyRecImportError(
                    f"model_config.{option} is not supported (it changes the "
                    "embeddings the model reads)")
        _only(mask_net, "mask_net", {"mask_net_module"})
        module = textproto.first(mask_net, "mask_net_module", kind=dict)
        if module is None:
            raise TorchEasyRecImportError("mask_net.mask_net_module is missing")
        _only(module, "mask_net.mask_net_module",
              {"n_mask_blocks", "mask_block", "top_mlp", "use_parallel"})
        num_class = textproto.first(model, "num_class", 1, kind=int)
        losses = [name for loss in textproto.all_of(model, "losses")
                  for name in (loss if isinstance(loss, dict) else [str(loss)])]
        if num_class != 1 or any(l != "binary_cross_entropy" for l in losses):
            raise TorchEasyRecImportError(
                "only binary classification is supported (num_class 1, "
                f"binary_cross_entropy); the config has num_class {num_class} "
                f"and losses {losses or ['(none)']}")
        self._fields(pipeline, model)
        self.parallel = textproto.first(module, "use_parallel", True,
                                        kind=bool)
        n = textproto.first(module, "n_mask_blocks", kind=int)
        if n is None or n < 1:
            raise TorchEasyRecImportError(
                "mask_net_module.n_mask_blocks is missing or not positive")
        block = textproto.first(module, "mask_block", kind=dict)
        if block is None:
            raise TorchEasyRecImportError("mask_net_module.mask_block is "
                                          "missing")
        _only(block, "mask_block",
              {"reduction_ratio", "aggregation_dim", "hidden_dim"})
        hidden = textproto.first(block, "hidden_dim", kind=int)
        if hidden is None or hidden < 1:
            raise TorchEasyRecImportError(
                "mask_block.hidden_dim is missing or not positive")
        ratio = textproto.first(block, "reduction_ratio", 1.0, kind=float)
        aggregation = textproto.first(block, "aggregation_dim", 0, kind=int)
        # (input width, aggregation width) per block; every block outputs
        # `hidden`.
        self.blocks = []
        for k in range(n):
            width = self.v if self.parallel or k == 0 else hidden
            size = int(width * ratio) if ratio else aggregation
            if size < 1:
                raise TorchEasyRecImportError(
                    f"mask_block: block {k}'s aggregation width is {size} "
                    "(reduction_ratio, else aggregation_dim): TorchEasyRec "
                    "fails to build it")
            self.blocks.append((width, size))
        self.hidden = hidden
        width = hidden * n if self.parallel else hidden
        self.top_mlp = None
        top_mlp = textproto.first(module, "top_mlp", kind=dict)
        if top_mlp is not None:
            _only(top_mlp, "top_mlp", {"hidden_units", "activation", "use_bn",
                                       "dropout_ratio", "bias", "use_ln"})
            if textproto.first(top_mlp, "use_ln", False, kind=bool):
                raise TorchEasyRecImportError(
                    "top_mlp.use_ln is not supported (a LayerNorm in the MLP)")
            activation = textproto.first(top_mlp, "activation", "nn.ReLU")
            if activation != "nn.ReLU":
                raise TorchEasyRecImportError(
                    f"top_mlp.activation {activation!r} is not supported "
                    "(nn.ReLU is)")
            units = textproto.all_of(top_mlp, "hidden_units")
            if not units or any(isinstance(u, bool) or not isinstance(u, int)
                                or u < 1 for u in units):
                raise TorchEasyRecImportError(
                    f"top_mlp.hidden_units {units!r}: expected positive "
                    "integers")
            self.top_mlp = (units,
                            textproto.first(top_mlp, "use_bn", False,
                                            kind=bool),
                            textproto.first(top_mlp, "bias", True, kind=bool))
            width = units[-1]
        self.output_width = width

    def _fields(self, pipeline, model):
        groups = textproto.all_of(model, "feature_groups")
        if len(groups) != 1:
            raise TorchEasyRecImportError(
                f"model_config has {len(groups)} feature_groups; this import "
                "serves exactly one (TorchEasyRec's MaskNet reads the first "
                "and builds the others' tables too)")
        group = groups[0]
        if not isinstance(group, dict):
            raise TorchEasyRecImportError(
                f"feature_groups: expected a message, got {group!r}")
        _only(group, "feature_groups", {"group_name", "feature_names",
                                        "group_type"})
        if textproto.first(group, "group_type", "DEEP") != "DEEP":
            raise TorchEasyRecImportError(
                f"feature group {textproto.first(group, 'group_name')!r}: "
                "only a DEEP group is supported")
        features = _features(pipeline)
        self.fields, self.tables = [], {}
        for name in textproto.all_of(group, "feature_names"):
            if not isinstance(name, str) or name not in features:
                raise TorchEasyRecImportError(
                    f"feature {name!r} of the group has no feature_configs "
                    "entry")
            kind, options = features[name]
            self.fields.append(_Field(name, kind, options, self.tables))
        if not self.fields:
            raise TorchEasyRecImportError("the feature group has no features")
        self.v = sum(f.dim for f in self.fields)


def expected_tensors(masknet, name_prefix=""):
    """The checkpoint's tensors and shapes that the config implies."""
    spec = ExpectedTensors(name_prefix)
    for table, shape in masknet.tables.items():
        spec.add(f"{_TABLES}{table}.weight", shape)
    spec.add_layer_norm("mask_net_layer.ln_emb.", masknet.v)
    for k, (width, aggregation) in enumerate(masknet.blocks):
        block = f"mask_net_layer.mask_blocks.{k}."
        spec.add_linear(block + "mask_generator.0.", masknet.v, aggregation)
        spec.add_linear(block + "mask_generator.2.", aggregation, width)
        spec.add_linear(block + "ffn.0.", width, masknet.hidden)
        spec.add_layer_norm(block + "ffn.1.", masknet.hidden)
    if masknet.top_mlp is not None:
        units, use_bn, bias = masknet.top_mlp
        inputs = masknet.hidden * len(masknet.blocks) if masknet.parallel \
            else masknet.hidden
        for j, size in enumerate(units):
            layer = f"mask_net_layer.top_mlp.mlp.{j}.perceptron."
            spec.add_linear(layer + "0.", inputs, size,
                            bias=bias and not use_bn)
            if use_bn:
                spec.add_batch_norm(layer + "1.", size, affine=True)
            inputs = size
    spec.add_linear("output_linear.", masknet.output_width, 1, bias=False)
    return spec


def import_masknet(state_dict, pipeline_text, max_ids=1, name_prefix=""):
    """A TorchEasyRec MaskNet rank model as our model.

    Args:
      state_dict: the model's state_dict, without TrainWrapper's "model."
        prefix.
      pipeline_text: the pipeline config (protobuf text) it was trained with.
      max_ids: the most ids a request may send for one id feature. A feature
        may also send none (its pooled embedding is then zeros, as an empty
        bag is in TorchEasyRec).
      name_prefix: the prefix the checkpoint file's names had, for messages.

    Returns:
      (model_config, weights, notes).

    Raises:
      TorchEasyRecImportError: an option we cannot serve (named), a config
        that is not protobuf text, or a checkpoint that is not the model the
        config describes (every missing, unexpected and mis-shaped tensor
        named by its checkpoint name).
    """
    try:
        masknet = _MaskNet(textproto.parse(pipeline_text))
    except textproto.TextProtoError as e:
        raise TorchEasyRecImportError(f"pipeline config: {e}") from None
    expected_tensors(masknet, name_prefix).match(state_dict)
    state = state_dict

    fields, weights = [], {}
    for field in masknet.fields:
        if field.kind == "raw_feature":
            fields.append(config.dense_field(field.name, config_pb2.CANDIDATE,
                                             field.dim))
            continue
        table = state[f"{_TABLES}{field.table}.weight"]
        fields.append(config.categorical_field(
            field.name, config_pb2.CANDIDATE, table.shape[0], field.dim,
            bucket_rule=config_pb2.IDENTITY, pooling=field.pooling,
            max_ids=max_ids, allow_empty=True))
        weights[f"fields.{field.name}.embedding"] = table
    weights["masknet.input_norm.weight"] = state["mask_net_layer.ln_emb.weight"]
    weights["masknet.input_norm.bias"] = state["mask_net_layer.ln_emb.bias"]
    blocks = []
    for k, (_, aggregation) in enumerate(masknet.blocks):
        source, target = f"mask_net_layer.mask_blocks.{k}.", \
            f"masknet.blocks.{k}."
        for theirs, ours in (("mask_generator.0", "mask.aggregation"),
                             ("mask_generator.2", "mask.projection"),
                             ("ffn.0", "hidden"), ("ffn.1", "layer_norm")):
            for tensor in ("weight", "bias"):
                weights[f"{target}{ours}.{tensor}"] = state[
                    f"{source}{theirs}.{tensor}"]
        blocks.append(config.mask_block(
            output_size=masknet.hidden, aggregation_size=aggregation,
            hidden_bias=True, activation=config_pb2.RELU, layer_norm_eps=EPS))
    mlp = []
    if masknet.top_mlp is not None:
        units, use_bn, bias = masknet.top_mlp
        for j, size in enumerate(units):
            layer = f"mask_net_layer.top_mlp.mlp.{j}.perceptron."
            weights[f"mlp.{j}.weight"] = state[layer + "0.weight"]
            weights[f"mlp.{j}.bias"] = state[layer + "0.bias"] if (
                bias and not use_bn) else torch.zeros(size)
            batch_norm = None
            if use_bn:
                batch_norm = config.batch_norm(EPS, affine=True)
                for tensor in ("running_mean", "running_var", "weight",
                               "bias"):
                    weights[f"mlp.{j}.batch_norm.{tensor}"] = state[
                        f"{layer}1.{tensor}"]
            mlp.append(config.dense_layer(size, config_pb2.RELU, batch_norm))
    weights["tasks.probs.0.weight"] = state["output_linear.weight"]
    weights["tasks.probs.0.bias"] = torch.zeros(1)
    model_config = config_pb2.ModelConfig(
        description="TorchEasyRec MaskNet rank model (imported)",
        fields=fields,
        masknet=config.masknet(
            config_pb2.PARALLEL if masknet.parallel else config_pb2.SERIAL,
            blocks, input_norm=config_pb2.LAYER_NORM, input_norm_eps=EPS,
            mask_input=config_pb2.MASK_INPUT_RAW),
        mlp=mlp,
        tasks=[config.task_head("probs")])
    model_config.metadata["imported_from"] = "torcheasyrec"
    return model_config, weights, []
