"""The reference MaskNet: docs/MODEL_FORMAT.md written out in PyTorch.

This module is the ground truth the C++ server is checked against, so it is
plain rather than fast: every formula of the format appears once, literally,
in the order the format states. Its `state_dict()` keys are exactly the tensor
names of the format and its shapes exactly theirs, so a state dict loads into
it and exports from it without renaming.

Batch norms compute in eval mode from their running statistics (which are
buffers, never updated here); nothing in the module depends on `train()` or
`eval()`. `.double()` turns the whole computation into float64.
"""

import torch
from torch import nn

from masknet_tools import config
from masknet_tools import features
from masknet_tools.protos import config_pb2


def layer_norm(x, weight, bias, eps):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis.

    var is the biased variance, as in torch.nn.LayerNorm.
    """
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean)**2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


class NamedChildren(nn.Module):
    """Child modules keyed by schema names (fields, input norms, tasks).

    nn.ModuleDict refuses keys that are attributes of nn.Module ("type",
    "values", "float", ...), which are fair field names, so the children go
    straight into `_modules` and are reached by `self[name]`; their
    state_dict keys are `<name>.<tensor>`.
    """

    def __init__(self, children):
        super().__init__()
        for name, child in children.items():
            self._modules[name] = child

    def __getitem__(self, name):
        return self._modules[name]

    def train(self, mode=True):
        # nn.Module.train assigns self.training, which it refuses when a child
        # is named "training".
        self.__dict__["training"] = mode
        for child in self.children():
            child.train(mode)
        return self


class LayerNorm(nn.Module):
    """LN with tensors `weight`, `bias` [width] (initially 1 and 0)."""

    def __init__(self, width, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x):
        return layer_norm(x, self.weight, self.bias, self.eps)


class FieldLayerNorm(NamedChildren):
    """FIELD_LAYER_NORM: an LN per field; tensors `<field>.weight`, `.bias`."""

    def __init__(self, slices, eps):
        """`slices`: ordered dict of field name to its (begin, end) in x."""
        super().__init__({
            name: LayerNorm(end - begin, eps)
            for name, (begin, end) in slices.items()
        })
        self._field_slices = slices

    def forward(self, x):
        return torch.cat([
            self[name](x[:, begin:end])
            for name, (begin, end) in self._field_slices.items()
        ],
                         dim=1)


def make_norm(kind, width, eps, slices):
    """The module of Norm `kind` of an object of `width`, fields at `slices`."""
    if kind == config_pb2.LAYER_NORM:
        return LayerNorm(width, eps)
    if kind == config_pb2.FIELD_LAYER_NORM:
        return FieldLayerNorm(slices, eps)
    return nn.Identity()


class BatchNorm(nn.Module):
    """Eval-mode batch norm.

    y = (x - running_mean) / sqrt(running_var + eps) * weight + bias.

    Tensors: buffers `running_mean`, `running_var`; parameters `weight`, `bias`
    only when affine (otherwise weight 1, bias 0).
    """

    def __init__(self, width, message):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_var", torch.ones(width))
        self.eps = message.eps
        self.affine = message.affine
        if self.affine:
            self.weight = nn.Parameter(torch.ones(width))
            self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        y = (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y


class DenseFieldEncoder(nn.Module):
    """A dense field: non-finite policy, transform, normalization, clamp,
    then with embedding_dim the scalar times `embedding`.

    Tensors: `scale`, `shift` [width] with `affine` (initially 1 and 0);
    `batch_norm.*` with `batch_norm`; `embedding` [embedding_dim] with
    embedding_dim.
    """

    def __init__(self, dense):
        super().__init__()
        self.replace_non_finite = (
            dense.non_finite == config_pb2.REPLACE_WITH_ZERO)
        self.signed_log1p = dense.transform == config_pb2.SIGNED_LOG1P
        self.normalization = dense.WhichOneof("normalization")
        if self.normalization == "affine":
            self.scale = nn.Parameter(torch.ones(dense.width))
            self.shift = nn.Parameter(torch.zeros(dense.width))
        elif self.normalization == "batch_norm":
            self.batch_norm = BatchNorm(dense.width, dense.batch_norm)
        self.clamp_min, self.clamp_max = None, None
        if dense.HasField("clamp_min"):
            self.clamp_min = dense.clamp_min
        if dense.HasField("clamp_max"):
            self.clamp_max = dense.clamp_max
        self.embedded = dense.embedding_dim > 0
        if self.embedded:
            self.embedding = nn.Parameter(torch.randn(dense.embedding_dim) *
                                          0.1)

    def transformed(self, x):
        """The values after the non-finite policy and the transform."""
        if self.replace_non_finite:
            x = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
        if self.signed_log1p:
            x = torch.sign(x) * torch.log1p(torch.abs(x))
        return x

    def forward(self, x):
        """x: [n, width] values as sent. Returns the field's part of V."""
        x = self.processed(x)
        return x * self.embedding if self.embedded else x  # [n, 1] * [dim]

    def processed(self, x):
        """The values after everything but the embedding (ends in clamp)."""
        x = self.transformed(x)
        if self.normalization == "affine":
            x = x * self.scale + self.shift
        elif self.normalization == "batch_norm":
            x = self.batch_norm(x)
        if self.clamp_min is not None:
            x = torch.clamp(x, min=self.clamp_min)
        if self.clamp_max is not None:
            x = torch.clamp(x, max=self.clamp_max)
        return x


