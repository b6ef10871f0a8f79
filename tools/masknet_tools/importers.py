"""One entry to the three importers: a framework's checkpoint and its own
configuration files -> (model_config, weights, notes).

tools/import_model.py is its command line; the tests call it in-process.
"""

import json
import os

import yaml

from masknet_tools import checkpoints
from masknet_tools import fuxictr_import
from masknet_tools import torcheasyrec_import
from masknet_tools import twitter_import

FRAMEWORKS = ("the-algorithm-ml", "fuxictr", "torcheasyrec")


def _read(path, parse=None, kind="UTF-8 text"):
    """The file at `path`, parsed by `parse` (which raises ValueError)."""
    try:
        with open(path) as f:
            text = f.read()
        return parse(text) if parse else text
    except OSError as e:
        raise checkpoints.CheckpointError(f"{path}: {e.strerror}") from None
    except (ValueError, yaml.YAMLError) as e:
        raise checkpoints.CheckpointError(f"{path}: not {kind}: {e}") from None


def import_state(framework, saved, config_path, feature_map_path=None,
                 expid=None, max_ids=1):
    """Imports a state_dict as the file held it (a wrapper's prefix and all).

    Args:
      framework: one of FRAMEWORKS.
      saved: the checkpoint's name -> tensor.
      config_path: the framework's own configuration file.
      feature_map_path: FuxiCTR's feature_map.json (FuxiCTR only).
      expid: FuxiCTR's experiment in config_path, when it holds several.
      max_ids: TorchEasyRec: the most ids a request may send for a feature.

    Returns:
      (model_config, weights, notes, saved): messages about our tensors can
      name the checkpoint's by checkpoints.with_checkpoint_names(..., saved,
      weights).

    Raises:
      CheckpointError (a ValueError): why it cannot be imported.
    """
    if framework not in FRAMEWORKS:
        raise checkpoints.CheckpointError(f"unknown framework {framework!r}")
    if (feature_map_path is None) != (framework != "fuxictr"):
        raise checkpoints.CheckpointError(
            "--feature_map (FuxiCTR's feature_map.json) is needed with --from "
            "fuxictr, and only there")
    prefix = checkpoints.wrapper_prefix(saved)
    checkpoint = checkpoints.strip_wrapper_prefix(saved)
    checkpoints.check_framework(checkpoint, framework)
    if framework == "the-algorithm-ml":
        result = twitter_import.import_recap(
            checkpoint, _read(config_path, yaml.safe_load, "YAML"),
            config_dir=os.path.dirname(os.path.abspath(config_path)),
            name_prefix=prefix)
    elif framework == "fuxictr":
        result = fuxictr_import.import_masknet(
            checkpoint, _read(config_path, yaml.safe_load, "YAML"),
            _read(feature_map_path, json.loads, "JSON"), expid,
            name_prefix=prefix)
    else:
        result = torcheasyrec_import.import_masknet(
            checkpoint, _read(config_path), max_ids, name_prefix=prefix)
    return result + (saved,)
