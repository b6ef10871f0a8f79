"""A stand-in for TorchEasyRec's MaskNet rank model, written here.

The modules below have the attribute names (hence the state_dict keys) and
the eval-mode computations of TorchEasyRec's tzrec/models/masknet.py,
tzrec/modules/masknet.py, tzrec/modules/mlp.py and its embedding group
(torchrec's EmbeddingBagCollection), written for our tests from that code's
documented behaviour, not copied from it; they are configured by the same
pipeline config fields.
"""

import torch
from torch import nn

from masknet_tools import textproto
from tests.python import standins


class EmbeddingBagCollection(nn.Module):

    def __init__(self, tables):
        """`tables`: name -> (rows, dim, mode)."""
        super().__init__()
        self.embedding_bags = nn.ModuleDict({
            name: nn.EmbeddingBag(rows, dim, mode=mode)
            for name, (rows, dim, mode) in tables.items()
        })


class EmbeddingGroupImpl(nn.Module):

    def __init__(self, tables):
        super().__init__()
        self.ebc = EmbeddingBagCollection(tables)


class EmbeddingGroup(nn.Module):
    """The group vector: id features' pooled embeddings and raw values."""

    def __init__(self, features, names):
        super().__init__()
        self.features, self.names = features, names
        tables = {}
        for name in names:
            kind, options = features[name]
            if kind == "id_feature":
                table = textproto.first(options, "embedding_name",
                                        f"{name}_emb")
                rows = (textproto.first(options, "num_buckets") or
                        textproto.first(options, "hash_bucket_size"))
                tables[table] = (rows,
                                 textproto.first(options, "embedding_dim"),
                                 textproto.first(options, "pooling", "sum"))
        self.emb_impls = nn.ModuleDict(
            {"__BASE__": EmbeddingGroupImpl(tables)})

    def forward(self, inputs):
        """`inputs`: feature -> ids [n, k] (long) or values [n, value_dim]."""
        bags = self.emb_impls["__BASE__"].ebc.embedding_bags
        parts = []
        for name in self.names:
            kind, options = self.features[name]
            if kind == "id_feature":
                table = textproto.first(options, "embedding_name",
                                        f"{name}_emb")
                parts.append(bags[table](inputs[name]))
            else:
                parts.append(inputs[name])
        return torch.cat(parts, dim=1)


class MaskBlock(nn.Module):

    def __init__(self, input_dim, mask_input_dim, options):
        super().__init__()
        aggregation = textproto.first(options, "aggregation_dim")
        ratio = textproto.first(options, "reduction_ratio", 1.0)
        if ratio:
            aggregation = int(input_dim * ratio)
        hidden = textproto.first(options, "hidden_dim")
        self.mask_generator = nn.Sequential(
            nn.Linear(mask_input_dim, aggregation), nn.ReLU(),
            nn.Linear(aggregation, input_dim))
        self.ffn = nn.Sequential(nn.Linear(input_dim, hidden),
                                 nn.LayerNorm(hidden), nn.ReLU())

    def forward(self, feature_input, mask_input):
        return self.ffn(feature_input * self.mask_generator(mask_input))


class Perceptron(nn.Module):

    def __init__(self, in_features, out_features, use_bn, dropout):
        super().__init__()
        modules = [nn.Linear(in_features, out_features, bias=not use_bn)]
        if use_bn:
            modules.append(nn.BatchNorm1d(out_features))
        modules.append(nn.ReLU())
        if dropout:
            modules.append(nn.Dropout(dropout))
        self.perceptron = nn.Sequential(*modules)

    def forward(self, x):
        return self.perceptron(x)


class MLP(nn.Module):

    def __init__(self, in_features, options):
        super().__init__()
        layers = []
        for size in textproto.all_of(options, "hidden_units"):
            layers.append(
                Perceptron(in_features, size,
                           textproto.first(options, "use_bn", False),
                           textproto.first(options, "dropout_ratio", 0.0)))
            in_features = size
        self.mlp = nn.ModuleList(layers)
        self.out_features = in_features

    def forward(self, x):
        for layer in self.mlp:
            x = layer(x)
        return x


class MaskNetModule(nn.Module):

    def __init__(self, feature_dim, options):
        super().__init__()
        self.use_parallel = textproto.first(options, "use_parallel", True)
        block = textproto.first(options, "mask_block")
        hidden = textproto.first(block, "hidden_dim")
        self.ln_emb = nn.LayerNorm(feature_dim)
        blocks = []
        for i in range(textproto.first(options, "n_mask_blocks")):
            input_dim = feature_dim if self.use_parallel or i == 0 else hidden
            blocks.append(MaskBlock(input_dim, feature_dim, block))
        self.mask_blocks = nn.ModuleList(blocks)
        width = hidden * len(blocks) if self.use_parallel else hidden
        self.top_mlp = MLP(width, textproto.first(options, "top_mlp"))

    def forward(self, feature_emb):
        ln = self.ln_emb(feature_emb)
        if self.use_parallel:
            h = torch.cat([b(ln, feature_emb) for b in self.mask_blocks], dim=1)
        else:
            h = ln
            for b in self.mask_blocks:
                h = b(h, feature_emb)
        return self.top_mlp(h)


