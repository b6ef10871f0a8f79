"""The model config (masknet.config.v1.ModelConfig): files, widths, checks.

docs/MODEL_FORMAT.md states what each option computes; this module derives
the widths that follow from a config, checks a config against the rules and
limits the server's loader enforces, and offers keyword builders for the
messages so that configs read like their description.
"""

import collections
import math
import re
import typing

from google.protobuf import text_format

from masknet_tools.protos import config_pb2

MAX_FIELDS = 4096
MAX_BLOCKS = 64
MAX_TASKS = 64
MAX_WIDTH = 1 << 20
MAX_BUCKETS = 1 << 32
MAX_IDS = 4096

# The server's rule for field, input-norm and task names (they become parts of
# tensor names): 1-128 letters, digits or '_', not starting with a digit.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class ConfigError(ValueError):
    """A config breaks a rule of docs/MODEL_FORMAT.md.

    The message lists every problem found.
    """


# --- Files -------------------------------------------------------------------


def parse_config(text):
    """Parses text format; unknown fields raise text_format.ParseError."""
    return text_format.Parse(text, config_pb2.ModelConfig())


def format_config(model_config):
    """Returns the protobuf text format of `model_config`."""
    return text_format.MessageToString(model_config)


def read_config(path):
    """Reads a model_config.pbtxt file."""
    with open(path, encoding="utf-8") as f:
        return parse_config(f.read())


def write_config(model_config, path):
    """Writes `model_config` to `path` in protobuf text format."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(format_config(model_config))


# --- Widths ------------------------------------------------------------------


def field_width(field):
    """Numbers field `field` contributes to V: dense width (embedding_dim when
    the dense field is embedded) or the categorical embedding_dim."""
    if field.WhichOneof("kind") == "dense":
        return field.dense.embedding_dim or field.dense.width
    return field.categorical.embedding_dim


def max_ids(field):
    """The most ids a request may send for categorical `field` (0 means 1)."""
    return field.categorical.max_ids or 1


def field_slices(model_config):
    """Returns an ordered dict of field name to its (begin, end) slice of V."""
    slices, begin = collections.OrderedDict(), 0
    for field in model_config.fields:
        slices[field.name] = (begin, begin + field_width(field))
        begin += field_width(field)
    return slices


def instance_width(model_config):
    """d: the width of the instance vector V."""
    return sum(field_width(field) for field in model_config.fields)


def scope_fields(model_config, scope):
    """The fields of `scope` (config_pb2.CONTEXT or CANDIDATE), in order."""
    return [field for field in model_config.fields if field.scope == scope]


def scope_dense_width(model_config, scope):
    """Floats in Features.dense for `scope`: its dense fields' total width."""
    return sum(field.dense.width
               for field in scope_fields(model_config, scope)
               if field.WhichOneof("kind") == "dense")


class BlockShape(typing.NamedTuple):
    """The widths of one MaskBlock."""
    masked_width: int  # m: the width of the block's net.
    aggregation_width: int  # t
    output_width: int  # o


def aggregation_width(block, mask_input_width, masked_width):
    """t of `block`: aggregation_size, or reduction.factor times its base width.

    The factor is the float32 value of the config, multiplied in float64.

    Raises:
      ConfigError: the base is unspecified or the product is not a whole number.
    """
    if block.WhichOneof("aggregation") == "aggregation_size":
        return block.aggregation_size
    bases = {
        config_pb2.MASK_INPUT_WIDTH: mask_input_width,
        config_pb2.MASKED_INPUT_WIDTH: masked_width
    }
    if (block.WhichOneof("aggregation") is None or
            block.reduction.base not in bases):
        raise ConfigError(
            "a mask block needs aggregation_size or a reduction with a base")
    product = block.reduction.factor * bases[block.reduction.base]
    if product != math.floor(product):
        raise ConfigError(
            f"reduction factor {block.reduction.factor} x "
            f"{bases[block.reduction.base]} = {product} is not a whole number")
    return int(product)


def block_shapes(model_config):
    """The BlockShape of every mask block, in order."""
    d = instance_width(model_config)
    masked_width, shapes = d, []
    for block in model_config.masknet.blocks:
        t = aggregation_width(block, d, masked_width)
        shapes.append(BlockShape(masked_width, t, block.output_size))
        if model_config.masknet.mode == config_pb2.SERIAL:
            masked_width = block.output_size
    return shapes


def masknet_output_width(model_config):
    """Width of the MaskNet output: the last block's, or the sum (parallel)."""
    shapes = block_shapes(model_config)
    if model_config.masknet.mode == config_pb2.SERIAL:
        return shapes[-1].output_width
    return sum(shape.output_width for shape in shapes)


def mlp_output_width(model_config):
    """Width the task heads read: the last MLP layer's, else the MaskNet's."""
    if model_config.mlp:
        return model_config.mlp[-1].output_size
    return masknet_output_width(model_config)


