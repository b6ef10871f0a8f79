#!/usr/bin/python3
"""Imports a MaskNet trained with another framework, in one step.

Usage:
  /usr/bin/python3 tools/import_model.py --from the-algorithm-ml \\
      --checkpoint recap.pt --config local_prod.yaml \\
      --model_root models --model_name home_recap [--version 1]
  /usr/bin/python3 tools/import_model.py --from fuxictr \\
      --checkpoint MaskNet_criteo.model --config model_config.yaml \\
      --feature_map feature_map.json --model_root models --model_name criteo \\
      [--expid MaskNet_criteo]
  /usr/bin/python3 tools/import_model.py --from torcheasyrec \\
      --checkpoint masknet.pt --config masknet_criteo.config \\
      --model_root models --model_name criteo [--max_ids 1]

--checkpoint is a torch.save'd state_dict of the framework's model (a
training wrapper's "model." prefix is removed). --config is the framework's
own model configuration file, for what the tensors cannot say (the-algorithm-
ml: its RecapConfig YAML, or just its `model` section; FuxiCTR: its
model_config.yaml, with --feature_map its feature_map.json; TorchEasyRec: its
pipeline config, protobuf text). Writes a complete
model version -- model_config.pbtxt and weights.safetensors -- that the
server's own loader has accepted, or nothing. README "Bring your own
checkpoint" lists what each framework's import supports.
"""

import argparse
import json
import sys

sys.dont_write_bytecode = True  # a tool writes its output and nothing else

import torch  # noqa: E402
import yaml  # noqa: E402

from masknet_tools import checkpoints  # noqa: E402
from masknet_tools import export  # noqa: E402
from masknet_tools import fuxictr_import  # noqa: E402
from masknet_tools import torcheasyrec_import  # noqa: E402
from masknet_tools import twitter_import  # noqa: E402

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


def _read_yaml(path):
    return _read(path, yaml.safe_load, "YAML")


def _read_json(path):
    return _read(path, json.loads, "JSON")


def import_checkpoint(args):
    """(model_config, weights, notes, checkpoint) of one framework's model."""
    if (args.feature_map is None) != (args.framework != "fuxictr"):
        raise checkpoints.CheckpointError(
            "--feature_map (FuxiCTR's feature_map.json) is needed with --from "
            "fuxictr, and only there")
    checkpoint = checkpoints.strip_wrapper_prefix(
        checkpoints.load_state_dict(args.checkpoint))
    checkpoints.check_framework(checkpoint, args.framework)
    if args.framework == "the-algorithm-ml":
        result = twitter_import.import_recap(checkpoint,
                                             _read_yaml(args.config))
    elif args.framework == "fuxictr":
        result = fuxictr_import.import_masknet(checkpoint,
                                               _read_yaml(args.config),
                                               _read_json(args.feature_map),
                                               args.expid)
    else:
        result = torcheasyrec_import.import_masknet(checkpoint,
                                                    _read(args.config),
                                                    args.max_ids)
    return result + (checkpoint,)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from",
                        dest="framework",
                        required=True,
                        choices=FRAMEWORKS,
                        help="the framework the model was trained with")
    parser.add_argument("--checkpoint",
                        required=True,
                        help="torch.save'd state_dict of the trained model")
    parser.add_argument("--config",
                        required=True,
                        help="the framework's own model configuration file")
    parser.add_argument(
        "--feature_map",
        help="fuxictr: the dataset's feature_map.json (features in order)")
    parser.add_argument(
        "--expid",
        help="fuxictr: the experiment of --config (when it holds several)")
    parser.add_argument(
        "--max_ids",
        type=int,
        default=1,
        help="torcheasyrec: the most ids a request may send for one id "
        "feature (it may also send none)")
    export.add_version_flags(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)

    weights, checkpoint = {}, {}
    try:
        model_config, weights, notes, checkpoint = import_checkpoint(args)
        for note in notes:
            print(f"import_model: note: {note}", file=sys.stderr)
        version_dir = export.export_to_flags(args, model_config, weights)
    except (ValueError, FileExistsError) as e:  # ours are all ValueErrors
        sys.exit("import_model: " +
                 checkpoints.with_checkpoint_names(str(e), checkpoint, weights))
    except (TypeError, AttributeError, KeyError, IndexError) as e:
        # A shape of checkpoint or config the checks above did not foresee.
        sys.exit(f"import_model: the checkpoint or --config is not laid out as "
                 f"{args.framework} writes them ({type(e).__name__}: {e})")
    print(f"wrote {version_dir}")


if __name__ == "__main__":
    main()
