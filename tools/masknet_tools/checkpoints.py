"""Reads training frameworks' PyTorch checkpoints for the importers.

A checkpoint is a `torch.save` of a state_dict (name -> tensor). Training
wrappers prefix every name (the-algorithm-ml's ModelAndLoss and
TorchEasyRec's TrainWrapper: "model."); `strip_wrapper_prefix` removes such a
prefix when every tensor carries it. `framework_of` recognises which
framework's MaskNet a state_dict comes from by its module names, so that a
checkpoint given to the wrong importer is named for what it is.
"""

import collections
import re

import torch


# torch's default eps of BatchNorm1d and LayerNorm, which the frameworks keep.
TORCH_DEFAULT_EPS = 1e-5

# Prefixes that training wrappers put before every tensor name.
WRAPPER_PREFIXES = ("model.", "module.")

# Module names by which each framework's MaskNet is recognised (after the
# wrapper prefix is stripped): any one of them is enough.
_FRAMEWORK_MARKERS = {
    "the-algorithm-ml": ("_backbone._mask_blocks.", "_towers.",
                         "_preprocessor."),
    "fuxictr": ("embedding_layer.embedding_layer.", "mask_net.mask_blocks.",
                "emb_norm."),
    "torcheasyrec": ("mask_net_layer.", "embedding_group."),
}


class CheckpointError(ValueError):
    """A checkpoint cannot be imported; the message says why."""


