"""One viewer's candidates as FuxiCTR's input columns, and as our RankRequest.

FuxiCTR's data (what its FeatureProcessor writes and its npz loader reads)
is one column per feature of feature_map.json, plus the labels: a
categorical feature's ids int64 [n] (0 padding, vocab_size - 1 out of
vocabulary), a numeric feature's processed values [n], a sequence's ids
[n, max_len] padded with 0 ("post" or "pre"), a meta feature's values [n].
The BatchCollator hands the model every column as float64; the model takes
ids with .long() and numbers with .float().

Our request carries the same values (tests/framework_import_check.py serves
the importer's model): the fields are feature_map.json's features that are
not "meta", in order; those whose source is "user" are the request's
context (so they must be equal on every row: one request is one viewer),
all others -- "item", "context", "" -- are per candidate. Per scope, in
field order: `dense` the numeric values as float32; `ids` a categorical
field's one id, a sequence's ids without its padding (every 0, wherever it
stands: FuxiCTR's masked pooling skips rows that are all zeros, and the
padding row is one); `id_counts` the ids of each categorical and sequence
field.
"""

import numpy as np

from masknet_tools.protos import ranker_pb2


def is_context(spec):
    """Whether a feature is sent once per request (the viewer's)."""
    return spec.get("source") == "user"


def viewer_columns(features, labels, n, rng, padding="post"):
    """FuxiCTR's columns for `n` candidates of one viewer.

    Args:
      features: feature name -> spec, in feature_map.json order.
      labels: the label columns (random 0/1, unused by predict).
      n: candidates.
      rng: a numpy Generator.
      padding: where sequences are padded, "post" or "pre".

    Categorical ids include 0 and vocab_size - 1 where n > 3; sequences
    include a full row, an empty one (n > 1) and, now and then, an interior
    0; every "user" feature takes row 0's value on all rows.
    """
    columns = {}
    for name, spec in features.items():
        kind = spec["type"]
        if kind == "meta":
            column = rng.integers(0, 1000, n)
        elif kind == "numeric":
            column = rng.normal(0, 1.5, n).astype(np.float32)
        elif kind == "categorical":
            size = spec["vocab_size"]
            column = rng.integers(1, size - 1, n)
            if n > 3:
                column[2], column[3] = 0, size - 1
        elif kind == "sequence":
            column = _sequences(spec["vocab_size"], spec["max_len"], n, rng, padding)
        else:
            raise ValueError(f"{name}: no values for type {kind!r}")
        if is_context(spec):
            column = np.repeat(column[:1], n, axis=0)
        columns[name] = column
    for label in labels:
        columns[label] = rng.integers(0, 2, n).astype(np.float32)
    return columns


def _sequences(vocab_size, max_len, n, rng, padding):
    ids = rng.integers(1, vocab_size, (n, max_len))  # vocab_size - 1 is OOV
    lengths = rng.integers(0, max_len + 1, n)
    lengths[0] = max_len
    if n > 1:
        lengths[1] = 0
    column = np.zeros((n, max_len), np.int64)
    for i, length in enumerate(lengths):
        row = ids[i, :length].copy()
        if length >= 3 and rng.random() < 0.4:
            row[1] = 0  # an interior padding id
        if padding == "pre":
            column[i, max_len - length:] = row
        else:
            column[i, :length] = row
    return column


def rank_request(features, columns, candidate_ids):
    """The RankRequest (model_name empty) sending `columns` to our server.

    Raises ValueError when a "user" feature differs between rows.
    """
    fields = [(name, spec) for name, spec in features.items() if spec["type"] != "meta"]
    for name, spec in fields:
        if is_context(spec) and not (columns[name] == columns[name][:1]).all():
            raise ValueError(f"{name}: a context (source user) feature differs between rows")
    request = ranker_pb2.RankRequest()
    _fill(request.context, [f for f in fields if is_context(f[1])], columns, 0)
    for row, candidate_id in enumerate(candidate_ids):
        candidate = request.candidates.add(id=int(candidate_id))
        _fill(candidate.features, [f for f in fields if not is_context(f[1])], columns, row)
    return request


def _fill(scope, fields, columns, row):
    for name, spec in fields:
        value = columns[name][row]
        if spec["type"] == "numeric":
            scope.dense.append(float(np.float32(value)))
        elif spec["type"] == "categorical":
            scope.ids.append(int(value))
            scope.id_counts.append(1)
        elif spec["type"] == "sequence":
            ids = [int(i) for i in value if i != 0]
            scope.ids.extend(ids)
            scope.id_counts.append(len(ids))
        else:
            raise ValueError(f"{name}: type {spec['type']!r} has no request field")