class CategoricalFieldEncoder(nn.Module):
    """A categorical field: ids to rows of `embedding`, pooled.

    Tensor: `embedding` [num_buckets, embedding_dim].
    """

    def __init__(self, categorical):
        super().__init__()
        shape = (categorical.num_buckets, categorical.embedding_dim)
        self.embedding = nn.Parameter(torch.randn(shape) * 0.1)
        self.modulo = categorical.bucket_rule == config_pb2.MODULO
        self.mean = categorical.pooling == config_pb2.MEAN

    def rows(self, ids):
        """Row of each id: id mod num_buckets >= 0 (MODULO) or id (IDENTITY)."""
        num_buckets = self.embedding.shape[0]
        if self.modulo:
            return torch.remainder(ids, num_buckets)
        if ((ids < 0) | (ids >= num_buckets)).any():
            raise ValueError(f"IDENTITY id outside [0, {num_buckets})")
        return ids

    def forward(self, ids, counts):
        """ids [n, k], counts [n]: a row's first counts[i] ids are its ids.

        Returns the pooled embeddings [n, dim]: the SUM or MEAN of the ids'
        rows; zeros for a row without ids.
        """
        dtype = self.embedding.dtype
        present = torch.arange(ids.shape[1])[None, :] < counts[:, None]
        rows = self.rows(torch.where(present, ids, torch.zeros_like(ids)))
        pooled = (self.embedding[rows] * present[:, :, None].to(dtype)).sum(1)
        if self.mean:
            pooled = pooled / torch.clamp(counts, min=1)[:, None].to(dtype)
        return pooled


class InstanceMask(nn.Module):
    """mask(V') = projection(ReLU(aggregation(V'))): [d'] -> [t] -> [m]."""

    def __init__(self, mask_input_width, aggregation_width, masked_width):
        super().__init__()
        self.aggregation = nn.Linear(mask_input_width, aggregation_width)
        self.projection = nn.Linear(aggregation_width, masked_width)

    def forward(self, mask_input):
        return self.projection(torch.relu(self.aggregation(mask_input)))


class MaskBlock(nn.Module):
    """y = act(LN(hidden(block_norm(net) * mask(V')))); no LN with
    no_layer_norm.

    Tensors: `input_norm.*` (per its Norm), `mask.aggregation.*`,
    `mask.projection.*`, `hidden.weight` (+ `hidden.bias`), `layer_norm.*`
    (unless no_layer_norm).
    """

    def __init__(self, block, shape, mask_input_width, field_slices):
        super().__init__()
        self.input_norm = make_norm(block.input_norm, shape.masked_width,
                                    block.input_norm_eps, field_slices)
        self.mask = InstanceMask(mask_input_width, shape.aggregation_width,
                                 shape.masked_width)
        self.hidden = nn.Linear(shape.masked_width,
                                shape.output_width,
                                bias=block.hidden_bias)
        self.layer_norm = (nn.Identity() if block.no_layer_norm else LayerNorm(
            shape.output_width, block.layer_norm_eps))
        self.relu = block.activation == config_pb2.RELU

    def forward(self, net, mask_input):
        x = self.input_norm(net)
        y = self.layer_norm(self.hidden(x * self.mask(mask_input)))
        return torch.relu(y) if self.relu else y


class MaskNet(nn.Module):
    """The shared input norm, then the blocks, serial or parallel.

    Tensors: `input_norm.*` (per masknet.input_norm), `blocks.<k>.*`.
    """

    def __init__(self, model_config):
        super().__init__()
        masknet = model_config.masknet
        slices = config.field_slices(model_config)
        d = config.instance_width(model_config)
        self.serial = masknet.mode == config_pb2.SERIAL
        self.mask_reads_normalized = (
            masknet.mask_input == config_pb2.MASK_INPUT_NORMALIZED)
        self.input_norm = make_norm(masknet.input_norm, d,
                                    masknet.input_norm_eps, slices)
        shapes = config.block_shapes(model_config)
        self.blocks = nn.ModuleList(
            MaskBlock(block, shape, d, slices)
            for block, shape in zip(masknet.blocks, shapes))

    def forward(self, v):
        """v: V [n, d]. Returns y_K (serial) or concat(y_1 ... y_K)."""
        normalized = self.input_norm(v)
        mask_input = normalized if self.mask_reads_normalized else v
        if self.serial:
            net = normalized
            for block in self.blocks:
                net = block(net, mask_input)
            return net
        return torch.cat(
            [block(normalized, mask_input) for block in self.blocks], dim=1)


