"""Placeholders for the packages TorchEasyRec imports but MaskNet never uses.

TorchEasyRec's modules import, at module level, packages that cannot be
installed here and play no part in building or scoring a MaskNet rank model:
pyarrow (dataset readers), pyfg (feature generation, which happens outside
the model), dynamicemb, fbgemm_gpu, torchrec's planner, sharding, fx and
managed-collision modules, torchmetrics.functional. A placeholder lets such
an import and module-level code (`pa.int64()`, type annotations, base
classes) run; once TorchEasyRec is imported, `freeze()` makes every further
use raise PlaceholderUsed, so a model whose computation touched one of them
fails generation instead of producing wrong numbers.

Only top-level packages in ROOTS get placeholders, and only when nothing
else on sys.path provides the module: the stand-ins in standins/ (torchrec,
torchmetrics) win, their missing submodules become placeholders.
"""

import importlib.abc
import importlib.machinery
import types

ROOTS = frozenset({
    "alibabacloud_credentials", "common_io", "confluent_kafka", "datahub",
    "dynamicemb", "faiss", "fbgemm_gpu", "fsspec", "graphlearn", "kafka",
    "odps", "oss2", "pandas", "psutil", "pyarrow", "pyfg", "safetensors",
    "tensorboard", "torch_tensorrt", "torchmetrics", "torchrec", "triton",
})


class PlaceholderUsed(RuntimeError):
    """A placeholder was used after TorchEasyRec had been imported."""


class _State:
    frozen = False


def freeze():
    """From now on any use of a placeholder raises PlaceholderUsed."""
    _State.frozen = True


def _use(what):
    if _State.frozen:
        raise PlaceholderUsed(f"a placeholder for a package that is not installed was used: {what}")


class _PlaceholderType(type):
    """The class of placeholders: each is a class, so it can also be a base."""

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__") and name != "__func__":
            raise AttributeError(name)
        _use(f"{cls.__qualname__}.{name}")
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        _use(f"{cls.__qualname__}()")
        return _placeholder(f"{cls.__qualname__}()")

    def __getitem__(cls, item):
        return _placeholder(f"{cls.__qualname__}[]")

    def __or__(cls, other):  # `X | None` in annotations
        return cls

    __ror__ = __or__


def _placeholder(qualname):
    return _PlaceholderType(qualname, (), {"__qualname__": qualname, "__module__": "placeholder"})


class _PlaceholderModule(types.ModuleType):

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        _use(f"{self.__name__}.{name}")
        value = _placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class _Loader(importlib.abc.Loader):

    def create_module(self, spec):
        _use(spec.name)
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        module.__file__ = f"<placeholder for {spec.name}>"
        return module

    def exec_module(self, module):
        pass


class Finder(importlib.abc.MetaPathFinder):
    """Finds a placeholder for a module of ROOTS that nothing else provides.

    REQUIRES: appended to sys.meta_path (after the ordinary finders).
    """

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] not in ROOTS:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