def flops_per_candidate(model_config):
    """2 x the multiply-adds of all dense layers per candidate (ModelInfo)."""
    d = instance_width(model_config)
    multiply_adds = 0
    for m, t, o in block_shapes(model_config):
        # Aggregation, projection, hidden.
        multiply_adds += t * d + m * t + o * m
    width = masknet_output_width(model_config)
    for layer in model_config.mlp:
        multiply_adds += width * layer.output_size
        width = layer.output_size
    for task in model_config.tasks:
        head_width = width
        for layer in task.layers:
            multiply_adds += head_width * layer.output_size
            head_width = layer.output_size
    return 2 * multiply_adds


# --- Checks ------------------------------------------------------------------


def _check_eps(problems, where, eps):
    if not 0 < eps <= 1:
        problems.append(f"{where}: eps {eps} is not in (0, 1]")


def _check_width(problems, where, width):
    if not 1 <= width <= MAX_WIDTH:
        problems.append(f"{where}: {width} is not in [1, {MAX_WIDTH}]")


def _check_batch_norm(problems, where, batch_norm):
    _check_eps(problems, where + ".batch_norm", batch_norm.eps)


def valid_name(name):
    """Whether `name` may name a field, input norm or task."""
    return bool(_NAME.fullmatch(name))


def _check_name(problems, where, name):
    if not valid_name(name):
        problems.append(f"{where}: name must be 1-128 letters, digits or '_', "
                        "not starting with a digit")


def _check_unique_name(problems, where, name, seen):
    """Checks `name` against the rule and `seen`, then adds it to `seen`."""
    _check_name(problems, where, name)
    if name in seen:
        problems.append(f"{where}: name is not unique")
    seen.add(name)


def _check_field(problems, field):
    where = f"field {field.name!r}"
    _check_name(problems, where, field.name)
    if field.scope == config_pb2.SCOPE_UNSPECIFIED:
        problems.append(f"{where}: scope is unspecified")
    kind = field.WhichOneof("kind")
    if kind == "dense":
        dense = field.dense
        _check_width(problems, where + ".width", dense.width)
        if dense.non_finite == config_pb2.NON_FINITE_POLICY_UNSPECIFIED:
            problems.append(f"{where}: non_finite is unspecified")
        if dense.HasField("batch_norm"):
            _check_batch_norm(problems, where, dense.batch_norm)
        for bound in ("clamp_min", "clamp_max"):
            value = getattr(dense, bound)
            if dense.HasField(bound) and not math.isfinite(value):
                problems.append(f"{where}: {bound} is not finite")
        if (dense.HasField("clamp_min") and dense.HasField("clamp_max") and
                dense.clamp_min > dense.clamp_max):
            problems.append(f"{where}: clamp_min > clamp_max")
        if dense.embedding_dim:
            _check_width(problems, where + ".embedding_dim",
                         dense.embedding_dim)
            if dense.width != 1:
                problems.append(
                    f"{where}: embedding_dim embeds a scalar: width must be 1")
    elif kind == "categorical":
        categorical = field.categorical
        if not 1 <= categorical.num_buckets <= MAX_BUCKETS:
            problems.append(
                f"{where}: num_buckets {categorical.num_buckets} is not in "
                f"[1, {MAX_BUCKETS}]")
        _check_width(problems, where + ".embedding_dim",
                     categorical.embedding_dim)
        if categorical.bucket_rule == config_pb2.BUCKET_RULE_UNSPECIFIED:
            problems.append(f"{where}: bucket_rule is unspecified")
        if categorical.pooling == config_pb2.POOLING_UNSPECIFIED:
            problems.append(f"{where}: pooling is unspecified")
        if categorical.max_ids > MAX_IDS:
            problems.append(
                f"{where}: max_ids {categorical.max_ids} > {MAX_IDS}")
    else:
        problems.append(f"{where}: neither dense nor categorical")


def _check_input_norms(problems, model_config):
    position = {field.name: i for i, field in enumerate(model_config.fields)}
    seen_norms, normed_fields = set(), set()
    for norm in model_config.input_norms:
        where = f"input_norm {norm.name!r}"
        _check_unique_name(problems, where, norm.name, seen_norms)
        _check_eps(problems, where, norm.eps)
        if not norm.fields:
            problems.append(f"{where}: has no fields")
        unknown = [name for name in norm.fields if name not in position]
        if unknown:
            problems.append(f"{where}: unknown fields {unknown}")
            continue
        indices = [position[name] for name in norm.fields]
        if indices != list(range(indices[0], indices[0] + len(indices))):
            problems.append(
                f"{where}: fields are not adjacent and in schema order")
        for name in norm.fields:
            if name in normed_fields:
                problems.append(
                    f"{where}: field {name!r} is already in another input norm")
            normed_fields.add(name)