def load_state_dict(path):
    """The state_dict saved at `path` by torch.save, on the CPU.

    Accepts a bare state_dict or a dict holding one under "state_dict" or
    "model" (common training-loop layouts).

    Raises:
      CheckpointError: the file is missing, not a torch.save file, or holds
        something other than a dict of tensors.
    """
    try:
        # weights_only: a checkpoint from elsewhere runs no code when loaded.
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(
            f"{path}: is a directory (a distributed checkpoint or snapshot?); "
            "save a plain state_dict with torch.save(model.state_dict(), "
            "PATH) on the training side (see the README)") from None
    except Exception as e:  # torch raises many types for a foreign file
        raise CheckpointError(
            f"{path}: not a torch.save file ({type(e).__name__}: {e})") from None
    if isinstance(saved, dict):
        for key in ("state_dict", "model"):
            inner = saved.get(key)
            if isinstance(inner, dict) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                saved = inner
                break
    if not isinstance(saved, dict) or not saved:
        raise CheckpointError(
            f"{path}: expected a state_dict (a dict of tensors), got "
            f"{'an empty dict' if saved == {} else type(saved).__name__}")
    not_tensors = sorted(
        str(k) for k, v in saved.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(
            f"{path}: not a state_dict: {', '.join(not_tensors[:5])} "
            f"{'is' if len(not_tensors) == 1 else 'are'} not tensors")
    return dict(saved)


def wrapper_prefix(state_dict):
    """The training wrapper's prefix every name of `state_dict` has, or ""."""
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            return prefix
    return ""


def strip_wrapper_prefix(state_dict):
    """`state_dict` without a training wrapper's prefix on every name."""
    prefix = wrapper_prefix(state_dict)
    return {key[len(prefix):]: v for key, v in state_dict.items()}


def framework_of(state_dict):
    """The framework whose MaskNet module names `state_dict` has, or None."""
    found = [
        name for name, markers in _FRAMEWORK_MARKERS.items()
        if any(key.startswith(markers) for key in state_dict)
    ]
    return found[0] if len(found) == 1 else None


def check_framework(state_dict, expected):
    """Raises CheckpointError if `state_dict` is another framework's."""
    found = framework_of(state_dict)
    if found is not None and found != expected:
        raise CheckpointError(
            f"this checkpoint is a {found} model (its tensor names are "
            f"{found}'s), not {expected}'s: import it with --from {found}")
    if found is None:
        sample = ", ".join(sorted(state_dict)[:3])
        raise CheckpointError(
            f"this checkpoint is not a {expected} MaskNet model: none of its "
            f"tensor names ({sample}, ...) are {expected}'s")


def without_counters(state_dict):
    """`state_dict` without BatchNorm's num_batches_tracked (unused in eval)."""
    return {
        k: v
        for k, v in state_dict.items()
        if not k.endswith(".num_batches_tracked")
    }




def map_dense_stack(state_dict, source_prefix, target_prefix):
    """Renames a stack of Linear layers, each optionally followed by a
    BatchNorm1d, whose modules are `<source_prefix><index>.<tensor>` (an
    nn.Sequential or ModuleList; activations and dropout have no tensors).

    Returns:
      Our names for every tensor under `source_prefix`: Linear layer i as
      `<target_prefix><i>.weight|bias`, the BatchNorm1d after it as
      `<target_prefix><i>.batch_norm.*`.

    Raises:
      CheckpointError: a tensor under `source_prefix` that is neither.
    """
    pattern = re.compile(re.escape(source_prefix) + r"(\d+)\.(\w+)")
    modules = collections.defaultdict(dict)
    for key, value in without_counters(state_dict).items():
        if not key.startswith(source_prefix):
            continue
        match = pattern.fullmatch(key)
        if not match:
            raise CheckpointError(f"unrecognised tensor {key!r}")
        modules[int(match[1])][match[2]] = value
    mapped, layer = {}, -1
    for index in sorted(modules):
        tensors = modules[index]
        where = f"{source_prefix}{index}"
        if "running_mean" in tensors:
            if layer < 0:
                raise CheckpointError(f"{where}: a BatchNorm1d before any Linear")
            unknown = set(tensors) - {"running_mean", "running_var", "weight", "bias"}
            if unknown:
                raise CheckpointError(
                    f"{where}: unrecognised BatchNorm1d tensors {sorted(unknown)}")
            for name, value in tensors.items():
                mapped[f"{target_prefix}{layer}.batch_norm.{name}"] = value
        elif (set(tensors) == {"weight", "bias"} and
              tensors["weight"].dim() == 2):
            layer += 1
            mapped[f"{target_prefix}{layer}.weight"] = tensors["weight"]
            mapped[f"{target_prefix}{layer}.bias"] = tensors["bias"]
        else:
            raise CheckpointError(
                f"{where}: unrecognised module tensors {sorted(tensors)} "
                "(expected a Linear with a bias, or a BatchNorm1d after one)")
    return mapped




def with_checkpoint_names(message, checkpoint, weights):
    """`message` with each of our tensor names followed by its checkpoint name.

    A tensor of `weights` that is the very tensor object of `checkpoint`
    (renamed, not recomputed) is named both ways, so that an error about a
    shape names the tensor the user can find in the checkpoint.
    """
    source = {id(v): k for k, v in checkpoint.items()}
    for ours, tensor in weights.items():
        theirs = source.get(id(tensor))
        if theirs is not None and theirs != ours:
            message = message.replace(f"'{ours}'",
                                      f"'{ours}' (checkpoint: '{theirs}')")
    return message








class Derived:
    """A dimension computed from other widths once they are known, e.g. the
    aggregation width int(D x 0.5) of a block given a reduction factor."""

    def __init__(self, compute, text):
        self.compute = compute  # widths dict -> int
        self.text = text        # how it reads in a message, e.g. "int(D × 0.5)"


class ExpectedTensors:
    """The tensors a configuration says a checkpoint holds, with their shapes.

    A shape is a tuple of dimensions; a dimension is an int (the
    configuration gives it), a width's name (a str: the data gives it, e.g.
    the number of continuous features, and every tensor with that name must
    agree on it) or a Derived. `match` compares a checkpoint with all of it
    at once and names every missing, unexpected and mis-shaped tensor by its
    name in the checkpoint file.
    """

    def __init__(self, name_prefix=""):
        # name_prefix: what the file's names have before the names given
        # here (a training wrapper's "model."), for messages.
        self._shapes = {}
        self._optional = set()
        self._relations = []
        self._prefix = name_prefix

    def add(self, name, shape, optional=False):
        """Expects tensor `name` of `shape`; `optional`: it may be absent
        (a buffer evaluation never reads, such as num_batches_tracked)."""
        if name in self._shapes:
            raise ValueError(f"tensor {name!r} expected twice")
        self._shapes[name] = tuple(shape)
        if optional:
            self._optional.add(name)

    def add_batch_norm(self, prefix, width, affine):
        """A BatchNorm1d's tensors under `prefix` (ending in ".")."""
        if affine:
            self.add(prefix + "weight", (width,))
            self.add(prefix + "bias", (width,))
        self.add(prefix + "running_mean", (width,))
        self.add(prefix + "running_var", (width,))
        self.add(prefix + "num_batches_tracked", (), optional=True)

    def add_linear(self, prefix, inputs, outputs, bias=True):
        """An nn.Linear's tensors under `prefix`."""
        self.add(prefix + "weight", (outputs, inputs))
        if bias:
            self.add(prefix + "bias", (outputs,))

    def add_layer_norm(self, prefix, width, affine=True):
        """An nn.LayerNorm's tensors under `prefix` (none without affine)."""
        if affine:
            self.add(prefix + "weight", (width,))
            self.add(prefix + "bias", (width,))

    def add_relation(self, width, compute, text):
        """Requires width `width` to equal compute(widths) once the tensors
        have given their widths; `text` says how the other side reads, e.g.
        "continuous + binary + user_embedding"."""
        self._relations.append((width, compute, text))

    def __contains__(self, name):
        return name in self._shapes

    def _quote(self, name):
        return repr(self._prefix + name)

    def match(self, state, widths=None):
        """Checks `state` (name -> tensor) against the expected tensors.

        Args:
          state: the checkpoint's tensors (names without name_prefix).
          widths: widths already known (name -> int), e.g. from files the
            configuration names.

        Returns:
          Every width's value (name -> int).

        Raises:
          CheckpointError: naming, in one message, every missing,
            unexpected and mis-shaped tensor.
        """
        widths = dict(widths or {})
        missing = [n for n in self._shapes
                   if n not in state and n not in self._optional]
        unexpected = sorted(n for n in state if n not in self._shapes)
        present = [n for n in self._shapes if n in state]
        wrong_rank = [n for n in present
                      if state[n].dim() != len(self._shapes[n])]
        # Each width takes the value most tensors give it; the others are
        # the mis-shaped ones (a tie names every tensor that has it).
        votes = collections.defaultdict(collections.Counter)
        holders = collections.defaultdict(list)
        for n in present:
            if n in wrong_rank:
                continue
            for dim, size in zip(self._shapes[n], state[n].shape):
                if isinstance(dim, str):
                    votes[dim][int(size)] += 1
                    holders[dim].append(n)
        ties = {}
        for width, counter in votes.items():
            if width in widths:
                continue
            ranked = counter.most_common()
            if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
                ties[width] = sorted(counter)
            widths[width] = ranked[0][0]
        misshaped = []
        for n in present:
            if n in wrong_rank:
                misshaped.append(n)
                continue
            expected = self._expected_shape(n, widths)
            if any(isinstance(dim, str) and dim in ties
                   for dim in self._shapes[n]) or any(
                       e is not None and e != size
                       for e, size in zip(expected, state[n].shape)):
                misshaped.append(n)
        problems = []
        if missing:
            problems.append("missing " + ", ".join(map(self._quote, missing)))
        if unexpected:
            problems.append("unexpected " + ", ".join(map(self._quote, unexpected)))
        for n in misshaped:
            problems.append(f"{self._quote(n)} has shape {list(state[n].shape)}, "
                            f"expected {self._describe(n, widths, ties)}")
        for width, compute, text in self._relations:
            try:
                other = compute(widths)
            except KeyError:  # a width no tensor gave: reported above
                continue
            if width in widths and widths[width] != other:
                problems.append(
                    f"{width} = {widths[width]} (from "
                    f"{', '.join(map(self._quote, holders[width][:3]))}), but "
                    f"{text} = {other}")
        if problems:
            raise CheckpointError(
                "the checkpoint does not hold the model its configuration "
                "describes: " + "; ".join(problems))
        return widths

    @staticmethod
    def _derived(dim, widths):
        """A Derived dimension's value, or None while a width it needs is
        unknown."""
        try:
            return dim.compute(widths)
        except KeyError:
            return None

    def _expected_shape(self, name, widths):
        """The shape `name` must have; None for a dimension not known."""
        out = []
        for dim in self._shapes[name]:
            if isinstance(dim, Derived):
                out.append(self._derived(dim, widths))
            elif isinstance(dim, str):
                out.append(widths.get(dim))
            else:
                out.append(dim)
        return out

    def _describe(self, name, widths, ties):
        parts = []
        for dim in self._shapes[name]:
            if isinstance(dim, Derived):
                parts.append(f"{dim.text} = {self._derived(dim, widths)}")
            elif isinstance(dim, str):
                parts.append(f"{dim} (its tensors disagree: "
                              f"{' or '.join(map(str, ties[dim]))})"
                              if dim in ties else f"{dim} = {widths.get(dim, '?')}")
            else:
                parts.append(str(dim))
        return "[" + ", ".join(parts) + "]"
