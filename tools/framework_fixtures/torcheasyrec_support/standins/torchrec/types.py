"""Stand-in for torchrec.types: the DataType enum (see ../__init__.py).

TorchEasyRec maps an id feature's data_type ("FP32", "FP16") to it; the
stand-in's EmbeddingBagCollection serves FP32 tables only and refuses others.
"""

import enum


class DataType(enum.Enum):
    """An embedding table's element type."""
    FP32 = "FP32"
    FP16 = "FP16"
    BF16 = "BF16"
    INT8 = "INT8"