def _check_norm(problems, where, norm, eps, normalizes_v, model_config):
    """Checks a Norm choice.

    `normalizes_v` tells whether the normalized object is V (laid out in
    fields).
    """
    if norm == config_pb2.NORM_NONE:
        return
    _check_eps(problems, where, eps)
    if norm == config_pb2.FIELD_LAYER_NORM:
        if not normalizes_v:
            problems.append(
                f"{where}: FIELD_LAYER_NORM of an object that is not V")
        narrow = [f.name for f in model_config.fields if field_width(f) < 2]
        if narrow:
            problems.append(
                f"{where}: FIELD_LAYER_NORM needs every field at least 2 wide; "
                f"{narrow} are not")


def _check_dense_layers(problems, where, layers):
    for i, layer in enumerate(layers):
        _check_width(problems, f"{where}.{i}.output_size", layer.output_size)
        if layer.activation == config_pb2.ACTIVATION_UNSPECIFIED:
            problems.append(f"{where}.{i}: activation is unspecified")
        if layer.HasField("batch_norm"):
            _check_batch_norm(problems, f"{where}.{i}", layer.batch_norm)


def _check_masknet(problems, model_config):
    masknet = model_config.masknet
    if masknet.mode == config_pb2.MODE_UNSPECIFIED:
        problems.append("masknet: mode is unspecified")
    if not 1 <= len(masknet.blocks) <= MAX_BLOCKS:
        problems.append(f"masknet: {len(masknet.blocks)} blocks is not in "
                        f"[1, {MAX_BLOCKS}]")
    _check_norm(problems, "masknet.input_norm", masknet.input_norm,
                masknet.input_norm_eps, True, model_config)
    if (masknet.mask_input == config_pb2.MASK_INPUT_NORMALIZED and
            masknet.input_norm == config_pb2.NORM_NONE):
        problems.append("masknet: MASK_INPUT_NORMALIZED needs an input_norm")
    for k, block in enumerate(masknet.blocks):
        where = f"masknet.blocks.{k}"
        reads_v = masknet.mode == config_pb2.PARALLEL or k == 0
        _check_norm(problems, where + ".input_norm", block.input_norm,
                    block.input_norm_eps, reads_v, model_config)
        _check_width(problems, where + ".output_size", block.output_size)
        if block.activation == config_pb2.ACTIVATION_UNSPECIFIED:
            problems.append(f"{where}: activation is unspecified")
        if not block.no_layer_norm:
            _check_eps(problems, where + ".layer_norm", block.layer_norm_eps)
        if (block.WhichOneof("aggregation") == "reduction" and
                not block.reduction.factor > 0):
            problems.append(f"{where}: reduction factor must be positive")
    if problems or not model_config.fields:
        return
    try:
        for k, shape in enumerate(block_shapes(model_config)):
            _check_width(problems, f"masknet.blocks.{k}.aggregation width",
                         shape.aggregation_width)
    except ConfigError as e:
        problems.append(f"masknet: {e}")


def _check_tasks(problems, model_config):
    if not 1 <= len(model_config.tasks) <= MAX_TASKS:
        problems.append(
            f"{len(model_config.tasks)} tasks is not in [1, {MAX_TASKS}]")
    names = set()
    for task in model_config.tasks:
        where = f"task {task.name!r}"
        _check_unique_name(problems, where, task.name, names)
        if not task.layers:
            problems.append(f"{where}: has no layers")
            continue
        _check_dense_layers(problems, f"tasks.{task.name}", task.layers)
        last = task.layers[-1]
        if (last.output_size != 1 or
                last.activation != config_pb2.ACTIVATION_NONE):
            problems.append(f"{where}: the last layer must have output_size 1 "
                            "and ACTIVATION_NONE")
        rate = task.negative_sampling_rate
        if task.HasField("negative_sampling_rate") and not (
                0 < rate and math.isfinite(rate)):
            problems.append(
                f"{where}: negative_sampling_rate is not positive and finite")


def validate(model_config):
    """Checks `model_config` against docs/MODEL_FORMAT.md and the loader limits.

    Raises:
      ConfigError: listing every problem found.
    """
    problems = []
    if not 1 <= len(model_config.fields) <= MAX_FIELDS:
        problems.append(
            f"{len(model_config.fields)} fields is not in [1, {MAX_FIELDS}]")
    names = [field.name for field in model_config.fields]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        problems.append(f"duplicate field names {duplicates}")
    for field in model_config.fields:
        _check_field(problems, field)
    _check_input_norms(problems, model_config)
    _check_masknet(problems, model_config)
    _check_dense_layers(problems, "mlp", model_config.mlp)
    _check_tasks(problems, model_config)
    if not problems:
        _check_width(problems, "instance width d", instance_width(model_config))
    if problems:
        raise ConfigError("invalid model config:\n  " + "\n  ".join(problems))


