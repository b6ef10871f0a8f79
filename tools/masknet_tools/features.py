"""Request-shaped inputs (ranker.proto Features) to per-field tensors, and back.

A scope's `Features` hold its dense fields' values concatenated in schema
order, its categorical ids in schema order, and the number of ids per
categorical field (empty: one id each). `batch_from_request` validates them as
the server does and gives a FieldBatch: every field's raw inputs for each
candidate, the context's repeated per candidate.
"""

import dataclasses
import math
import typing

import torch

from masknet_tools import config
from masknet_tools.protos import config_pb2
from masknet_tools.protos import ranker_pb2


class RequestError(ValueError):
    """A request breaks ranker.proto's contract; the message says where."""


@dataclasses.dataclass
class FieldBatch:
    """The raw inputs of `size` candidates, per field.

    Attributes:
      size: the number of candidates, n.
      dense: dense field name to a float64 tensor [n, width] of the values as
        sent (before the non-finite policy and the transform).
      ids: categorical field name to an int64 tensor [n, k], k >= every count;
        a row's entries at and after its count are ignored.
      counts: categorical field name to an int64 tensor [n]: ids per row.
    """
    size: int
    dense: typing.Dict[str, torch.Tensor]
    ids: typing.Dict[str, torch.Tensor]
    counts: typing.Dict[str, torch.Tensor]

    def select(self, rows):
        """The FieldBatch of the candidates at `rows`, an int64 tensor."""
        return FieldBatch(
            size=len(rows),
            dense={name: values[rows] for name, values in self.dense.items()},
            ids={name: ids[rows] for name, ids in self.ids.items()},
            counts={name: counts[rows] for name, counts in self.counts.items()})


def _split_scope(model_config, scope, features, where):
    """Splits one scope's Features into per-field values, validating them.

    Returns:
      dict of field name to a list of floats (dense) or of ints (categorical).

    Raises:
      RequestError: naming `where` and the field.
    """
    fields = config.scope_fields(model_config, scope)
    dense_fields = [f for f in fields if f.WhichOneof("kind") == "dense"]
    categorical_fields = [f for f in fields if f not in dense_fields]
    dense_width = config.scope_dense_width(model_config, scope)
    if len(features.dense) != dense_width:
        raise RequestError(f"{where}: {len(features.dense)} dense values, "
                           f"expected {dense_width}")
    counts = list(features.id_counts) or [1] * len(categorical_fields)
    if len(counts) != len(categorical_fields):
        raise RequestError(f"{where}: {len(counts)} id_counts, "
                           f"expected {len(categorical_fields)}")
    if sum(counts) != len(features.ids):
        raise RequestError(f"{where}: {len(features.ids)} ids, but id_counts "
                           f"sum to {sum(counts)}")

    values, offset = {}, 0
    for field in dense_fields:
        field_values = list(features.dense[offset:offset + field.dense.width])
        offset += field.dense.width
        if (field.dense.non_finite == config_pb2.REJECT and
                not all(math.isfinite(v) for v in field_values)):
            raise RequestError(
                f"{where}: field {field.name!r} has a NaN or infinite value")
        values[field.name] = field_values
    offset = 0
    for field, count in zip(categorical_fields, counts):
        field_ids = list(features.ids[offset:offset + count])
        offset += count
        categorical = field.categorical
        if count > config.max_ids(field):
            raise RequestError(
                f"{where}: field {field.name!r} has {count} ids, at most "
                f"{config.max_ids(field)} allowed")
        if count == 0 and not categorical.allow_empty:
            raise RequestError(f"{where}: field {field.name!r} has no ids")
        if categorical.bucket_rule == config_pb2.IDENTITY and any(
                not 0 <= i < categorical.num_buckets for i in field_ids):
            raise RequestError(
                f"{where}: field {field.name!r} has an id outside "
                f"[0, {categorical.num_buckets})")
        values[field.name] = field_ids
    return values


def batch_from_request(model_config, context, candidates):
    """Validates a request's features and assembles them per field.

    Args:
      model_config: the ModelConfig whose schema the features follow.
      context: the context scope's Features (or anything with .dense, .ids
        and .id_counts).
      candidates: a sequence of the candidates' Features.

    Returns:
      A FieldBatch of len(candidates) rows.

    Raises:
      RequestError: as the server answers INVALID_ARGUMENT, naming the
        candidate (or the context) and the field.
    """
    context_values = _split_scope(model_config, config_pb2.CONTEXT, context,
                                  "context")
    rows = [
        _split_scope(model_config, config_pb2.CANDIDATE, features,
                     f"candidate {i}") for i, features in enumerate(candidates)
    ]
    batch = FieldBatch(size=len(candidates), dense={}, ids={}, counts={})
    for field in model_config.fields:
        if field.scope == config_pb2.CONTEXT:
            per_row = [context_values[field.name]] * len(candidates)
        else:
            per_row = [row[field.name] for row in rows]
        if field.WhichOneof("kind") == "dense":
            values = torch.tensor(per_row, dtype=torch.float64)
            batch.dense[field.name] = values.reshape(len(candidates),
                                                     field.dense.width)
        else:
            width = max((len(ids) for ids in per_row), default=0)
            batch.ids[field.name] = torch.tensor(
                [ids + [0] * (width - len(ids)) for ids in per_row],
                dtype=torch.int64).reshape(len(candidates), width)
            batch.counts[field.name] = torch.tensor(
                [len(ids) for ids in per_row], dtype=torch.int64)
    return batch


def batch_from_rank_request(model_config, request):
    """batch_from_request for a ranker_pb2.RankRequest."""
    return batch_from_request(
        model_config, request.context,
        [candidate.features for candidate in request.candidates])


def make_features(model_config, scope, values, explicit_counts=False):
    """Builds the Features of one scope from per-field values.

    Args:
      model_config: the ModelConfig.
      scope: config_pb2.CONTEXT or CANDIDATE.
      values: dict of every field name of `scope` to its values: `width`
        floats (dense; stored as float32) or a sequence of int64 ids.
      explicit_counts: whether to write id_counts when every field has exactly
        one id (they are written whenever one does not).

    Returns:
      A ranker_pb2.Features.
    """
    features = ranker_pb2.Features()
    counts = []
    for field in config.scope_fields(model_config, scope):
        field_values = list(values[field.name])
        if field.WhichOneof("kind") == "dense":
            if len(field_values) != field.dense.width:
                raise ValueError(
                    f"field {field.name!r}: {len(field_values)} values, "
                    f"width {field.dense.width}")
            features.dense.extend(float(v) for v in field_values)
        else:
            features.ids.extend(int(i) for i in field_values)
            counts.append(len(field_values))
    if explicit_counts or any(count != 1 for count in counts):
        features.id_counts.extend(counts)
    return features
