"""A stand-in for Twitter's heavy ranker, written here from the-algorithm-ml.

The modules below have the attribute names (hence the state_dict keys) and
the eval-mode computations of the-algorithm-ml's
projects/home/recap/model/{entrypoint,feature_transform,mask_net,mlp,
numeric_calibration}.py and are configured by the same YAML `model` section
(config.py's field names and defaults). They were written for our tests from
that code's documented behaviour, not copied from it. Twitter's serial MaskNet
indexes its MLP instead of calling it (a bug); the stand-in calls it.
"""

import torch
from torch import nn

from tests.python import standins


class InputNonFinite(nn.Module):
    """NaN and +-inf -> fill value (a buffer that is not saved)."""

    def __init__(self, fill_value=0.0):
        super().__init__()
        self.register_buffer("fill_value",
                             torch.as_tensor(fill_value, dtype=torch.float32),
                             persistent=False)

    def forward(self, x):
        return torch.where(torch.isfinite(x), x, self.fill_value)


class Log1pAbs(nn.Module):

    def forward(self, x):
        return torch.sign(x) * torch.log1p(torch.abs(x))


class BatchNorm(nn.Module):

    def __init__(self, width, options):
        super().__init__()
        self.layer = nn.BatchNorm1d(width,
                                    affine=options.get("affine", True),
                                    momentum=options.get("momentum", 0.1))

    def forward(self, x):
        return self.layer(x)


class Clamp(nn.Module):

    def __init__(self, min_value, max_value):
        super().__init__()
        self.register_buffer("min_value",
                             torch.as_tensor(min_value, dtype=torch.float32))
        self.register_buffer("max_value",
                             torch.as_tensor(max_value, dtype=torch.float32))

    def forward(self, x):
        return torch.clamp(x, min=self.min_value, max=self.max_value)


class LayerNorm(nn.Module):

    def __init__(self, width, options):
        super().__init__()
        self.layer = nn.LayerNorm(width,
                                  eps=options.get("epsilon", 1e-3),
                                  elementwise_affine=options.get(
                                      "center", True))

    def forward(self, x):
        return self.layer(x)


class DoubleNormLog(nn.Module):
    """The preprocessor: continuous features, then with the binary ones."""

    def __init__(self, continuous, binary, options):
        super().__init__()
        layers = [InputNonFinite(), Log1pAbs()]
        if options.get("batch_norm_config") is not None:
            layers.append(BatchNorm(continuous, options["batch_norm_config"]))
        clip = options.get("clip_magnitude", 5.0)
        layers.append(Clamp(-clip, clip))
        self._before_concat_layers = nn.Sequential(*layers)
        self.layer_norm = None
        if options.get("layer_norm_config") is not None:
            self.layer_norm = LayerNorm(continuous + binary,
                                        options["layer_norm_config"])

    def forward(self, continuous, binary):
        x = torch.cat([self._before_concat_layers(continuous), binary], dim=1)
        return self.layer_norm(x) if self.layer_norm is not None else x


class Mlp(nn.Module):
    """Linear, [BatchNorm1d], ReLU, [Dropout] per hidden layer; last Linear."""

    def __init__(self, in_features, options):
        super().__init__()
        sizes = options["layer_sizes"]
        batch_norm = options.get("batch_norm")
        dropout = options.get("dropout")
        modules = []
        for size in sizes[:-1]:
            modules.append(nn.Linear(in_features, size))
            if batch_norm is not None:
                modules.append(
                    nn.BatchNorm1d(size,
                                   affine=batch_norm.get("affine", True),
                                   momentum=batch_norm.get("momentum", 0.1)))
            modules.append(nn.ReLU())
            if dropout is not None:
                modules.append(nn.Dropout(dropout.get("rate", 0.1)))
            in_features = size
        modules.append(nn.Linear(in_features, sizes[-1]))
        if options.get("final_layer_activation", False):
            modules.append(nn.ReLU())
        self.layers = nn.ModuleList(modules)
        self.out_features = sizes[-1]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return {"output": x}


