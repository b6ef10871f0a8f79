"""Stand-in for torchrec.modules.embedding_configs (see ../__init__.py).

The description of one embedding table that TorchEasyRec fills in for each
id feature (features/feature.py, emb_bag_config) and EmbeddingGroup gathers
per table: its rows, width, name, the features that read it and how their
ids pool. TorchEasyRec also sets `trainable` and `use_dynamicemb` on it,
which a dataclass allows.
"""

import dataclasses
import enum
from typing import Callable, List, Optional

from torchrec.types import DataType


class PoolingType(enum.Enum):
    """How a bag's embeddings become one vector."""
    SUM = "SUM"
    MEAN = "MEAN"
    NONE = "NONE"


@dataclasses.dataclass
class BaseEmbeddingConfig:
    """One embedding table: `num_embeddings` rows of `embedding_dim` floats."""
    num_embeddings: int
    embedding_dim: int
    name: str = ""
    data_type: DataType = DataType.FP32
    feature_names: List[str] = dataclasses.field(default_factory=list)
    init_fn: Optional[Callable] = None


@dataclasses.dataclass
class EmbeddingBagConfig(BaseEmbeddingConfig):
    """A table whose features' bags are pooled (`pooling`)."""
    pooling: PoolingType = PoolingType.SUM


@dataclasses.dataclass
class EmbeddingConfig(BaseEmbeddingConfig):
    """A table of a sequence feature (not pooled); not served by the stand-in."""
