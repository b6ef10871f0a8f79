"""Imports a MaskNet of FuxiCTR (model_zoo/MaskNet).

FuxiCTR's MaskNet, under its tensor names (F fields, each embedded in d):

    embedding_layer.embedding_layer.embedding_layers.<feature>.weight
        categorical and sequence features: nn.Embedding [vocab_size, d]
        (padding_idx rows are zeros); numeric features: nn.Linear(1, d,
        bias=False) [d, 1], the value times a learned vector
    emb_norm.<i>.*          emb_layernorm: a LayerNorm per field (eps 1e-5),
                            normalizing what the blocks mask, never the masks'
                            input
    mask_net.mask_blocks.<k>.mask_layer.0.*   Linear: raw V -> aggregation
    mask_net.mask_blocks.<k>.mask_layer.2.*   Linear -> block input width
    mask_net.mask_blocks.<k>.hidden_layer.0.weight   Linear without bias
    mask_net.mask_blocks.<k>.hidden_layer.1.*  LayerNorm (net_layernorm);
                            then the activation, then dropout
    SerialMaskNet:   mask_net.fc.0.*  Linear -> 1, then Sigmoid
    ParallelMaskNet: mask_net.dnn.mlp.<j>.*  MLP_Block: Linear, [BatchNorm1d],
                     activation, [Dropout] per hidden unit; Linear -> 1;
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
from masknet_tools.protos import config_pb2

_EMBEDDINGS = "embedding_layer.embedding_layer.embedding_layers."
_MODEL_OPTIONS = {
    "model", "dataset_id", "loss", "metrics", "task", "optimizer",
    "learning_rate", "embedding_regularizer", "net_regularizer", "batch_size",
    "embedding_dim", "dnn_hidden_units", "dnn_hidden_activations", "model_type",
    "parallel_num_blocks", "parallel_block_dim", "reduction_ratio",
    "emb_layernorm", "net_layernorm", "net_dropout", "epochs", "shuffle",
    "seed", "monitor", "monitor_mode", "model_root", "num_workers", "verbose",
    "early_stop_patience", "pickle_feature_encoder", "save_best_only",
    "eval_steps", "debug_mode", "group_id", "use_features", "feature_specs",
    "feature_config", "gpu", "model_id", "data_root", "data_format",
    "train_data", "valid_data", "test_data", "min_categr_count", "data_block_size",
    "streaming", "rebuild_dataset", "feature_cols", "label_col"
}


def _experiment(yaml_config, expid):
    """The MaskNet experiment's parameters: Base, then the experiment's."""
    if not isinstance(yaml_config, dict):
        raise checkpoints.CheckpointError(
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
            raise checkpoints.CheckpointError(
                f"the model config has no MaskNet experiment {expid!r} "
                f"(it has: {', '.join(sorted(experiments)) or 'none'})")
        chosen = expid
    elif len(experiments) == 1:
        chosen = next(iter(experiments))
    else:
        raise checkpoints.CheckpointError(
            "the model config has " +
            (f"{len(experiments)} MaskNet experiments "
             f"({', '.join(sorted(experiments))}): choose one with --expid"
             if experiments else "no MaskNet experiment (model: MaskNet)"))
    base = yaml_config.get("Base") or {}
    if not isinstance(base, dict):
        raise checkpoints.CheckpointError("Base: expected a mapping")
    params = dict(base)
    params.update(experiments[chosen])
    return params


def _activation(params, where):
    activation = params.get("dnn_hidden_activations", "ReLU")
    if isinstance(activation, list):
        if len(set(str(a).lower() for a in activation)) != 1:
            raise checkpoints.CheckpointError(
                f"dnn_hidden_activations {activation}: one activation for "
                "all layers is supported")
        activation = activation[0]
    if str(activation).lower() != "relu":
        raise checkpoints.CheckpointError(
            f"{where}: dnn_hidden_activations {activation!r} is not "
            "supported (relu is)")
    return config_pb2.RELU


def _max_len(spec, where):
    max_len = spec.get("max_len", 1)
    if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
        raise checkpoints.CheckpointError(
            f"{where}: max_len {max_len!r} is not a positive integer")
    return max_len


def _fields(state, feature_map, weights):
    """Our fields from feature_map.json and the embedding tensors."""
    fields = []
    specs = feature_map.get("features") if isinstance(feature_map,
                                                      dict) else None
    if not isinstance(specs, list):
        raise checkpoints.CheckpointError(
            "the feature map has no 'features' list (is it FuxiCTR's "
            "feature_map.json?)")
    for entry in specs:
        if not isinstance(entry, dict) or len(entry) != 1 or not isinstance(
                next(iter(entry.values())), dict):
            raise checkpoints.CheckpointError(
                f"feature map entry {entry!r} is not {{name: {{spec}}}}")
        name, spec = next(iter(entry.items()))
        kind = spec.get("type")
        if kind == "meta":
            continue
        where = f"feature {name!r} ({kind})"
        if not config.valid_name(name):
            raise checkpoints.CheckpointError(
                f"{where}: a field name must be 1-128 letters, digits or '_'")
        if spec.get("pretrained_emb") or kind == "embedding":
            raise checkpoints.CheckpointError(
                f"{where}: pretrained embeddings are not supported")
        scope = (config_pb2.CONTEXT
                 if spec.get("source") == "user" else config_pb2.CANDIDATE)
        table = checkpoints.take(state, f"{_EMBEDDINGS}{name}.weight")
        if table.dim() != 2:
            raise checkpoints.CheckpointError(
                f"tensor '{_EMBEDDINGS}{name}.weight' has shape "
                f"{list(table.shape)}, expected two dimensions")
        if kind == "numeric":
            if table.dim() != 2 or table.shape[1] != 1:
                raise checkpoints.CheckpointError(
                    f"tensor '{_EMBEDDINGS}{name}.weight' has shape "
                    f"{list(table.shape)}, expected [embedding_dim, 1]")
            fields.append(
                config.dense_field(name, scope, embedding_dim=table.shape[0]))
            weights[f"fields.{name}.embedding"] = table[:, 0]
        elif kind in ("categorical", "sequence"):
            if kind == "sequence":
                encoder = spec.get("feature_encoder",
                                   "layers.MaskedAveragePooling()")
                pooling = {
                    "layers.MaskedAveragePooling()": config_pb2.MEAN,
                    "layers.MaskedSumPooling()": config_pb2.SUM
                }.get(encoder) if isinstance(encoder, str) else None
                if pooling is None:
                    raise checkpoints.CheckpointError(
                        f"{where}: feature_encoder {encoder!r} is not "
                        "supported (MaskedAveragePooling, MaskedSumPooling)")
                field = config.categorical_field(
                    name,
                    scope,
                    table.shape[0],
                    table.shape[1],
                    bucket_rule=config_pb2.IDENTITY,
                    pooling=pooling,
                    max_ids=_max_len(spec, where),
                    allow_empty=True)
            else:
                field = config.categorical_field(
                    name,
                    scope,
                    table.shape[0],
                    table.shape[1],
                    bucket_rule=config_pb2.IDENTITY)
            fields.append(field)
            weights[f"fields.{name}.embedding"] = table
        else:
            raise checkpoints.CheckpointError(
                f"{where}: type {kind!r} is not supported (categorical, "
                "numeric, sequence)")
    if not fields:
        raise checkpoints.CheckpointError("the feature map has no features")
    return fields


def import_masknet(state_dict, yaml_config, feature_map, expid=None):
    """A FuxiCTR MaskNet as our model.

    Args:
      state_dict: the model's state_dict (FuxiCTR saves it bare).
      yaml_config: the parsed model_config.yaml (experiments; Base merged in)
        or one experiment's parameters.
      feature_map: the parsed feature_map.json.
      expid: the experiment, when the YAML holds several MaskNets.

    Returns:
      (model_config, weights, notes).
    """
    state = checkpoints.without_counters(state_dict)
    params = _experiment(yaml_config, expid)
    for option in ("use_features", "feature_specs"):
        if params.get(option):
            raise checkpoints.CheckpointError(
                f"model config option {option!r} is not supported: it changes "
                "the features or their encoders (write them into "
                "feature_map.json instead)")
    unknown = sorted(set(params) - _MODEL_OPTIONS)
    if unknown:
        raise checkpoints.CheckpointError(
            f"model config option {unknown[0]!r} is not one FuxiCTR's MaskNet "
            "has, or not one this importer can serve")
    if params.get("task", "binary_classification") != "binary_classification":
        raise checkpoints.CheckpointError(
            f"task {params['task']!r} is not supported (binary_classification)")
    model_type = params.get("model_type", "SerialMaskNet")
    if model_type not in ("SerialMaskNet", "ParallelMaskNet"):
        raise checkpoints.CheckpointError(
            f"model_type {model_type!r} is not SerialMaskNet or ParallelMaskNet")
    activation = _activation(params, "model config")
    weights = {}
    fields = _fields(state, feature_map, weights)

    # The per-field LayerNorms (emb_layernorm) of what the blocks mask.
    input_norm = config_pb2.NORM_NONE
    if params.get("emb_layernorm", True):
        input_norm = config_pb2.FIELD_LAYER_NORM
        for i, field in enumerate(fields):
            for tensor in ("weight", "bias"):
                weights[f"masknet.input_norm.{field.name}.{tensor}"] = (
                    checkpoints.take(state, f"emb_norm.{i}.{tensor}"))
    layer_norm = params.get("net_layernorm", True)
    blocks = []
    while f"mask_net.mask_blocks.{len(blocks)}.hidden_layer.0.weight" in state:
        k = len(blocks)
        modules = [("mask_layer.0", "mask.aggregation", ("weight", "bias")),
                   ("mask_layer.2", "mask.projection", ("weight", "bias")),
                   ("hidden_layer.0", "hidden", ("weight",))]
        if layer_norm:
            modules.append(("hidden_layer.1", "layer_norm", ("weight", "bias")))
        blocks.append(
            checkpoints.take_mask_block(state,
                                        weights,
                                        k,
                                        f"mask_net.mask_blocks.{k}.",
                                        modules,
                                        hidden_bias=False,
                                        activation=activation,
                                        layer_norm=layer_norm))
    if not blocks:
        raise checkpoints.CheckpointError(
            "missing tensors mask_net.mask_blocks.0.* (is it a MaskNet?)")
    parallel = model_type == "ParallelMaskNet"
    masknet = config.masknet(
        config_pb2.PARALLEL if parallel else config_pb2.SERIAL,
        blocks,
        input_norm=input_norm,
        input_norm_eps=checkpoints.TORCH_DEFAULT_EPS,
        mask_input=config_pb2.MASK_INPUT_RAW)

    # The output: serial fc, or the parallel MLP_Block (whose last Linear is
    # the logit).
    source = "mask_net.dnn.mlp." if parallel else "mask_net.fc."
    stack = checkpoints.map_dense_stack(
        checkpoints.pop_prefixed(state, source), source, "mlp.")
    mlp = checkpoints.dense_layers(stack, "mlp.", config_pb2.ACTIVATION_NONE)
    if not mlp:
        raise checkpoints.CheckpointError(f"missing tensors {source}*")
    logit = mlp.pop()
    if logit.HasField("batch_norm") or logit.output_size != 1:
        raise checkpoints.CheckpointError(
            "the last layer must be one Linear output (the logit)")
    labels = feature_map.get("labels")
    label = labels[0] if isinstance(labels, list) and labels else None
    task = label if isinstance(label, str) and config.valid_name(
        label) else "score"
    for name, tensor in stack.items():  # the logit layer becomes the task's
        prefix = f"mlp.{len(mlp)}."
        if name.startswith(prefix):
            weights[f"tasks.{task}.0." + name[len(prefix):]] = tensor
        else:
            weights[name] = tensor
    checkpoints.refuse_leftovers(state)
    model_config = config_pb2.ModelConfig(
        description="FuxiCTR MaskNet (imported)",
        fields=fields,
        masknet=masknet,
        mlp=mlp,
        tasks=[config.task_head(task)])
    model_config.metadata["imported_from"] = "fuxictr"
    return model_config, weights, []