class MaskBlock(nn.Module):

    def __init__(self, options, input_dim, mask_input_dim):
        super().__init__()
        self._input_layer_norm = nn.LayerNorm(
            input_dim) if options["input_layer_norm"] else None
        if options.get("reduction_factor"):
            aggregation = int(mask_input_dim * options["reduction_factor"])
        else:
            aggregation = options["aggregation_size"]
        self._mask_layer = nn.Sequential(nn.Linear(mask_input_dim, aggregation),
                                         nn.ReLU(),
                                         nn.Linear(aggregation, input_dim))
        self._hidden_layer = nn.Linear(input_dim, options["output_size"])
        self._layer_norm = nn.LayerNorm(options["output_size"])

    def forward(self, net, mask_input):
        if self._input_layer_norm is not None:
            net = self._input_layer_norm(net)
        return self._layer_norm(
            self._hidden_layer(net * self._mask_layer(mask_input)))


class MaskNet(nn.Module):

    def __init__(self, options, in_features):
        super().__init__()
        self.use_parallel = options.get("use_parallel", False)
        blocks, input_dim = [], in_features
        for block in options["mask_blocks"]:
            blocks.append(MaskBlock(block, input_dim, in_features))
            if not self.use_parallel:
                input_dim = block["output_size"]
        self._mask_blocks = nn.ModuleList(blocks)
        sizes = [b["output_size"] for b in options["mask_blocks"]]
        total = sum(sizes) if self.use_parallel else sizes[-1]
        self._dense_layers = None
        if options.get("mlp") is not None:
            self._dense_layers = Mlp(total, options["mlp"])
            total = self._dense_layers.out_features
        self.out_features = total

    def forward(self, inputs):
        if self.use_parallel:
            net = torch.cat([b(inputs, inputs) for b in self._mask_blocks],
                            dim=1)
        else:
            net = inputs
            for block in self._mask_blocks:
                net = block(net, inputs)
        if self._dense_layers is not None:
            net = self._dense_layers(net)["output"]
        return {"output": net}


class NumericCalibration(nn.Module):

    def __init__(self, pos_downsampling_rate, neg_downsampling_rate):
        super().__init__()
        self.register_buffer(
            "ratio",
            torch.as_tensor(neg_downsampling_rate / pos_downsampling_rate,
                            dtype=torch.float32))

    def forward(self, probs):
        return probs * self.ratio / (1.0 - probs + self.ratio * probs)


EMBEDDINGS = ("user_embedding", "user_eng_embedding", "author_embedding")


class MultiTaskRankingModel(nn.Module):
    """share_all: towers on the MaskNet backbone's output."""

    def __init__(self, model, continuous, binary, embeddings, rates):
        """`model`: the YAML model section; `embeddings`: name -> width of
        those present; `rates`: task -> (pos, neg) down-sampling rates."""
        super().__init__()
        self._preprocessor = DoubleNormLog(
            continuous, binary,
            model["featurization_config"]["double_norm_log_config"])
        for name in EMBEDDINGS:
            setattr(
                self, f"_{name}_layer_norm",
                nn.LayerNorm(embeddings[name]) if name in embeddings else None)
        self.embedding_names = [n for n in EMBEDDINGS if n in embeddings]
        width = continuous + binary + sum(embeddings.values())
        self._backbone = MaskNet(model["backbone"]["mask_net_config"], width)
        towers, affine_maps, calibrators = {}, {}, {}
        for task, options in model["tasks"].items():
            safe = task.replace(".", "__")
            towers[safe] = Mlp(self._backbone.out_features,
                               options["mlp_config"])
            if options.get("affine_map") is not None:
                affine = nn.Linear(1, 1)
                with torch.no_grad():
                    affine.weight.fill_(options["affine_map"]["scale"])
                    affine.bias.fill_(options["affine_map"]["bias"])
                affine_maps[safe] = affine
            else:
                affine_maps[safe] = nn.Identity()
            calibrators[safe] = NumericCalibration(*rates.get(task, (1.0, 1.0)))
        self._towers = nn.ModuleDict(towers)
        self._affine_maps = nn.ModuleDict(affine_maps)
        self._calibrators = nn.ModuleDict(calibrators)

    def forward(self, continuous, binary, **embeddings):
        parts = [self._preprocessor(continuous, binary)]
        for name in self.embedding_names:
            parts.append(getattr(self, f"_{name}_layer_norm")(embeddings[name]))
        net = self._backbone(torch.cat(parts, dim=1))["output"]
        scores = []
        for safe, tower in self._towers.items():
            logits = self._affine_maps[safe](tower(net)["output"])
            scores.append(self._calibrators[safe](torch.sigmoid(logits)))
        return torch.cat(scores, dim=1)


class ModelAndLoss(nn.Module):
    """The training wrapper: every tensor name gets the prefix "model."."""

    def __init__(self, model):
        super().__init__()
        self.model = model


