"""Imports a MaskNet of FuxiCTR (model_zoo/MaskNet).

The architecture comes from model_config.yaml and feature_map.json alone,
read as FuxiCTR's MaskNet, FeatureEmbedding and MLP_Block read them: from
them `expected_tensors` lists every tensor the checkpoint must hold, with its
shape (FuxiCTR's configuration gives every width), and the checkpoint is
compared with that list in one place before anything is imported.

FuxiCTR's MaskNet, under its tensor names (F fields, each embedded in d =
embedding_dim, V = the F embeddings concatenated, F x d wide):

    embedding_layer.embedding_layer.embedding_layers.<feature>.weight
        categorical and sequence features: nn.Embedding [vocab_size, d]
        (padding_idx rows are zeros; a share_embedding feature names an
        earlier feature's table, which the state_dict holds under both
        names); numeric features: nn.Linear(1, d, bias=False) [d, 1], the
        value times a learned vector
    emb_norm.<i>.*          emb_layernorm: a LayerNorm per field (eps 1e-5),
                            normalizing what the blocks mask, never the masks'
                            input
    mask_net.mask_blocks.<k>.mask_layer.0.*   Linear: raw V -> int(h x r)
    mask_net.mask_blocks.<k>.mask_layer.2.*   Linear -> h, the block's input
    mask_net.mask_blocks.<k>.hidden_layer.0.weight   Linear without bias
    mask_net.mask_blocks.<k>.hidden_layer.1.*  LayerNorm (net_layernorm);
                            then the activation, then dropout
    SerialMaskNet: a block per dnn_hidden_units entry (h: the previous
                     entry, V for the first); mask_net.fc.0.*  Linear -> 1,
                     then Sigmoid
    ParallelMaskNet: parallel_num_blocks blocks of parallel_block_dim (h: V);
                     mask_net.dnn.mlp.<j>.*  MLP_Block: Linear, activation,
                     [Dropout] per dnn_hidden_units entry; Linear -> 1;
                     Sigmoid

V is the features of feature_map.json in order ("meta" features are not
model inputs). The score is y_pred, the sigmoid of the last Linear
(task: binary_classification). Feature processing -- vocabularies (ids are
rows: 0 padding, vocab_size - 1 out of vocabulary), fill_na, numeric
normalizers -- happens in FuxiCTR's FeatureProcessor, before the model:
requests carry what it produces. A sequence is sent without its padding (a
FuxiCTR mean pools over the non-padding ids).
"""

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools.checkpoints import ExpectedTensors
from masknet_tools.protos import config_pb2

EPS = checkpoints.TORCH_DEFAULT_EPS
_EMBEDDINGS = "embedding_layer.embedding_layer.embedding_layers."
# What FuxiCTR's MaskNet reads from its parameters to build the model.
_ARCHITECTURE = {
    "model", "task", "embedding_dim", "dnn_hidden_units",
    "dnn_hidden_activations", "model_type", "parallel_num_blocks",
    "parallel_block_dim", "reduction_ratio", "emb_layernorm", "net_layernorm",
    "net_dropout", "use_features", "feature_specs"
}
# Parameters of training, evaluation and data loading: no part of the model.
_TRAINING = {
    "dataset_id", "loss", "metrics", "optimizer", "learning_rate",
    "embedding_regularizer", "net_regularizer", "batch_size", "epochs",
    "shuffle", "seed", "monitor", "monitor_mode", "model_root", "num_workers",
    "verbose", "early_stop_patience", "pickle_feature_encoder",
    "save_best_only", "eval_steps", "debug_mode", "group_id", "feature_config",
    "gpu", "model_id", "data_root", "data_format", "train_data", "valid_data",
    "test_data", "min_categr_count", "data_block_size", "streaming",
    "rebuild_dataset", "feature_cols", "label_col", "reduce_lr_on_plateau",
    "max_gradient_norm", "embedding_initializer"
}
_POOLINGS = {
    "layers.MaskedAveragePooling()": config_pb2.MEAN,
    "layers.MaskedSumPooling()": config_pb2.SUM,
}