class MaskNet(nn.Module):
    """The rank model: group vector, MaskNetModule, output_linear."""

    def __init__(self, pipeline):
        super().__init__()
        model = textproto.first(pipeline, "model_config")
        features = {}
        for feature_config in textproto.all_of(pipeline, "feature_configs"):
            for kind, options in feature_config.items():
                features[textproto.first(options[0],
                                         "feature_name")] = (kind, options[0])
        group = textproto.first(model, "feature_groups")
        self.embedding_group = EmbeddingGroup(
            features, textproto.all_of(group, "feature_names"))
        width = 0
        for name in textproto.all_of(group, "feature_names"):
            kind, options = features[name]
            width += textproto.first(
                options, "embedding_dim" if kind == "id_feature" else
                "value_dim", 1)
        module = textproto.first(
            textproto.first(model, "mask_net"), "mask_net_module")
        self.mask_net_layer = MaskNetModule(width, module)
        self.output_linear = nn.Linear(self.mask_net_layer.top_mlp.out_features,
                                       textproto.first(model, "num_class", 1),
                                       bias=False)

    def forward(self, inputs):
        logits = self.output_linear(
            self.mask_net_layer(self.embedding_group(inputs)))
        return torch.sigmoid(logits)


class TrainWrapper(nn.Module):
    """The training wrapper: every tensor name gets the prefix "model."."""

    def __init__(self, model):
        super().__init__()
        self.model = model


def pipeline_config(parallel=True, use_bn=False):
    """A pipeline config (protobuf text) shaped like examples/
    masknet_criteo.config, at reduced width: id features (one with mean
    pooling, two sharing a table) and raw features, one of them 3 wide."""
    return f"""
# A MaskNet on criteo-like features.
train_input_path: "data/train.parquet"
feature_configs {{ id_feature {{ feature_name: "c1" expression: "item:c1"
  embedding_dim: 6 num_buckets: 50 }} }}
feature_configs {{ id_feature {{ feature_name: "c2" embedding_dim: 4
  hash_bucket_size: 30 pooling: "mean" }} }}
feature_configs {{ raw_feature {{ feature_name: "i1" }} }}
feature_configs {{ id_feature {{ feature_name: "c3" embedding_dim: 4
  hash_bucket_size: 30 embedding_name: "shared_emb" }} }}
feature_configs {{ id_feature {{ feature_name: "c4" embedding_dim: 4
  hash_bucket_size: 30 embedding_name: "shared_emb" }} }}
feature_configs {{ raw_feature {{ feature_name: "i2" value_dim: 3 }} }}
model_config {{
  feature_groups {{
    group_name: "all"
    feature_names: ["c1", "c2", "i1", "c3"]
    feature_names: "c4"
    feature_names: "i2"
    group_type: DEEP
  }}
  mask_net {{
    mask_net_module {{
      n_mask_blocks: 3
      mask_block {{ reduction_ratio: 1.3 hidden_dim: 16 }}
      use_parallel: {str(parallel).lower()}
      top_mlp {{ hidden_units: [24, 12] use_bn: {str(use_bn).lower()} }}
    }}
  }}
  num_class: 1
  losses {{ binary_cross_entropy {{}} }}
  metrics {{ auc {{}} }}
}}
"""


ID_FEATURES = {"c1": 50, "c2": 30, "c3": 30, "c4": 30}
RAW_FEATURES = {"i1": 1, "i2": 3}


def build(pipeline_text, seed):
    """The stand-in (in its TrainWrapper), randomized, in eval mode."""
    wrapper = TrainWrapper(MaskNet(textproto.parse(pipeline_text)))
    standins.randomize(wrapper, seed)
    return wrapper


def random_inputs(n, seed):
    """Feature -> ids [n, 1] or values [n, value_dim]; c2 has 2 ids a row."""
    g = torch.Generator().manual_seed(seed)
    inputs = {}
    for name, rows in ID_FEATURES.items():
        inputs[name] = torch.randint(0, rows, (n, 2 if name == "c2" else 1),
                                     generator=g)
    for name, width in RAW_FEATURES.items():
        inputs[name] = torch.randn(n, width, generator=g)
    return inputs
