#!/usr/bin/python3
"""Writes the parity fixtures under tests/fixtures/ (masknet_tools/fixtures.py).

Usage: /usr/bin/python3 tools/write_fixtures.py [--only NAME ...] [--root DIR]

Deterministic: the same code writes the same bytes.
"""

import argparse
import os

import torch

from masknet_tools import fixtures
from masknet_tools import protos


def _size(path):
    return sum(
        os.path.getsize(os.path.join(directory, name))
        for directory, _, names in os.walk(path)
        for name in names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only",
                        nargs="+",
                        choices=fixtures.FIXTURE_NAMES,
                        default=fixtures.FIXTURE_NAMES,
                        help="fixtures to write (default: all)")
    parser.add_argument("--root",
                        default=os.path.join(protos.REPO_ROOT, "tests",
                                             "fixtures"),
                        help="fixtures directory (default: tests/fixtures)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.only:
        fixture_dir = fixtures.write_fixture(name, args.root)
        print(f"{fixture_dir}: {_size(fixture_dir) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
