"""Stand-in for torchrec.sparse.jagged_tensor (see ../__init__.py).

The containers TorchEasyRec passes features in, with the methods its MaskNet
path calls:

    JaggedTensor       one feature's bags: values, and per sample a length
    KeyedJaggedTensor  several features' bags: keys, values and lengths
                       key-major (all samples of key 0, then key 1, ...)
    KeyedTensor        several features' pooled vectors side by side in one
                       [batch, sum of widths] tensor, with each key's width

Nothing here computes on values: they are split, sliced and concatenated
(KeyedTensor.regroup_as_dict builds each feature group's input by taking its
features' columns in the group's order), so the result is the same as
torchrec's.
"""

import torch

from torchrec.streamable import Pipelineable


def _offsets(lengths):
    """The complete offsets (leading 0, trailing total) of `lengths`."""
    return torch.cat([lengths.new_zeros(1), torch.cumsum(lengths, 0).to(lengths.dtype)])


class JaggedTensor(Pipelineable):
    """A batch of variable-length bags of one feature.

    Give `lengths` (one per sample) or the complete `offsets`.
    """

    def __init__(self, values, weights=None, lengths=None, offsets=None):
        if lengths is None and offsets is None:
            raise ValueError("JaggedTensor: give lengths or offsets")
        self._values = values
        self._weights = weights
        self._lengths = lengths if lengths is not None else offsets[1:] - offsets[:-1]

    def values(self):
        return self._values

    def lengths(self):
        return self._lengths

    def offsets(self):
        return _offsets(self._lengths)

    def weights(self):
        if self._weights is None:
            raise ValueError("JaggedTensor has no weights")
        return self._weights

    def weights_or_none(self):
        return self._weights


class KeyedJaggedTensor(Pipelineable):
    """Bags of several features; lengths are key-major, `stride` samples each."""

    def __init__(self, keys, values, weights=None, lengths=None, offsets=None, stride=None,
                 length_per_key=None):
        if lengths is None:
            if offsets is None:
                raise ValueError("KeyedJaggedTensor: give lengths or offsets")
            lengths = offsets[1:] - offsets[:-1]
        self._keys = list(keys)
        self._values = values
        self._weights = weights
        self._lengths = lengths
        if stride is None:
            stride = lengths.numel() // len(self._keys) if self._keys else 0
        self._stride = stride
        if length_per_key is None:
            length_per_key = [int(n) for n in lengths.reshape(len(self._keys), stride).sum(1)]
        self._length_per_key = list(length_per_key)

    @staticmethod
    def empty(is_weighted=False, device=None, values_dtype=None, weights_dtype=None, lengths_dtype=torch.int32):
        return KeyedJaggedTensor(
            keys=[],
            values=torch.empty(0, dtype=values_dtype or torch.int64, device=device),
            weights=torch.empty(0, dtype=weights_dtype or torch.float32, device=device) if is_weighted else None,
            lengths=torch.empty(0, dtype=lengths_dtype, device=device),
            stride=0)

    def keys(self):
        return self._keys

    def values(self):
        return self._values

    def weights(self):
        if self._weights is None:
            raise ValueError("KeyedJaggedTensor has no weights")
        return self._weights

    def weights_or_none(self):
        return self._weights

    def lengths(self):
        return self._lengths

    def offsets(self):
        return _offsets(self._lengths)

    def stride(self):
        return self._stride

    def length_per_key(self):
        return self._length_per_key

    def to_dict(self):
        """Feature name -> its JaggedTensor."""
        if not self._keys:
            return {}
        values = self._values.split(self._length_per_key)
        weights = (self._weights.split(self._length_per_key) if self._weights is not None
                   else [None] * len(self._keys))
        lengths = self._lengths.split(self._stride)
        return {key: JaggedTensor(values[i], weights=weights[i], lengths=lengths[i])
                for i, key in enumerate(self._keys)}

    def __getitem__(self, key):
        return self.to_dict()[key]


class KeyedTensor(Pipelineable):
    """Features' vectors side by side along `key_dim`, `length_per_key` wide."""

    def __init__(self, keys, length_per_key, values, key_dim=1):
        if len(keys) != len(length_per_key):
            raise ValueError(f"KeyedTensor: {len(keys)} keys, {len(length_per_key)} lengths")
        self._keys = list(keys)
        self._length_per_key = list(length_per_key)
        self._values = values
        self._key_dim = key_dim

    @staticmethod
    def from_tensor_list(keys, tensors, key_dim=1, cat_dim=1):
        return KeyedTensor(keys, [t.shape[key_dim] for t in tensors], torch.cat(tensors, dim=cat_dim), key_dim)

    def keys(self):
        return self._keys

    def values(self):
        return self._values

    def key_dim(self):
        return self._key_dim

    def length_per_key(self):
        return self._length_per_key

    def to_dict(self):
        """Key -> its slice of values."""
        return dict(zip(self._keys, self._values.split(self._length_per_key, dim=self._key_dim)))

    def __getitem__(self, key):
        return self.to_dict()[key]

    @staticmethod
    def regroup(keyed_tensors, groups):
        """Per group, the named keys' slices concatenated in the group's order.

        A key is looked up in every keyed tensor; the tensors share key_dim.
        """
        slices = {}
        for keyed_tensor in keyed_tensors:
            slices.update(keyed_tensor.to_dict())
        key_dim = keyed_tensors[0].key_dim()
        return [torch.cat([slices[key] for key in group], dim=key_dim) for group in groups]

    @staticmethod
    def regroup_as_dict(keyed_tensors, groups, keys):
        """Name -> regroup()'s tensor of the group of that index."""
        if len(groups) != len(keys):
            raise ValueError(f"regroup_as_dict: {len(groups)} groups, {len(keys)} names")
        return dict(zip(keys, KeyedTensor.regroup(keyed_tensors, groups)))