# A heavy ranker at reduced width, configured as local_prod.yaml configures
# the real one (parallel MaskNet with an MLP whose last layer has a ReLU;
# towers [.., .., 1] with non-affine batch norm, one with dropout; affine
# maps; a calibration ratio below and one above 1).
def example(parallel=True):
    """(recap_config, widths, rates): the YAML config as a dict, input
    widths, and each task's (pos, neg) down-sampling rates.

    The serial variant also has the other preprocessing: no batch norm (the
    continuous feature count is then the data config's truncation), a
    LayerNorm eps of 1e-3, and no user_eng_embedding.
    """
    tower = {
        "layer_sizes": [16, 8, 1],
        "batch_norm": {
            "affine": False,
            "momentum": 0.1
        }
    }
    blocks = [{
        "output_size": 24,
        "aggregation_size": 32,
        "input_layer_norm": False
    }, {
        "output_size": 20,
        "reduction_factor": 0.5,
        "input_layer_norm": True
    }]
    model = {
        "multi_task_type": "share_all",
        "featurization_config": {
            "double_norm_log_config": {
                "batch_norm_config": {
                    "affine": True,
                    "momentum": 0.01
                },
                "clip_magnitude": 5.0,
                "layer_norm_config": {
                    "axis": -1,
                    "epsilon": 0.0,
                    "center": True,
                    "scale": True
                }
            }
        },
        "backbone": {
            "mask_net_config": {
                "use_parallel": parallel,
                "mask_blocks": blocks,
                "mlp": {
                    "layer_sizes": [28],
                    "final_layer_activation": True
                }
            }
        },
        "tasks": {
            "recap.engagement.is_favorited": {
                "mlp_config": tower,
                "affine_map": {
                    "scale": 1.5,
                    "bias": -0.25
                }
            },
            "recap.engagement.is_replied": {
                "mlp_config": dict(tower, dropout={"rate": 0.1})
            },
            "recap.engagement.is_report_tweet_clicked": {
                "mlp_config": tower,
                "affine_map": {
                    "scale": 0.5,
                    "bias": 1.0
                }
            },
        },
    }
    widths = {
        "continuous": 37,
        "binary": 6,
        "user_embedding": 10,
        "user_eng_embedding": 9,
        "author_embedding": 10
    }
    rates = {
        "recap.engagement.is_favorited": (0.8387, 0.01),
        "recap.engagement.is_report_tweet_clicked": (0.2, 0.5),
    }
    recap = {"model": model}
    if not parallel:
        preprocessing = model["featurization_config"]["double_norm_log_config"]
        del preprocessing["batch_norm_config"]
        preprocessing["layer_norm_config"]["epsilon"] = 1e-3
        recap["train_data"] = {
            "preprocess": {
                "truncate_and_slice": {
                    "continuous_feature_truncation": widths["continuous"]
                }
            }
        }
        del widths["user_eng_embedding"]
    return recap, widths, rates


def build(recap_config, widths, rates, seed=0):
    """The stand-in (inside its training wrapper), randomized."""
    model = MultiTaskRankingModel(
        recap_config["model"], widths["continuous"], widths["binary"],
        {n: widths[n] for n in EMBEDDINGS if n in widths}, rates)
    wrapper = ModelAndLoss(model)
    standins.randomize(wrapper, seed)
    return wrapper


def random_inputs(widths, n, seed):
    """One viewer's inputs for `n` candidates, as float32 tensors; the
    continuous features have NaN, +-inf and values past the clamp."""
    g = torch.Generator().manual_seed(seed)
    continuous = torch.randn(n, widths["continuous"], generator=g) * 20
    continuous[0, 0] = float("nan")
    continuous[1 % n, 1] = float("inf")
    continuous[2 % n, 2] = -float("inf")
    continuous[3 % n, 3] = 1e30
    inputs = {
        "continuous": continuous,
        "binary": (torch.rand(n, widths["binary"], generator=g) < 0.3).float(),
    }
    for name in EMBEDDINGS:
        if name in widths:
            rows = 1 if name.startswith("user") else n
            inputs[name] = torch.randn(rows, widths[name],
                                       generator=g).expand(n, -1)
    return inputs


def scope_values(inputs, row):
    """Our per-field values of candidate `row` (user embeddings: context)."""
    return {name: values[row].tolist() for name, values in inputs.items()}
