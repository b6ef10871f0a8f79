#!/usr/bin/python3
"""Exports a checked model version from a config and a state dict.

Usage:
  /usr/bin/python3 tools/export_model.py --config model_config.pbtxt \\
      --weights state.pt --model_root models --model_name NAME \\
      [--version 1] [--bf16] [--overwrite] [--twitter_masknet_prefix PREFIX]

--config is a ModelConfig in text format, or the name of a reference config
(masknet_tools/reference_configs.py). --weights is a torch.save'd dict of
tensors or a .safetensors file; with --twitter_masknet_prefix its Twitter
the-algorithm-ml MaskNet tensors under PREFIX (e.g. "_backbone.") are renamed
to ours first. Tensor names and shapes must match the config exactly and the
values must be finite; nothing is written otherwise.
"""

import argparse
import sys

import torch

from masknet_tools import config
from masknet_tools import export
from masknet_tools import reference_configs
from masknet_tools import safetensors_io
from masknet_tools import twitter_import


def _read_config(source):
    if source in reference_configs.NAMES:
        return reference_configs.get(source)
    return config.read_config(source)


def _read_weights(path):
    if path.endswith(".safetensors"):
        arrays = safetensors_io.read(path)
        return {name: torch.from_numpy(a) for name, a in arrays.items()}
    weights = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(weights, dict):
        raise ValueError(
            f"{path}: expected a dict of tensors, got {type(weights).__name__}")
    return weights


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        required=True,
        help="model_config.pbtxt, or a reference config name: " +
        ", ".join(reference_configs.NAMES))
    parser.add_argument("--weights",
                        required=True,
                        help="state dict: .pt (torch.save) or .safetensors")
    export.add_version_flags(parser)
    parser.add_argument(
        "--twitter_masknet_prefix",
        help="rename the Twitter MaskNet tensors under this prefix first")
    args = parser.parse_args()
    torch.set_num_threads(1)

    weights = _read_weights(args.weights)
    if args.twitter_masknet_prefix is not None:
        weights = twitter_import.map_masknet(weights,
                                             args.twitter_masknet_prefix)
    try:
        version_dir = export.export_to_flags(args,
                                            _read_config(args.config),
                                            weights)
    except (config.ConfigError, export.ExportError, FileExistsError) as e:
        sys.exit(f"export_model: {e}")
    print(f"wrote {version_dir}")


if __name__ == "__main__":
    main()
