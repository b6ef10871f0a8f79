"""Twitter's the-algorithm-ml, imported from a checkout as the package `tml`.

Twitter's modules import each other as `tml.<path in the repository>`. We
register a package `tml` whose __path__ is the checkout, so every module
under it is Twitter's file as checked out; nothing is copied. The only
modules that are not Twitter's come from stubs.py.
"""

import importlib
import os
import sys
import types

from the_algorithm_ml_support import stubs

_ENTRYPOINT = os.path.join("projects", "home", "recap", "model", "entrypoint.py")


def use_checkout(source):
    """Makes `import tml...` read Twitter's code from the checkout `source`.

    Also installs the torchrec stub (stubs.torchrec_modules) unless torchrec
    is installed. Calling it again with the same checkout does nothing.

    Raises:
      ValueError: `source` is not a checkout of the-algorithm-ml, or `tml`
        already comes from somewhere else in this process.
    """
    source = os.path.abspath(source)
    if not os.path.isfile(os.path.join(source, _ENTRYPOINT)):
        raise ValueError(f"{source} is not a checkout of the-algorithm-ml "
                         f"(no {_ENTRYPOINT})")
    tml = sys.modules.get("tml")
    if tml is not None:
        if list(getattr(tml, "__path__", [])) != [source]:
            raise ValueError(f"package tml is already imported from "
                             f"{list(getattr(tml, '__path__', []))}, not {source}")
        return
    tml = types.ModuleType("tml")
    tml.__path__ = [source]
    sys.modules["tml"] = tml
    if "torchrec" not in sys.modules:
        try:
            importlib.import_module("torchrec.optim.keyed")  # the real one, if installed
        except ImportError:
            sys.modules.update(stubs.torchrec_modules())


def truncate_and_slice_class():
    """Twitter's data/preprocessors.TruncateAndSlice, imported over the shim.

    REQUIRES: use_checkout() was called. The shim (stubs.
    tensorflow_for_truncate_and_slice) is `tensorflow` only while Twitter's
    module is imported; the module keeps it as its `tf`.
    """
    module = "tml.projects.home.recap.data.preprocessors"
    if module not in sys.modules:
        saved = sys.modules.get("tensorflow")
        sys.modules["tensorflow"] = stubs.tensorflow_for_truncate_and_slice()
        try:
            __import__(module)
        finally:
            if saved is None:
                del sys.modules["tensorflow"]
            else:
                sys.modules["tensorflow"] = saved
    return sys.modules[module].TruncateAndSlice
