"""Reads and writes the safetensors layout with F32 and BF16 tensors.

Layout: an 8-byte little-endian header length n, n bytes of JSON
    {"<name>": {"dtype", "shape", "data_offsets": [begin, end]},
     "__metadata__": {...}},
then the tensor data, little-endian, offsets relative to the end of the header.
BF16 is the upper half of a float32; writing rounds to nearest, ties to even.
This module writes no "__metadata__" and ignores it when reading.
"""

import json
import struct

import numpy as np

_HEADER_LIMIT = 100 * 1024 * 1024
_ITEM_SIZE = {"F32": 4, "BF16": 2}


def float32_to_bf16_bits(values):
    """Rounds float32 values to bfloat16, to nearest with ties to even.

    Args:
      values: array-like of float32 values.

    Returns:
      uint16 array of bfloat16 bit patterns; NaN stays a (quiet) NaN.
    """
    values = np.ascontiguousarray(values, dtype="<f4")
    bits = values.view("<u4").astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    quiet_nan = (bits >> 16) | 0x0040
    return np.where(np.isnan(values), quiet_nan, rounded).astype("<u2")


def bf16_bits_to_float32(bits):
    """Widens bfloat16 bit patterns (uint16) to float32 exactly."""
    return (np.asarray(bits, dtype="<u2").astype("<u4") << 16).view("<f4")


def write(path, tensors, dtype="F32"):
    """Writes `tensors` to `path`, in sorted name order.

    Args:
      path: the file to create or replace.
      tensors: dict of name to array-like (numpy array or torch tensor on CPU);
        values are first converted to float32.
      dtype: "F32" or "BF16", for every tensor.
    """
    if dtype not in _ITEM_SIZE:
        raise ValueError(f"unsupported dtype {dtype!r}")
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        values = np.asarray(tensors[name], dtype=np.float32)
        if dtype == "BF16":
            blob = float32_to_bf16_bits(values).tobytes()
        else:
            blob = values.astype("<f4").tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(values.shape),
            "data_offsets": [offset, offset + len(blob)]
        }
        blobs.append(blob)
        offset += len(blob)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pads with spaces so that the data starts 8-byte aligned.
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for blob in blobs:
            f.write(blob)


def read(path):
    """Reads a safetensors file of F32 and BF16 tensors.

    Returns:
      dict of name to float32 numpy array (BF16 widened exactly).

    Raises:
      ValueError: the file is malformed, has another dtype, or tensors overlap
        or lie outside the data.
    """
    with open(path, "rb") as f:
        content = f.read()
    if len(content) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (header_length,) = struct.unpack("<Q", content[:8])
    if header_length > _HEADER_LIMIT or 8 + header_length > len(content):
        raise ValueError(
            f"{path}: header length {header_length} is out of range")
    header = json.loads(content[8:8 + header_length].decode("utf-8"))
    data = memoryview(content)[8 + header_length:]
    header.pop("__metadata__", None)
    tensors, spans = {}, []
    for name, entry in header.items():
        dtype, shape = entry["dtype"], entry["shape"]
        begin, end = entry["data_offsets"]
        if dtype not in _ITEM_SIZE:
            raise ValueError(
                f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        size = _ITEM_SIZE[dtype] * int(np.prod(shape))
        if not 0 <= begin <= end <= len(data) or end - begin != size:
            raise ValueError(
                f"{path}: tensor {name!r} has bad data_offsets {[begin, end]}")
        raw = np.frombuffer(data[begin:end],
                            dtype="<u2" if dtype == "BF16" else "<f4")
        values = bf16_bits_to_float32(raw) if dtype == "BF16" else raw.copy()
        tensors[name] = values.reshape(shape)
        spans.append((begin, end, name))
    spans.sort()
    for (_, previous_end, previous), (begin, _, name) in zip(spans, spans[1:]):
        if begin < previous_end:
            raise ValueError(
                f"{path}: tensors {previous!r} and {name!r} overlap")
    return tensors
