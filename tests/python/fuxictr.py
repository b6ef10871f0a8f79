"""A stand-in for FuxiCTR's MaskNet (model_zoo/MaskNet), written here.

The modules below have the attribute names (hence the state_dict keys) and
the eval-mode computations of FuxiCTR's MaskNet, its FeatureEmbedding and
MLP_Block, written for our tests from that code's documented behaviour, not
copied from it; they are configured by the same model parameters and
feature_map.json.
"""

import torch
from torch import nn

from tests.python import standins


class FeatureEmbeddingDict(nn.Module):

    def __init__(self, feature_map, embedding_dim):
        super().__init__()
        self.specs = [(name, spec)
                      for entry in feature_map["features"]
                      for name, spec in entry.items()
                      if spec["type"] != "meta"]
        layers = {}
        for name, spec in self.specs:
            if spec["type"] == "numeric":
                layers[name] = nn.Linear(1, embedding_dim, bias=False)
            else:
                layers[name] = nn.Embedding(spec["vocab_size"],
                                            embedding_dim,
                                            padding_idx=spec.get("padding_idx"))
        self.embedding_layers = nn.ModuleDict(layers)

    def forward(self, inputs):
        """[n, F, d]: each field's embedding (sequences pooled)."""
        embeddings = []
        for name, spec in self.specs:
            layer = self.embedding_layers[name]
            if spec["type"] == "numeric":
                embeddings.append(layer(inputs[name].float().view(-1, 1)))
            elif spec["type"] == "categorical":
                embeddings.append(layer(inputs[name]))
            else:  # sequence [n, max_len] padded with 0: masked pooling
                rows = layer(inputs[name])
                total = rows.sum(dim=1)
                if spec.get("feature_encoder") == "layers.MaskedSumPooling()":
                    embeddings.append(total)
                else:
                    present = (rows.sum(dim=-1) != 0).float().sum(dim=1,
                                                                   keepdim=True)
                    embeddings.append(total / (present + 1e-12))
        return torch.stack(embeddings, dim=1)


class FeatureEmbedding(nn.Module):

    def __init__(self, feature_map, embedding_dim):
        super().__init__()
        self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)

    def forward(self, inputs):
        return self.embedding_layer(inputs)


class MaskBlock(nn.Module):

    def __init__(self, input_dim, hidden_dim, output_dim, reduction_ratio,
                 dropout_rate, layer_norm):
        super().__init__()
        aggregation = int(hidden_dim * reduction_ratio)
        self.mask_layer = nn.Sequential(nn.Linear(input_dim, aggregation),
                                        nn.ReLU(),
                                        nn.Linear(aggregation, hidden_dim))
        layers = [nn.Linear(hidden_dim, output_dim, bias=False)]
        if layer_norm:
            layers.append(nn.LayerNorm(output_dim))
        layers.append(nn.ReLU())
        if dropout_rate > 0:
            layers.append(nn.Dropout(dropout_rate))
        self.hidden_layer = nn.Sequential(*layers)

    def forward(self, v_emb, v_hidden):
        return self.hidden_layer(self.mask_layer(v_emb) * v_hidden)


