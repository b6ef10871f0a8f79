"""Stand-in for torchrec.modules.embedding_modules (see ../__init__.py).

EmbeddingBagCollection holds TorchEasyRec's id-feature tables (EmbeddingGroup
builds one from the tables of a model's feature groups) and turns the
features' bags into pooled vectors. What makes its numbers and checkpoint
torchrec's:

  - one torch.nn.EmbeddingBag per table, in the order of `tables`, under
    `embedding_bags.<table name>` (state_dict key
    `embedding_bags.<table>.weight`, [num_embeddings, embedding_dim]), with
    the table's pooling as the bag's mode ("sum" or "mean"; an empty bag
    gives zeros either way);
  - each feature of a table pooled by that table's bag from its own values
    and offsets, the results side by side in table order, then feature order
    within a table, keyed by the feature's name (name@table when a feature
    reads several tables).

EmbeddingCollection (sequence features) is not provided: building one
raises, so a model that needs it fails generation.
"""

import torch
from torch import nn

from torchrec.modules.embedding_configs import PoolingType
from torchrec.sparse.jagged_tensor import KeyedTensor
from torchrec.types import DataType


class EmbeddingBagCollectionInterface(nn.Module):
    """What TorchEasyRec recognises an EmbeddingBagCollection by."""


class EmbeddingCollectionInterface(nn.Module):
    """What TorchEasyRec recognises an EmbeddingCollection by."""


_MODES = {PoolingType.SUM: "sum", PoolingType.MEAN: "mean"}


class EmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Pooled embeddings of id features: KeyedJaggedTensor -> KeyedTensor."""

    def __init__(self, tables, is_weighted=False, device=None):
        super().__init__()
        if is_weighted:
            raise NotImplementedError("torchrec stand-in: weighted id features are not provided")
        self._tables = list(tables)
        self.embedding_bags = nn.ModuleDict()
        for table in self._tables:
            if table.name in self.embedding_bags:
                raise ValueError(f"two tables named {table.name!r}")
            if table.data_type != DataType.FP32:
                raise NotImplementedError(f"torchrec stand-in: table {table.name!r} is {table.data_type.value}, "
                                          "only FP32 is provided")
            if table.pooling not in _MODES:
                raise ValueError(f"table {table.name!r}: pooling {table.pooling} is not SUM or MEAN")
            self.embedding_bags[table.name] = nn.EmbeddingBag(
                table.num_embeddings, table.embedding_dim, mode=_MODES[table.pooling],
                include_last_offset=True, device=device)
        tables_of = {}
        for table in self._tables:
            for feature in table.feature_names:
                tables_of[feature] = tables_of.get(feature, 0) + 1
        # (output key, table name, feature name, width) in output order
        self._outputs = [(feature if tables_of[feature] == 1 else f"{feature}@{table.name}", table.name, feature,
                          table.embedding_dim)
                         for table in self._tables for feature in table.feature_names]
        self.reset_parameters()

    def embedding_bag_configs(self):
        return self._tables

    def is_weighted(self):
        return False

    def reset_parameters(self):
        """Applies each table's init_fn (nothing to do on the meta device)."""
        for table in self._tables:
            weight = self.embedding_bags[table.name].weight
            if table.init_fn is not None and weight.device.type != "meta":
                table.init_fn(weight)

    def forward(self, features):
        bags = features.to_dict()
        pooled = [
            self.embedding_bags[table](bags[feature].values(), bags[feature].offsets()).float()
            for _, table, feature, _ in self._outputs
        ]
        return KeyedTensor(keys=[key for key, _, _, _ in self._outputs],
                           length_per_key=[width for _, _, _, width in self._outputs],
                           values=torch.cat(pooled, dim=1))


class EmbeddingCollection(EmbeddingCollectionInterface):
    """Not provided (sequence features)."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError("torchrec stand-in: EmbeddingCollection (sequence features) is not provided")
