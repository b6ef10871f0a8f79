"""Imports TorchEasyRec's own code from a checkout, for building MaskNets.

What runs is TorchEasyRec's source as it is in the checkout: its protos
(compiled here with protoc), config_util (parsing and writing the pipeline
config), features/ (feature objects, table names, pooling, widths),
datasets/data_parser.py (feature tensors -> Batch), modules/ (EmbeddingGroup,
MaskNetModule, MLP), models/ (MaskNet, RankModel, BaseModel, TrainWrapper)
and utils/state_dict_util.init_parameters; and _create_features and
_create_model of tzrec/main.py, read from its text (main.py itself cannot be
imported: it needs torch >= 2.3 and torchrec's optimizers and planner).

What does not run:
  - tzrec/__init__.py: the package object is made here instead. Its body
    sets environment variables and logging, tries graphlearn and pyfg,
    imports every module to fill the class registries (we import the ones
    a MaskNet needs), registers fsspec file systems and patches cloud
    credentials; none of it takes part in a model.
  - torchrec and torchmetrics: our stand-ins, standins/ (their docstrings
    say why they give the same numbers and checkpoint keys).
  - pyarrow, pyfg and the rest of placeholders.ROOTS: placeholders that
    raise if used once TorchEasyRec is imported.
"""

import ast
import builtins
import glob
import importlib
import os
import subprocess
import sys
import types

from torcheasyrec_support import placeholders

STANDINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "standins")

# The TorchEasyRec modules the generator uses, by the name load() gives them.
MODULES = {
    "config_util": "tzrec.utils.config_util",
    "constant": "tzrec.constant",
    "data_parser": "tzrec.datasets.data_parser",
    "model": "tzrec.models.model",
    "masknet_module": "tzrec.modules.masknet",
    "state_dict_util": "tzrec.utils.state_dict_util",
}
# Imported for their classes' registration: the feature kinds the cases use,
# and MaskNet for BaseModel.create_class.
_REGISTERING = ("tzrec.features.id_feature", "tzrec.features.raw_feature", "tzrec.models.masknet")


def compile_protos(source, scratch):
    """Compiles tzrec/protos/**.proto with protoc into `scratch`."""
    protos = sorted(glob.glob(os.path.join(source, "tzrec", "protos", "**", "*.proto"), recursive=True))
    if not protos:
        raise RuntimeError(f"{source}: no tzrec/protos/*.proto (not a TorchEasyRec checkout?)")
    try:
        subprocess.run(["protoc", f"--proto_path={source}", f"--python_out={scratch}",
                        *[os.path.relpath(p, source) for p in protos]],
                       check=True, capture_output=True, text=True)
    except OSError as e:
        raise RuntimeError(f"protoc is needed to compile TorchEasyRec's protos: {e}") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"protoc failed on TorchEasyRec's protos: {e.stderr.strip()}") from None


def load(source, scratch):
    """TorchEasyRec's modules, imported from the checkout `source`.

    Compiles the protos into `scratch`, which must outlive the use of the
    modules. Returns a namespace of the modules of MODULES by their names
    there, and `main`: _create_features and _create_model of tzrec/main.py.

    REQUIRES: called once per process, before anything imported torchrec,
    torchmetrics or tzrec.
    """
    for name in ("tzrec", "torchrec", "torchmetrics"):
        if name in sys.modules:
            raise RuntimeError(f"{name} was imported before TorchEasyRec's checkout was loaded")
    compile_protos(source, scratch)
    sys.path.insert(0, STANDINS)
    sys.meta_path.append(placeholders.Finder())
    package = types.ModuleType("tzrec")
    package.__path__ = [os.path.join(source, "tzrec")]
    package.__file__ = os.path.join(source, "tzrec", "__init__.py")
    sys.modules["tzrec"] = package
    for protos in ("tzrec.protos", "tzrec.protos.models"):
        importlib.import_module(protos).__path__.append(os.path.join(scratch, *protos.split(".")))

    modules = {name: importlib.import_module(module) for name, module in MODULES.items()}
    for module in _REGISTERING:
        importlib.import_module(module)
    main = _main_functions(os.path.join(source, "tzrec", "main.py"), ("_create_features", "_create_model"))
    placeholders.freeze()
    return types.SimpleNamespace(main=main, **modules)


def _main_functions(path, names):
    """The functions `names` of tzrec/main.py, run from its text.

    Each function's source is executed as main.py has it, with those of
    main.py's own imports that the functions use.
    """
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in names]
    missing = set(names) - {f.name for f in functions}
    if missing:
        raise RuntimeError(f"{path} has no {', '.join(sorted(missing))}")
    used = {node.id for f in functions for node in ast.walk(f) if isinstance(node, ast.Name)}
    imports = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            aliases = [a for a in node.names if (a.asname or a.name).split(".")[0] in used]
            if aliases:
                node.names = aliases
                imports.append(node)
    module = ast.Module(body=imports + functions, type_ignores=[])
    scope = {"__name__": "tzrec.main", "__builtins__": builtins}
    exec(compile(module, path, "exec"), scope)  # noqa: S102 (TorchEasyRec's own text)
    return types.SimpleNamespace(**{name: scope[name] for name in names})