class FuxiCTRImportError(checkpoints.CheckpointError):
    """The checkpoint or its configuration cannot be served."""


def _experiment(yaml_config, expid):
    """The MaskNet experiment's parameters: Base, then the experiment's."""
    if not isinstance(yaml_config, dict):
        raise FuxiCTRImportError(
            "the model config is not a YAML mapping of experiments")
    if "model" in yaml_config:  # one experiment's parameters alone
        return dict(yaml_config)
    experiments = {
        name: params
        for name, params in yaml_config.items()
        if isinstance(params, dict) and params.get("model") == "MaskNet"
    }
    if expid is not None:
        if expid not in experiments:
            raise FuxiCTRImportError(
                f"the model config has no MaskNet experiment {expid!r} "
                f"(it has: {', '.join(sorted(experiments)) or 'none'})")
        chosen = expid
    elif len(experiments) == 1:
        chosen = next(iter(experiments))
    else:
        raise FuxiCTRImportError(
            "the model config has " +
            (f"{len(experiments)} MaskNet experiments "
             f"({', '.join(sorted(experiments))}): choose one with --expid"
             if experiments else "no MaskNet experiment (model: MaskNet)"))
    base = yaml_config.get("Base") or {}
    if not isinstance(base, dict):
        raise FuxiCTRImportError("Base: expected a mapping")
    params = dict(base)
    params.update(experiments[chosen])
    return params


def _positive_int(params, key, default):
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FuxiCTRImportError(
            f"model config: {key} {value!r} is not a positive integer")
    return value


def _bool(params, key, default):
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise FuxiCTRImportError(f"model config: {key} {value!r} is not true "
                                 "or false")
    return value


def _per_layer(params, key, default, count, parallel, check):
    """A value or per-layer list of dnn_hidden_activations/net_dropout, as
    `count` values; ParallelMaskNet takes only one (FuxiCTR's own
    ParallelMaskNet fails on a list)."""
    value = params.get(key, default)
    if isinstance(value, list):
        if parallel:
            raise FuxiCTRImportError(
                f"model config: {key} as a list is not a model FuxiCTR's "
                "ParallelMaskNet can build (it passes the list to every "
                "block)")
        if len(value) != count:
            raise FuxiCTRImportError(
                f"model config: {key} has {len(value)} entries for "
                f"{count} dnn_hidden_units")
        values = value
    else:
        values = [value] * count
    for v in values:
        check(v)
    return values


def _check_relu(value):
    if not isinstance(value, str) or value.lower() != "relu":
        raise FuxiCTRImportError(
            f"model config: dnn_hidden_activations {value!r} is not supported "
            "(relu is)")