class DenseLayer(nn.Linear):
    """act(BN(W x + b)); tensors `weight` [out, in], `bias`, `batch_norm.*`."""

    def __init__(self, input_width, layer):
        super().__init__(input_width, layer.output_size)
        self.batch_norm = (BatchNorm(layer.output_size, layer.batch_norm)
                           if layer.HasField("batch_norm") else nn.Identity())
        self.relu = layer.activation == config_pb2.RELU

    def forward(self, x):
        y = self.batch_norm(super().forward(x))
        return torch.relu(y) if self.relu else y


def _dense_stack(input_width, layers):
    stack = []
    for layer in layers:
        stack.append(DenseLayer(input_width, layer))
        input_width = layer.output_size
    return nn.Sequential(*stack)


class MaskNetReference(nn.Module):
    """A MaskNet built from a ModelConfig, computing docs/MODEL_FORMAT.md.

    Tensors (state_dict keys): `fields.<f>.*`, `input_norms.<n>.*`,
    `masknet.*`, `mlp.<i>.*`, `tasks.<task>.<i>.*`. The initial values are
    placeholders; load real ones with load_state_dict.

    Calling the module scores one request: see `forward`.
    """

    def __init__(self, model_config):
        """Raises config.ConfigError if `model_config` is invalid."""
        super().__init__()
        config.validate(model_config)
        self.model_config = config_pb2.ModelConfig()
        self.model_config.CopyFrom(model_config)
        self.field_slices = config.field_slices(model_config)
        encoders = {}
        for field in model_config.fields:
            if field.WhichOneof("kind") == "dense":
                encoders[field.name] = DenseFieldEncoder(field.dense)
            else:
                encoders[field.name] = CategoricalFieldEncoder(
                    field.categorical)
        self.fields = NamedChildren(encoders)
        self.input_norms = NamedChildren({
            norm.name: LayerNorm(self._norm_width(norm), norm.eps)
            for norm in model_config.input_norms
        })
        self.masknet = MaskNet(model_config)
        self.mlp = _dense_stack(config.masknet_output_width(model_config),
                                model_config.mlp)
        head_input_width = config.mlp_output_width(model_config)
        self.tasks = NamedChildren({
            task.name: _dense_stack(head_input_width, task.layers)
            for task in model_config.tasks
        })
        self.negative_sampling_rates = [
            task.negative_sampling_rate
            if task.HasField("negative_sampling_rate") else None
            for task in model_config.tasks
        ]

    def _norm_width(self, norm):
        """Width of the V-slice of input norm `norm`."""
        return (self.field_slices[norm.fields[-1]][1] -
                self.field_slices[norm.fields[0]][0])

    @property
    def task_names(self):
        return [task.name for task in self.model_config.tasks]

    def _dtype(self):
        return self.masknet.blocks[0].hidden.weight.dtype

    def instance_vector(self, batch):
        """V [n, d] of a features.FieldBatch: the fields, then input norms."""
        parts = []
        for field in self.model_config.fields:
            encoder = self.fields[field.name]
            if field.WhichOneof("kind") == "dense":
                parts.append(encoder(batch.dense[field.name].to(self._dtype())))
            else:
                parts.append(
                    encoder(batch.ids[field.name], batch.counts[field.name]))
        v = torch.cat(parts, dim=1)
        for norm in self.model_config.input_norms:
            begin = self.field_slices[norm.fields[0]][0]
            end = self.field_slices[norm.fields[-1]][1]
            normalized = self.input_norms[norm.name](v[:, begin:end])
            v = torch.cat([v[:, :begin], normalized, v[:, end:]], dim=1)
        return v

    def logits(self, batch):
        """The task logits [n, num_tasks] of a features.FieldBatch."""
        shared = self.mlp(self.masknet(self.instance_vector(batch)))
        heads = [self.tasks[name](shared) for name in self.task_names]
        return torch.cat(heads, dim=1)

    def probabilities_from_logits(self, logits):
        """sigmoid(logit), then p r / (1 - p + p r) where a task has rate r."""
        p = torch.sigmoid(logits)
        columns = []
        for i, r in enumerate(self.negative_sampling_rates):
            q = p[:, i]
            columns.append(q if r is None else q * r / (1 - q + q * r))
        return torch.stack(columns, dim=1)

    def forward(self, context, candidates):
        """Scores one request.

        Args:
          context: the request context's Features (ranker_pb2.Features or
            anything with .dense, .ids, .id_counts).
          candidates: a sequence of the candidates' Features.

        Returns:
          Probabilities [len(candidates), num_tasks], tasks in config order.

        Raises:
          features.RequestError: the features break ranker.proto's contract.
        """
        batch = features.batch_from_request(self.model_config, context,
                                            candidates)
        return self.probabilities_from_logits(self.logits(batch))
