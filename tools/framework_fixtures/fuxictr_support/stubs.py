"""Stand-ins for packages FuxiCTR imports but its scoring never uses.

FuxiCTR imports pandas, polars, h5py, scikit-learn, tqdm and
keras_preprocessing at module level, in files that also hold what the
generator runs (load_config, BaseModel, the embedding layers, the npz data
loader). Debian's python3 has none of them. Each missing one is replaced by a
module whose every attribute is a placeholder that raises StubCalled when it
is called or subclassed: if FuxiCTR's code on the generator's path ever used
one, generation stops instead of writing numbers that came from a stand-in.
An installed package is used as it is, never replaced.
"""

import importlib.util
import sys
import types

# Package -> where FuxiCTR imports it and why that use is outside the path
# from a checkpoint and a batch to y_pred (config loading, model building,
# the npz loader and its collator, predict()).
STUBBED = {
    # fuxictr.utils (h5 helpers), fuxictr.metrics, the parquet data loaders
    # and FeatureProcessor: data frames for CSV/parquet data and metrics.
    "pandas": "data frames for CSV/parquet data and metrics",
    # The parquet data loaders, fuxictr.preprocess and fuxictr.datasets:
    # reading and preprocessing raw CSV/parquet data.
    "polars": "reading and preprocessing CSV/parquet data",
    # fuxictr.utils and preprocess.tokenizer: h5 data and h5 pretrained
    # embedding files (the generator writes npz ones).
    "h5py": "h5 data and pretrained-embedding files",
    # fuxictr.metrics (AUC, logloss) and the preprocessing's normalizers and
    # quantile buckets: evaluation and fitting, not scoring.
    "sklearn": "metrics and preprocessing",
    "sklearn.metrics": "evaluation metrics (AUC, logloss)",
    "sklearn.preprocessing": "numeric normalizers and quantile buckets",
    # BaseModel.fit/predict and the tokenizer: progress bars, used only when
    # verbose > 0 (the generator's configs say verbose: 0).
    "tqdm": "progress bars (verbose > 0 only)",
    # preprocess.tokenizer: padding raw token lists while building a dataset
    # (the generator writes padded npz columns itself).
    "keras_preprocessing": "padding raw sequences when building a dataset",
    "keras_preprocessing.sequence": "pad_sequences for raw sequences",
}


class StubCalled(RuntimeError):
    """FuxiCTR used a stubbed package on the path the generator runs."""


class _Placeholder:
    """Any attribute of a stub module: fails when used."""

    def __init__(self, name):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise StubCalled(f"{self._name} was called, but its package is a stub "
                         f"({STUBBED[self._name.split('.')[0]]})")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self._name}.{attr}")

    def __mro_entries__(self, bases):  # class X(stub.Base): at import time
        raise StubCalled(f"{self._name} used as a base class, but its package "
                         "is a stub")


class _StubModule(types.ModuleType):

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self.__name__}.{attr}")


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def install():
    """Puts a stub in sys.modules for each missing package of STUBBED.

    Returns the names stubbed, sorted. Calling it again changes nothing.
    """
    stubbed = []
    for name in STUBBED:
        if isinstance(sys.modules.get(name), _StubModule):
            stubbed.append(name)
            continue
        if _installed(name):
            continue
        module = _StubModule(name)
        module.__path__ = []  # a package: `import sklearn.metrics` works
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
        stubbed.append(name)
    return sorted(stubbed)
