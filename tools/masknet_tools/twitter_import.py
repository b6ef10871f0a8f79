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

from masknet_tools import config
from masknet_tools.protos import config_pb2

_TORCH_DEFAULT_EPS = 1e-5
_BLOCK_MODULES = {
    "_input_layer_norm": "input_norm",
    "_mask_layer.0": "mask.aggregation",
    "_mask_layer.2": "mask.projection",
    "_hidden_layer": "hidden",
    "_layer_norm": "layer_norm",
}


def map_mlp(state_dict, source_prefix, target_prefix):
    """Renames the tensors of one Twitter `Mlp`.

    Args:
      state_dict: a Twitter state dict.
      source_prefix: the Mlp's prefix, e.g. "_backbone._dense_layers." or
        "_towers.<task>.".
      target_prefix: ours, e.g. "mlp." or "tasks.<task>.".

    Returns:
      A dict of only the Mlp's tensors under our names: Linear layer i as
      `<target_prefix><i>.weight|bias`, the BatchNorm1d after it as
      `<target_prefix><i>.batch_norm.*` (num_batches_tracked dropped).

    Raises:
      ValueError: a module of the Mlp is neither a Linear nor a BatchNorm1d
        after a Linear.
    """
    pattern = re.compile(re.escape(source_prefix) + r"layers\.(\d+)\.(\w+)")
    modules = collections.defaultdict(dict)
    for key, value in state_dict.items():
        match = pattern.fullmatch(key)
        if match:
            modules[int(match[1])][match[2]] = value
    mapped, layer = {}, -1
    for index in sorted(modules):
        tensors = modules[index]
        where = f"{source_prefix}layers.{index}"
        if "running_mean" in tensors:
            if layer < 0:
                raise ValueError(f"{where}: a BatchNorm1d before any Linear")
            batch_norm = f"{target_prefix}{layer}.batch_norm."
            for name in ("running_mean", "running_var", "weight", "bias"):
                if name in tensors:
                    mapped[batch_norm + name] = tensors[name]
        elif (set(tensors) == {"weight", "bias"} and
              tensors["weight"].dim() == 2):
            layer += 1
            mapped[f"{target_prefix}{layer}.weight"] = tensors["weight"]
            mapped[f"{target_prefix}{layer}.bias"] = tensors["bias"]
        else:
            raise ValueError(
                f"{where}: unrecognised module tensors {sorted(tensors)}")
    return mapped


def map_masknet(state_dict, prefix=""):
    """Renames the tensors of a Twitter `MaskNet` found under `prefix`.

    Args:
      state_dict: a Twitter state dict (name to tensor).
      prefix: the MaskNet's prefix, e.g. "_backbone." ("" for a bare MaskNet).

    Returns:
      A new dict: the MaskNet's tensors under our names; every key not under
      `prefix + "_mask_blocks."` or `prefix + "_dense_layers."` passed through.

    Raises:
      ValueError: a MaskNet key is not one of the layout above.
    """
    block_pattern = re.compile(
        re.escape(prefix) + r"_mask_blocks\.(\d+)\.(.+)\.(weight|bias)")
    mlp_prefix = prefix + "_dense_layers."
    mapped = map_mlp(state_dict, mlp_prefix, "mlp.")
    mlp_keys = [
        key for key in state_dict if key.startswith(mlp_prefix) and
        not key.endswith(".num_batches_tracked")
    ]
    if len(mlp_keys) != len(mapped):
        raise ValueError(f"unrecognised tensors under {mlp_prefix!r}")
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
    mapped = map_masknet(state_dict, prefix)
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
                              input_norm_eps=_TORCH_DEFAULT_EPS,
                              layer_norm_eps=_TORCH_DEFAULT_EPS))
    mlp = []
    while f"mlp.{len(mlp)}.weight" in mapped:
        layer = f"mlp.{len(mlp)}."
        batch_norm = None
        if layer + "batch_norm.running_mean" in mapped:
            batch_norm = config.batch_norm(
                _TORCH_DEFAULT_EPS,
                affine=layer + "batch_norm.weight" in mapped)
        is_last = f"mlp.{len(mlp) + 1}.weight" not in mapped
        if is_last and not final_layer_activation:
            activation = config_pb2.ACTIVATION_NONE
        else:
            activation = config_pb2.RELU
        mlp.append(
            config.dense_layer(mapped[layer + "weight"].shape[0], activation,
                               batch_norm))
    return config.masknet(mode, blocks), mlp
