#!/usr/bin/python3
"""Trains the demo MaskNet on synthetic home-timeline data and exports it.

Usage: /usr/bin/python3 tools/train_demo_model.py [--model_root models]
           [--seed 0] [--epochs 3]

Writes <model_root>/home_timeline/1/ (replacing it) with the held-out AUCs,
the data description, the seed and this command in the config's metadata.
Deterministic for a given seed; takes a few minutes on one thread.
"""

import argparse
import os
import shlex
import sys

import torch

from masknet_tools import protos
from masknet_tools import synthetic
from masknet_tools import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model_root",
        default=os.path.join(protos.REPO_ROOT, "models"),
        help="model repository to write into (default: models/)")
    parser.add_argument("--seed",
                        type=int,
                        default=0,
                        help="seed of data, init and order")
    parser.add_argument("--epochs",
                        type=int,
                        default=train.TrainingOptions.epochs)
    args = parser.parse_args()
    torch.set_num_threads(1)

    options = train.TrainingOptions(
        data=synthetic.SyntheticOptions(seed=args.seed),
        epochs=args.epochs,
        seed=args.seed)
    model, data, aucs = train.train(options)
    command = shlex.join(
        ["/usr/bin/python3", "tools/train_demo_model.py", *sys.argv[1:]])
    version_dir = train.export_demo(model, data, aucs, options, args.model_root,
                                    command)
    print(f"wrote {version_dir}: held-out AUC " +
          ", ".join(f"{task} {auc:.4f}" for task, auc in aucs.items()))


if __name__ == "__main__":
    main()
