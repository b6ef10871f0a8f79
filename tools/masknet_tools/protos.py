"""The project's protos as Python message classes, built in memory.

`protoc --descriptor_set_out` describes the .proto files and the classes are
made from that description when this module is first imported: nothing is
written anywhere, so the tools run from a read-only checkout, and the classes
are always those of the .proto files beside them. Importing this module
exposes, like generated `_pb2` modules (message classes, enums, enum values):

    config_pb2   masknet.config.v1   proto/masknet/config/v1/model_config.proto
    ranker_pb2   masknet.serving.v1  proto/masknet/serving/v1/ranker.proto

and, for the tests' tooling only, on first use:

    fixture_pb2  masknet.testing.v1  tests/fixtures/parity_fixture.proto

REQUIRES: `protoc` on PATH (protobuf-compiler).
"""

import os
import subprocess
import types

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf.internal import enum_type_wrapper

REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PROTO_ROOT = os.path.join(REPO_ROOT, "proto")
_FIXTURE_ROOT = os.path.join(REPO_ROOT, "tests", "fixtures")

_pool = descriptor_pool.DescriptorPool()
_factory = message_factory.MessageFactory(_pool)


def _describe(include_roots, relative_protos):
    """Adds the files (and what they import) to the pool."""
    command = ["protoc", *("-I" + r for r in include_roots), "--include_imports",
               "--descriptor_set_out=/dev/stdout"]
    result = subprocess.run(command + list(relative_protos), check=True,
                            capture_output=True)
    for file_proto in descriptor_pb2.FileDescriptorSet.FromString(
            result.stdout).file:
        try:
            _pool.FindFileByName(file_proto.name)
        except KeyError:
            _pool.Add(file_proto)


def _message_class(descriptor):
    get = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    return get(descriptor) if get else _factory.GetPrototype(descriptor)


def _module(relative_proto):
    """A module-like namespace of one file's messages, enums and enum values."""
    file = _pool.FindFileByName(relative_proto)
    module = types.ModuleType(relative_proto[:-len(".proto")].replace("/", ".") + "_pb2")
    module.DESCRIPTOR = file
    for name, message in file.message_types_by_name.items():
        setattr(module, name, _message_class(message))
    for name, enum in file.enum_types_by_name.items():
        setattr(module, name, enum_type_wrapper.EnumTypeWrapper(enum))
        for value in enum.values:
            setattr(module, value.name, value.number)
    return module


_CONFIG = "masknet/config/v1/model_config.proto"
_RANKER = "masknet/serving/v1/ranker.proto"
_describe([_PROTO_ROOT], [_CONFIG, _RANKER])
config_pb2 = _module(_CONFIG)
ranker_pb2 = _module(_RANKER)


def __getattr__(name):
    if name == "fixture_pb2":
        global fixture_pb2
        _describe([_PROTO_ROOT, _FIXTURE_ROOT], ["parity_fixture.proto"])
        fixture_pb2 = _module("parity_fixture.proto")
        return fixture_pb2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
