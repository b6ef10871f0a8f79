"""Writes and reads model versions of a model repository (docs/MODEL_FORMAT.md).

    <model_root>/<model_name>/<version>/model_config.pbtxt
    <model_root>/<model_name>/<version>/weights.safetensors

A version is written into a hidden sibling directory and renamed into place,
so a server watching the repository never sees half a version (names that are
not positive integers are ignored by it). Before the rename, the server's own
loader (masknet_check_model) must accept it: export succeeds exactly when the
server would load the model.
"""

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import torch

from masknet_tools import config
from masknet_tools import protos
from masknet_tools import reference
from masknet_tools import safetensors_io

CONFIG_FILE = "model_config.pbtxt"
WEIGHTS_FILE = "weights.safetensors"

_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")

# The server's model checker: this variable, else the build tree's.
CHECKER_ENV = "MASKNET_CHECK_MODEL"


class ExportError(ValueError):
    """Weights do not match their config; the message lists every problem."""


def _as_tensor(values):
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    return torch.as_tensor(np.asarray(values))


def expected_shapes(model_config):
    """Tensor name to shape (tuple) of every tensor `model_config` implies."""
    return {
        name: tuple(tensor.shape) for name, tensor in
        reference.MaskNetReference(model_config).state_dict().items()
    }


def check_weights(model_config, weights):
    """Checks weights strictly against the tensors `model_config` implies.

    Args:
      model_config: a valid ModelConfig.
      weights: dict of tensor name to torch tensor or numpy array.

    Raises:
      ExportError: a tensor is missing, unexpected, mis-shaped or not finite.
    """
    expected = expected_shapes(model_config)
    problems = [
        f"missing tensor {name!r} {list(shape)}"
        for name, shape in sorted(expected.items())
        if name not in weights
    ]
    for name in sorted(weights):
        values = _as_tensor(weights[name])
        if name not in expected:
            problems.append(f"unexpected tensor {name!r}")
        elif tuple(values.shape) != expected[name]:
            problems.append(f"tensor {name!r} has shape {list(values.shape)}, "
                            f"expected {list(expected[name])}")
        elif not torch.isfinite(values.to(torch.float64)).all():
            problems.append(f"tensor {name!r} has a NaN or infinite value")
    if problems:
        raise ExportError("weights do not match the config:\n  " +
                          "\n  ".join(problems))


def checker_path():
    """The masknet_check_model binary the exporter asks."""
    return os.environ.get(CHECKER_ENV) or os.path.join(
        protos.REPO_ROOT, "build", "tools", "masknet_check_model")


def check_with_server(version_dir, shown_as=None):
    """Raises ExportError unless masknet_server would load `version_dir`.

    Runs masknet_check_model (the server's loader, with the server's default
    limits). Errors name `shown_as` (default: `version_dir`).
    """
    checker = checker_path()
    if not os.access(checker, os.X_OK):
        raise ExportError(
            f"cannot ask the server's loader whether it loads the model: "
            f"{checker} is missing (build it with scripts/build.sh, or set "
            f"{CHECKER_ENV} to masknet_check_model's path)")
    result = subprocess.run([checker, version_dir],
                            capture_output=True,
                            text=True,
                            check=False,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    if result.returncode == 0:
        return
    message = (result.stdout.strip() or result.stderr.strip() or
               f"masknet_check_model exited {result.returncode}")
    raise ExportError("the server would not load this model: " +
                      message.replace(version_dir, shown_as or version_dir))


def add_version_flags(parser):
    """The flags that say where and how a command writes a model version:
    --model_root, --model_name, --version, --bf16, --overwrite."""
    parser.add_argument("--model_root",
                        required=True,
                        help="model repository directory")
    parser.add_argument("--model_name", required=True)
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--bf16",
                        action="store_true",
                        help="store BF16 instead of F32")
    parser.add_argument("--overwrite",
                        action="store_true",
                        help="replace an existing version")


def export_to_flags(args, model_config, weights):
    """export_model to where add_version_flags' flags in `args` say."""
    return export_model(model_config,
                        weights,
                        args.model_root,
                        args.model_name,
                        args.version,
                        bf16=args.bf16,
                        overwrite=args.overwrite)


def export_model(model_config,
                 weights,
                 model_root,
                 model_name,
                 version=1,
                 bf16=False,
                 overwrite=False):
    """Writes one model version after checking config and weights.

    Args:
      model_config: the ModelConfig to write.
      weights: dict of tensor name to torch tensor or numpy array (any float
        dtype; written as float32, or rounded to bfloat16 with `bf16`).
      model_root: the repository directory; created if missing.
      model_name: letters, digits, '_', '-', '.'.
      version: a positive integer.
      bf16: store BF16 instead of F32.
      overwrite: replace an existing version instead of failing.

    Returns:
      The version directory.

    Raises:
      config.ConfigError: the config is invalid.
      ExportError: the weights do not match the config, or the server's
        loader refuses the model (the message is the server's).
      FileExistsError: the version exists and not `overwrite`.
      ValueError: bad model name or version.
    """
    if not _MODEL_NAME.fullmatch(model_name) or model_name in (".", ".."):
        raise ValueError(f"bad model name {model_name!r}")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    check_weights(model_config, weights)

    model_dir = os.path.join(model_root, model_name)
    version_dir = os.path.join(model_dir, str(version))
    if os.path.exists(version_dir) and not overwrite:
        raise FileExistsError(version_dir)
    os.makedirs(model_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{version}.", dir=model_dir)
    try:
        config.write_config(model_config, os.path.join(staging, CONFIG_FILE))
        arrays = {
            name: _as_tensor(values).float().numpy()
            for name, values in weights.items()
        }
        safetensors_io.write(os.path.join(staging, WEIGHTS_FILE),
                             arrays,
                             dtype="BF16" if bf16 else "F32")
        os.chmod(staging, 0o755)
        check_with_server(staging, shown_as=version_dir)
        if os.path.exists(version_dir):
            shutil.rmtree(version_dir)
        os.rename(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version_dir


def load_model(version_dir):
    """Reads and checks one model version.

    Returns:
      (model_config, weights): the ModelConfig and a dict of tensor name to
      float32 torch tensor (BF16 widened).

    Raises:
      config.ConfigError, ExportError, ValueError: the version is invalid.
    """
    model_config = config.read_config(os.path.join(version_dir, CONFIG_FILE))
    config.validate(model_config)
    arrays = safetensors_io.read(os.path.join(version_dir, WEIGHTS_FILE))
    weights = {name: torch.from_numpy(a) for name, a in arrays.items()}
    check_weights(model_config, weights)
    return model_config, weights


def load_reference(version_dir, dtype=torch.float64):
    """The MaskNetReference of a model version in `dtype` (default float64)."""
    model_config, weights = load_model(version_dir)
    model = reference.MaskNetReference(model_config).to(dtype)
    model.load_state_dict(weights, strict=True)
    return model
