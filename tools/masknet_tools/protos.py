"""Python modules for the project's protos, generated on first use.

`protoc --python_out` writes the modules into tools/.gen/ (ignored by git);
a module is regenerated when its .proto is newer than it. Importing this
module exposes:

    config_pb2   masknet.config.v1   proto/masknet/config/v1/model_config.proto
    ranker_pb2   masknet.serving.v1  proto/masknet/serving/v1/ranker.proto
    fixture_pb2  masknet.testing.v1  tests/fixtures/parity_fixture.proto

REQUIRES: `protoc` on PATH from the protobuf release of the Python runtime
(protoc 3.21 for google.protobuf 4.21).
"""

import importlib
import os
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEN_DIR = os.path.join(REPO_ROOT, "tools", ".gen")

# (include root, .proto path relative to it); imports resolve against all roots.
_PROTOS = (
    (os.path.join(REPO_ROOT, "proto"), "masknet/config/v1/model_config.proto"),
    (os.path.join(REPO_ROOT, "proto"), "masknet/serving/v1/ranker.proto"),
    (os.path.join(REPO_ROOT, "tests", "fixtures"), "parity_fixture.proto"),
)


def _module_path(relative_proto):
    return os.path.join(GEN_DIR, relative_proto[:-len(".proto")] + "_pb2.py")


def _is_stale(root, relative_proto):
    generated = _module_path(relative_proto)
    if not os.path.exists(generated):
        return True
    source = os.path.join(root, relative_proto)
    return os.path.getmtime(source) > os.path.getmtime(generated)


def _generate(root, relative_proto):
    """Runs protoc into a scratch directory, then moves the module into place.

    The scratch directory is inside GEN_DIR, so the move is an atomic rename and
    a concurrent process never imports a partial module.
    """
    os.makedirs(GEN_DIR, exist_ok=True)
    include_args = sorted({"-I" + include for include, _ in _PROTOS})
    with tempfile.TemporaryDirectory(dir=GEN_DIR) as scratch:
        command = ["protoc", *include_args, "--python_out=" + scratch]
        subprocess.run(command + [os.path.join(root, relative_proto)],
                       check=True)
        generated = _module_path(relative_proto)
        staged = os.path.join(scratch, os.path.relpath(generated, GEN_DIR))
        os.makedirs(os.path.dirname(generated), exist_ok=True)
        os.replace(staged, generated)


def _load_modules():
    for root, relative_proto in _PROTOS:
        if _is_stale(root, relative_proto):
            _generate(root, relative_proto)
    if GEN_DIR not in sys.path:
        sys.path.insert(0, GEN_DIR)
    modules = []
    for _, relative_proto in _PROTOS:
        package_path = relative_proto[:-len(".proto")].replace("/", ".")
        modules.append(importlib.import_module(package_path + "_pb2"))
    return modules


config_pb2, ranker_pb2, fixture_pb2 = _load_modules()