# --- Builders ----------------------------------------------------------------


def batch_norm(eps=1e-5, affine=False):
    """A BatchNorm message."""
    return config_pb2.BatchNorm(eps=eps, affine=affine)


def dense_field(name,
                scope,
                width=1,
                non_finite=config_pb2.REJECT,
                transform=config_pb2.TRANSFORM_NONE,
                affine=False,
                batch_norm=None,
                clamp_min=None,
                clamp_max=None,
                embedding_dim=0):
    """A dense Field; `affine` and `batch_norm` (a BatchNorm) are exclusive;
    `embedding_dim` embeds a scalar field as its value times a vector."""
    if affine and batch_norm is not None:
        raise ValueError(f"field {name!r}: affine and batch_norm are exclusive")
    dense = config_pb2.DenseField(width=width,
                                  non_finite=non_finite,
                                  transform=transform,
                                  embedding_dim=embedding_dim)
    if affine:
        dense.affine.SetInParent()
    if batch_norm is not None:
        dense.batch_norm.CopyFrom(batch_norm)
    if clamp_min is not None:
        dense.clamp_min = clamp_min
    if clamp_max is not None:
        dense.clamp_max = clamp_max
    return config_pb2.Field(name=name, scope=scope, dense=dense)


def categorical_field(name,
                      scope,
                      num_buckets,
                      embedding_dim,
                      bucket_rule=config_pb2.MODULO,
                      pooling=config_pb2.SUM,
                      max_ids=0,
                      allow_empty=False):
    """A categorical Field."""
    return config_pb2.Field(name=name,
                            scope=scope,
                            categorical=config_pb2.CategoricalField(
                                num_buckets=num_buckets,
                                embedding_dim=embedding_dim,
                                bucket_rule=bucket_rule,
                                pooling=pooling,
                                max_ids=max_ids,
                                allow_empty=allow_empty))


def input_norm(name, fields, eps=1e-5):
    """An InputNorm over the adjacent `fields` (names)."""
    return config_pb2.InputNorm(name=name, fields=fields, eps=eps)


def mask_block(output_size,
               aggregation_size=None,
               reduction_factor=None,
               reduction_base=None,
               hidden_bias=False,
               activation=config_pb2.RELU,
               input_norm=config_pb2.NORM_NONE,
               input_norm_eps=1e-5,
               layer_norm_eps=1e-5,
               layer_norm=True):
    """A MaskBlock: aggregation_size, or reduction_factor and reduction_base;
    without the LayerNorm after the hidden layer unless `layer_norm`."""
    block = config_pb2.MaskBlock(output_size=output_size,
                                 hidden_bias=hidden_bias,
                                 activation=activation,
                                 input_norm=input_norm)
    if layer_norm:
        block.layer_norm_eps = layer_norm_eps
    else:
        block.no_layer_norm = True
    if input_norm != config_pb2.NORM_NONE:
        block.input_norm_eps = input_norm_eps
    if aggregation_size is not None:
        block.aggregation_size = aggregation_size
    else:
        block.reduction.factor = reduction_factor
        block.reduction.base = reduction_base
    return block


def masknet(mode,
            blocks,
            input_norm=config_pb2.NORM_NONE,
            input_norm_eps=1e-5,
            mask_input=config_pb2.MASK_INPUT_RAW):
    """A MaskNet; input_norm_eps is written only when input_norm is used."""
    message = config_pb2.MaskNet(mode=mode,
                                 blocks=blocks,
                                 input_norm=input_norm,
                                 mask_input=mask_input)
    if input_norm != config_pb2.NORM_NONE:
        message.input_norm_eps = input_norm_eps
    return message


def dense_layer(output_size, activation=config_pb2.RELU, batch_norm=None):
    """A DenseLayer; `batch_norm` is an optional BatchNorm message."""
    layer = config_pb2.DenseLayer(output_size=output_size,
                                  activation=activation)
    if batch_norm is not None:
        layer.batch_norm.CopyFrom(batch_norm)
    return layer


def task_head(name,
              hidden_sizes=(),
              negative_sampling_rate=None,
              batch_norm=None):
    """A TaskHead: RELU layers of `hidden_sizes`, then the logit.

    Each hidden layer has `batch_norm` (a BatchNorm message) if given.
    """
    head = config_pb2.TaskHead(name=name)
    for size in hidden_sizes:
        head.layers.append(dense_layer(size, config_pb2.RELU, batch_norm))
    head.layers.append(dense_layer(1, config_pb2.ACTIVATION_NONE))
    if negative_sampling_rate is not None:
        head.negative_sampling_rate = negative_sampling_rate
    return head
