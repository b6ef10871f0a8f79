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
import sys

sys.dont_write_bytecode = True  # a tool writes its output and nothing else

import torch  # noqa: E402

from masknet_tools import checkpoints  # noqa: E402
from masknet_tools import export  # noqa: E402
from masknet_tools import importers  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from",
                        dest="framework",
                        required=True,
                        choices=importers.FRAMEWORKS,
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
        model_config, weights, notes, checkpoint = importers.import_state(
            args.framework, checkpoints.load_state_dict(args.checkpoint),
            args.config, args.feature_map, args.expid, args.max_ids)
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
