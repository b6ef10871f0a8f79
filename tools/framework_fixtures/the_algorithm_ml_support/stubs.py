"""Stand-ins for the two dependencies of Twitter's code that we do not install.

Neither is on the numeric path from a model's inputs to its scores: the
torchrec stub is never called at all, and the tensorflow shim only lets
Twitter's own TruncateAndSlice (the data pipeline, before the model) select
columns of numpy arrays; the choice of columns is Twitter's code.
"""

import types

import numpy as np


def torchrec_modules():
    """{module name: module}: an empty torchrec.optim.keyed.

    Why a stub: projects/home/recap/config.py imports the optimizer's config,
    and importing that submodule runs optimizer/__init__.py, which imports
    optimizer.py, which does `from torchrec.optim import keyed`. keyed is
    used only by build_optimizer and RecapLRShim (training); nothing that
    builds or runs the model touches it.
    """
    torchrec = types.ModuleType("torchrec")
    optim = types.ModuleType("torchrec.optim")
    keyed = types.ModuleType("torchrec.optim.keyed")
    torchrec.__path__ = optim.__path__ = []

    class KeyedOptimizerWrapper:
        """Named by optimizer.py's RecapLRShim annotations; never built."""

    keyed.KeyedOptimizerWrapper = KeyedOptimizerWrapper
    optim.keyed = keyed
    torchrec.optim = optim
    return {"torchrec": torchrec, "torchrec.optim": optim,
            "torchrec.optim.keyed": keyed}


def tensorflow_for_truncate_and_slice():
    """A numpy `tensorflow` with the five names TruncateAndSlice uses.

    Why a shim: projects/home/recap/data/preprocessors.py is tf.keras code
    run in the tf.data input pipeline, before the model, which is torch. Its
    TruncateAndSlice keeps the first N columns and then the columns a mask
    file marks; with this shim that same code runs on numpy arrays. No
    arithmetic happens here: tf.gather is numpy.take, tf.nest flattens and
    re-packs a flat dict (keys sorted, as tf.nest does), tf.io.gfile.GFile is
    open (so a relative mask path is read from the working directory, as
    with TensorFlow), and tf.keras.Model only forwards __call__ to call.
    """
    tf = types.ModuleType("tensorflow")

    class Model:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return self.call(*args, **kwargs)

    def flatten(structure):
        return [structure[key] for key in sorted(structure)]

    def pack_sequence_as(structure, flat):
        return dict(zip(sorted(structure), flat))

    tf.keras = types.SimpleNamespace(Model=Model)
    tf.nest = types.SimpleNamespace(flatten=flatten,
                                    pack_sequence_as=pack_sequence_as)
    tf.gather = lambda values, indices, axis=0: np.take(values, indices, axis=axis)
    tf.io = types.SimpleNamespace(gfile=types.SimpleNamespace(GFile=open))
    return tf
