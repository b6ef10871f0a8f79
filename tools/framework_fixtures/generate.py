#!/usr/bin/python3
"""Writes the framework fixtures with each framework's own code (by hand).

    /usr/bin/python3 tools/framework_fixtures/generate.py \\
        --framework {the-algorithm-ml,fuxictr,torcheasyrec} \\
        --source CHECKOUT [--out tests/fixtures/frameworks]

CHECKOUT is a git checkout of the framework's public repository (README.md
beside this file says which commit the committed fixtures come from and what
each framework needs). Its code builds small models from its own config
loading and classes; every parameter and buffer is randomised; the
checkpoint, configuration, requests and the framework's own scores for them
are written as fixtures (fixture_writer.py says how they are laid out).
Nothing of the framework's code is written into the project: only what it
produced. The same checkout gives the same bytes.
"""

import argparse
import importlib
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # nothing written into the checkouts
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

MODULES = {
    "the-algorithm-ml": "the_algorithm_ml",
    "fuxictr": "fuxictr_fixtures",
    "torcheasyrec": "torcheasyrec",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", required=True, choices=sorted(MODULES))
    parser.add_argument("--source", required=True, help="a git checkout of the framework's repository")
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "frameworks"),
                        help="the fixtures' folder (default: %(default)s)")
    args = parser.parse_args()
    source = os.path.abspath(args.source)
    try:
        commit = subprocess.run(["git", "-C", source, "rev-parse", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"generate: --source {source} is not a git checkout ({e})")
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, HERE)
    module = importlib.import_module(MODULES[args.framework])
    for folder in module.generate(source, commit, args.out):
        print(f"wrote {os.path.relpath(folder, ROOT)}")


if __name__ == "__main__":
    main()