class MLP_Block(nn.Module):  # pylint: disable=invalid-name

    def __init__(self, input_dim, hidden_units, dropout_rate, batch_norm):
        super().__init__()
        layers = []
        for units in hidden_units:
            layers.append(nn.Linear(input_dim, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(nn.ReLU())
            if dropout_rate > 0:
                layers.append(nn.Dropout(dropout_rate))
            input_dim = units
        layers += [nn.Linear(input_dim, 1), nn.Sigmoid()]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        return self.mlp(x)


class SerialMaskNet(nn.Module):

    def __init__(self, input_dim, params):
        super().__init__()
        units = [input_dim] + params["dnn_hidden_units"]
        self.mask_blocks = nn.ModuleList(
            MaskBlock(input_dim, units[i], units[i + 1],
                      params["reduction_ratio"], params.get("net_dropout", 0),
                      params.get("net_layernorm", True))
            for i in range(len(units) - 1))
        self.fc = nn.Sequential(nn.Linear(units[-1], 1), nn.Sigmoid())

    def forward(self, v_emb, v_hidden):
        for block in self.mask_blocks:
            v_hidden = block(v_emb, v_hidden)
        return self.fc(v_hidden)


class ParallelMaskNet(nn.Module):

    def __init__(self, input_dim, params, batch_norm):
        super().__init__()
        block_dim = params["parallel_block_dim"]
        self.mask_blocks = nn.ModuleList(
            MaskBlock(input_dim, input_dim, block_dim,
                      params["reduction_ratio"], params.get("net_dropout", 0),
                      params.get("net_layernorm", True))
            for _ in range(params["parallel_num_blocks"]))
        self.dnn = MLP_Block(block_dim * params["parallel_num_blocks"],
                             params["dnn_hidden_units"],
                             params.get("net_dropout", 0), batch_norm)

    def forward(self, v_emb, v_hidden):
        return self.dnn(
            torch.cat([b(v_emb, v_hidden) for b in self.mask_blocks], dim=-1))


class MaskNet(nn.Module):

    def __init__(self, feature_map, params, batch_norm=False):
        super().__init__()
        d = params["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(feature_map, d)
        self.num_fields = len(self.embedding_layer.embedding_layer.specs)
        input_dim = self.num_fields * d
        if params["model_type"] == "SerialMaskNet":
            self.mask_net = SerialMaskNet(input_dim, params)
        else:
            self.mask_net = ParallelMaskNet(input_dim, params, batch_norm)
        self.emb_norm = None
        if params.get("emb_layernorm", True):
            self.emb_norm = nn.ModuleList(
                nn.LayerNorm(d) for _ in range(self.num_fields))

    def forward(self, inputs):
        emb = self.embedding_layer(inputs)
        hidden = emb
        if self.emb_norm is not None:
            hidden = torch.stack(
                [norm(emb[:, i]) for i, norm in enumerate(self.emb_norm)],
                dim=1)
        return self.mask_net(emb.flatten(start_dim=1),
                             hidden.flatten(start_dim=1))


def feature_map():
    """A feature_map.json: user features (request context), item features,
    numeric ones, a mean- and a sum-pooled sequence, and a meta feature."""
    features = [
        {"user_id": {"source": "user", "type": "categorical",
                     "padding_idx": 0, "vocab_size": 25}},
        {"user_age": {"source": "user", "type": "numeric"}},
        {"item_id": {"source": "item", "type": "categorical",
                     "padding_idx": 0, "vocab_size": 40}},
        {"item_price": {"source": "item", "type": "numeric"}},
        {"group": {"type": "meta"}},
        {"item_tags": {"source": "item", "type": "sequence",
                       "feature_encoder": "layers.MaskedAveragePooling()",
                       "padding_idx": 0, "max_len": 4, "vocab_size": 30}},
        {"clicks": {"source": "", "type": "sequence",
                    "feature_encoder": "layers.MaskedSumPooling()",
                    "padding_idx": 0, "max_len": 3, "vocab_size": 12}},
    ]
    return {"dataset_id": "tiny", "num_fields": 6, "total_features": 110,
            "input_length": 12, "labels": ["clk"], "features": features}


def model_config(model_type, emb_layernorm=True, net_layernorm=True):
    """FuxiCTR's model_config.yaml with Base and one MaskNet experiment."""
    return {
        "Base": {"model_root": "./checkpoints/", "verbose": 1},
        "MaskNet_tiny": {
            "model": "MaskNet", "dataset_id": "tiny",
            "loss": "binary_crossentropy", "metrics": ["logloss", "AUC"],
            "task": "binary_classification", "optimizer": "adam",
            "learning_rate": 1.0e-3, "batch_size": 128, "embedding_dim": 6,
            "dnn_hidden_units": [20, 12], "dnn_hidden_activations": "relu",
            "model_type": model_type, "parallel_num_blocks": 3,
            "parallel_block_dim": 10, "reduction_ratio": 0.7,
            "emb_layernorm": emb_layernorm, "net_layernorm": net_layernorm,
            "net_dropout": 0.1, "epochs": 1, "seed": 2021,
        },
    }


def build(yaml_config, seed, batch_norm=False):
    params = dict(yaml_config["Base"], **yaml_config["MaskNet_tiny"])
    model = MaskNet(feature_map(), params, batch_norm)
    standins.randomize(model, seed)
    with torch.no_grad():  # padding rows stay zero, as nn.Embedding keeps them
        for name, layer in model.embedding_layer.embedding_layer.embedding_layers.items():
            if isinstance(layer, nn.Embedding) and layer.padding_idx is not None:
                layer.weight[layer.padding_idx].zero_()
    return model


def random_inputs(n, seed):
    """Feature -> values: ids [n], values [n], sequences [n, max_len] padded
    with 0 (some all padding), as FuxiCTR's data loader gives them."""
    g = torch.Generator().manual_seed(seed)
    inputs = {"user_id": torch.full((n,), 7, dtype=torch.long),
              "user_age": torch.full((n,), 0.8),
              "item_id": torch.randint(1, 40, (n,), generator=g),
              "item_price": torch.randn(n, generator=g) * 2}
    for name, (rows, max_len) in {"item_tags": (30, 4), "clicks": (12, 3)}.items():
        lengths = torch.randint(0, max_len + 1, (n,), generator=g)
        ids = torch.randint(1, rows, (n, max_len), generator=g)
        inputs[name] = torch.where(
            torch.arange(max_len)[None, :] < lengths[:, None], ids,
            torch.zeros_like(ids))
    return inputs


def unpadded(ids):
    """A padded sequence's ids without the padding (what a request sends)."""
    return [i for i in ids.tolist() if i != 0]
