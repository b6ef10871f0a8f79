"""Tests of the Python tooling (tools/masknet_tools).

Run from the repository root:
    /usr/bin/python3 -m unittest discover -s tests/python -t .
Importing this package puts tools/ on sys.path.
"""

import os
import sys

_TOOLS = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                 "tools"))
if _TOOLS not in sys.path:
    sys.path.insert(0, _TOOLS)