def _check_dropout(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0 <= value < 1:
        raise FuxiCTRImportError(
            f"model config: net_dropout {value!r} is not a rate in [0, 1)")


class _Feature:
    """One model input of feature_map.json."""

    def __init__(self, name, spec, embedding_dim, tables):
        where = f"feature {name!r} ({spec.get('type')})"
        self.name, self.kind = name, spec.get("type")
        if not config.valid_name(name):
            raise FuxiCTRImportError(
                f"{where}: a field name must be 1-128 letters, digits or '_'")
        if self.kind not in ("categorical", "numeric", "sequence"):
            raise FuxiCTRImportError(
                f"{where}: type {self.kind!r} is not supported (categorical, "
                "numeric, sequence)")
        if "pretrained_emb" in spec:
            raise FuxiCTRImportError(
                f"{where}: pretrained embeddings are not supported")
        if spec.get("embedding_dim", embedding_dim) != embedding_dim:
            raise FuxiCTRImportError(
                f"{where}: embedding_dim {spec['embedding_dim']!r} differs "
                f"from the model's {embedding_dim}: FuxiCTR's MaskNet stacks "
                "the fields' embeddings and fails")
        self.scope = (config_pb2.CONTEXT if spec.get("source") == "user" else
                      config_pb2.CANDIDATE)
        encoder = spec.get("feature_encoder")
        self.pooling = None
        if self.kind == "sequence":
            if encoder is None:
                raise FuxiCTRImportError(
                    f"{where}: no feature_encoder: FuxiCTR does not pool the "
                    "sequence and its model fails")
            self.pooling = _POOLINGS.get(
                "".join(encoder.split()) if isinstance(encoder, str) else None)
            if self.pooling is None:
                raise FuxiCTRImportError(
                    f"{where}: feature_encoder {encoder!r} is not supported "
                    f"({', '.join(_POOLINGS)})")
            self.max_len = spec.get("max_len", 1)
            if isinstance(self.max_len, bool) or not isinstance(
                    self.max_len, int) or self.max_len < 1:
                raise FuxiCTRImportError(
                    f"{where}: max_len {self.max_len!r} is not a positive "
                    "integer")
        elif encoder is not None:
            raise FuxiCTRImportError(
                f"{where}: feature_encoder {encoder!r} is not supported (it "
                "transforms the embedding; only sequences' pooling is)")
        # The table FuxiCTR builds: an earlier feature's when shared.
        shared = spec.get("share_embedding")
        self.table = shared if shared in tables else name
        if self.kind == "numeric":
            self.shape = (embedding_dim, 1)
        else:
            vocab = spec.get("vocab_size")
            if isinstance(vocab, bool) or not isinstance(vocab, int) or \
                    vocab < 1:
                raise FuxiCTRImportError(
                    f"{where}: vocab_size {vocab!r} is not a positive integer")
            self.shape = tables.get(self.table, (vocab, embedding_dim))
        tables.setdefault(self.table, self.shape)


def _features(feature_map, embedding_dim):
    specs = feature_map.get("features") if isinstance(feature_map,
                                                      dict) else None
    if not isinstance(specs, list):
        raise FuxiCTRImportError(
            "the feature map has no 'features' list (is it FuxiCTR's "
            "feature_map.json?)")
    features, tables = [], {}
    for entry in specs:
        if not isinstance(entry, dict) or len(entry) != 1 or not isinstance(
                next(iter(entry.values())), dict):
            raise FuxiCTRImportError(
                f"feature map entry {entry!r} is not {{name: {{spec}}}}")
        name, spec = next(iter(entry.items()))
        if spec.get("type") != "meta":
            features.append(_Feature(name, spec, embedding_dim, tables))
    if not features:
        raise FuxiCTRImportError("the feature map has no features")
    return features


class _MaskNet:
    """What the parameters say FuxiCTR's MaskNet is."""

    def __init__(self, params, feature_map):
        for option in ("use_features", "feature_specs"):
            if params.get(option):
                raise FuxiCTRImportError(
                    f"model config option {option!r} is not supported: it "
                    "changes the features or their encoders (write them into "
                    "feature_map.json instead)")
        if params.get("task", "binary_classification") != \
                "binary_classification":
            raise FuxiCTRImportError(
                f"task {params['task']!r} is not supported "
                "(binary_classification)")
        self.model_type = params.get("model_type", "SerialMaskNet")
        if self.model_type not in ("SerialMaskNet", "ParallelMaskNet"):
            raise FuxiCTRImportError(
                f"model_type {self.model_type!r} is not SerialMaskNet or "
                "ParallelMaskNet")
        self.parallel = self.model_type == "ParallelMaskNet"
        self.d = _positive_int(params, "embedding_dim", 10)
        self.hidden = params.get("dnn_hidden_units", [64, 64, 64])
        if not isinstance(self.hidden, list) or any(
                isinstance(h, bool) or not isinstance(h, int) or h < 1
                for h in self.hidden):
            raise FuxiCTRImportError(
                f"model config: dnn_hidden_units {self.hidden!r} is not a "
                "list of positive integers")
        if not self.parallel and not self.hidden:
            raise FuxiCTRImportError(
                "model config: a SerialMaskNet with dnn_hidden_units [] has "
                "no mask blocks (a linear model of the embeddings), not a "
                "MaskNet this server runs")
        _per_layer(params, "dnn_hidden_activations", "ReLU",
                   len(self.hidden) if not self.parallel else 1,
                   self.parallel, _check_relu)
        self.dropout = _per_layer(params, "net_dropout", 0,
                                  len(self.hidden) or 1, self.parallel,
                                  _check_dropout)
        if self.parallel:
            self.dropout = self.dropout[:1] * len(self.hidden)
        ratio = params.get("reduction_ratio", 1)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or \
                ratio <= 0:
            raise FuxiCTRImportError(
                f"model config: reduction_ratio {ratio!r} is not a positive "
                "number")
        self.emb_layernorm = _bool(params, "emb_layernorm", True)
        self.net_layernorm = _bool(params, "net_layernorm", True)
        self.features = _features(feature_map, self.d)
        v = len(self.features) * self.d
        # (h, output) per block: h is what it masks, int(h x r) its
        # aggregation width.
        if self.parallel:
            self.blocks = [(v, _positive_int(params, "parallel_block_dim", 64))
                           ] * _positive_int(params, "parallel_num_blocks", 1)
        else:
            widths = [v] + self.hidden
            self.blocks = list(zip(widths[:-1], widths[1:]))
        self.aggregation = []
        for k, (h, _) in enumerate(self.blocks):
            if int(h * ratio) < 1:
                raise FuxiCTRImportError(
                    f"model config: reduction_ratio {ratio} makes block {k}'s "
                    f"mask layer int({h} × {ratio}) = 0 wide (FuxiCTR fails "
                    "to build it)")
            self.aggregation.append(int(h * ratio))
        self.v = v
        labels = feature_map.get("labels")
        label = labels[0] if isinstance(labels, list) and labels else None
        self.task = label if isinstance(label, str) and config.valid_name(
            label) else "score"


def expected_tensors(masknet, name_prefix=""):
    """The checkpoint's tensors and shapes that the configuration implies."""
    spec = ExpectedTensors(name_prefix)
    for feature in masknet.features:
        spec.add(f"{_EMBEDDINGS}{feature.name}.weight", feature.shape)
    if masknet.emb_layernorm:
        for i in range(len(masknet.features)):
            spec.add_layer_norm(f"emb_norm.{i}.", masknet.d)
    for k, ((h, output), aggregation) in enumerate(
            zip(masknet.blocks, masknet.aggregation)):
        block = f"mask_net.mask_blocks.{k}."
        spec.add_linear(block + "mask_layer.0.", masknet.v, aggregation)
        spec.add_linear(block + "mask_layer.2.", aggregation, h)
        spec.add_linear(block + "hidden_layer.0.", h, output, bias=False)
        if masknet.net_layernorm:
            spec.add_layer_norm(block + "hidden_layer.1.", output)
    for prefix, inputs, outputs in _output_layers(masknet):
        spec.add_linear(prefix, inputs, outputs)
    return spec


def _output_layers(masknet):
    """(prefix, inputs, outputs) of the Linears after the blocks, the logit
    last: SerialMaskNet's fc, or ParallelMaskNet's MLP_Block."""
    if not masknet.parallel:
        return [("mask_net.fc.0.", masknet.blocks[-1][1], 1)]
    layers, index = [], 0
    inputs = sum(output for _, output in masknet.blocks)
    for size, dropout in zip(masknet.hidden, masknet.dropout):
        layers.append((f"mask_net.dnn.mlp.{index}.", inputs, size))
        index += 2 + (dropout > 0)  # Linear, ReLU, [Dropout]
        inputs = size
    layers.append((f"mask_net.dnn.mlp.{index}.", inputs, 1))
    return layers


def import_masknet(state_dict, yaml_config, feature_map, expid=None,
                   name_prefix=""):
    """A FuxiCTR MaskNet as our model.

    Args:
      state_dict: the model's state_dict (FuxiCTR saves it bare).
      yaml_config: the parsed model_config.yaml (experiments; Base merged in)
        or one experiment's parameters.
      feature_map: the parsed feature_map.json.
      expid: the experiment, when the YAML holds several MaskNets.
      name_prefix: the prefix the checkpoint file's names had, for messages.

    Returns:
      (model_config, weights, notes).

    Raises:
      FuxiCTRImportError: an option we cannot serve (named), or a checkpoint
        that is not the model the configuration describes (every missing,
        unexpected and mis-shaped tensor named by its checkpoint name).
    """
    params = _experiment(yaml_config, expid)
    notes = []
    unknown = sorted(set(params) - _ARCHITECTURE - _TRAINING)
    if unknown:
        notes.append("model config options FuxiCTR's MaskNet takes and "
                     f"ignores, ignored here too: {', '.join(unknown)}")
    masknet = _MaskNet(params, feature_map)
    expected_tensors(masknet, name_prefix).match(state_dict)
    state = state_dict

    weights, fields = {}, []
    for feature in masknet.features:
        table = state[f"{_EMBEDDINGS}{feature.name}.weight"]
        if feature.kind == "numeric":
            fields.append(config.dense_field(feature.name, feature.scope,
                                             embedding_dim=masknet.d))
            weights[f"fields.{feature.name}.embedding"] = table[:, 0]
            continue
        options = {"bucket_rule": config_pb2.IDENTITY}
        if feature.kind == "sequence":
            options.update(pooling=feature.pooling, max_ids=feature.max_len,
                           allow_empty=True)
        fields.append(config.categorical_field(
            feature.name, feature.scope, table.shape[0], masknet.d, **options))
        weights[f"fields.{feature.name}.embedding"] = table
    input_norm = config_pb2.NORM_NONE
    if masknet.emb_layernorm:
        input_norm = config_pb2.FIELD_LAYER_NORM
        for i, feature in enumerate(masknet.features):
            for tensor in ("weight", "bias"):
                weights[f"masknet.input_norm.{feature.name}.{tensor}"] = state[
                    f"emb_norm.{i}.{tensor}"]
    blocks = []
    for k, ((_, output), aggregation) in enumerate(
            zip(masknet.blocks, masknet.aggregation)):
        source, target = f"mask_net.mask_blocks.{k}.", f"masknet.blocks.{k}."
        modules = [("mask_layer.0", "mask.aggregation", ("weight", "bias")),
                   ("mask_layer.2", "mask.projection", ("weight", "bias")),
                   ("hidden_layer.0", "hidden", ("weight",))]
        if masknet.net_layernorm:
            modules.append(("hidden_layer.1", "layer_norm", ("weight", "bias")))
        for theirs, ours, tensors in modules:
            for tensor in tensors:
                weights[f"{target}{ours}.{tensor}"] = state[
                    f"{source}{theirs}.{tensor}"]
        blocks.append(config.mask_block(
            output_size=output, aggregation_size=aggregation,
            hidden_bias=False, activation=config_pb2.RELU,
            layer_norm_eps=EPS, layer_norm=masknet.net_layernorm))
    output_layers = _output_layers(masknet)
    mlp = []
    for j, (prefix, _, size) in enumerate(output_layers):
        last = j == len(output_layers) - 1
        target = f"tasks.{masknet.task}.0." if last else f"mlp.{j}."
        for tensor in ("weight", "bias"):
            weights[target + tensor] = state[prefix + tensor]
        if not last:
            mlp.append(config.dense_layer(size, config_pb2.RELU))
    model_config = config_pb2.ModelConfig(
        description="FuxiCTR MaskNet (imported)",
        fields=fields,
        masknet=config.masknet(
            config_pb2.PARALLEL if masknet.parallel else config_pb2.SERIAL,
            blocks, input_norm=input_norm, input_norm_eps=EPS,
            mask_input=config_pb2.MASK_INPUT_RAW),
        mlp=mlp,
        tasks=[config.task_head(masknet.task)])
    model_config.metadata["imported_from"] = "fuxictr"
    return model_config, weights, notes
