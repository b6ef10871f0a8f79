#!/usr/bin/python3
"""Peer systems for the forward-pass benchmark: PyTorch and ONNX Runtime.

The peers run the dense network of a reference MaskNet configuration, from
the instance vector V [n, d] to the probabilities [n, num_tasks]
(masknet -> mlp -> task heads -> sigmoid, + calibration if any). Feature
encoding (embedding lookups, log1p, input norms) is NOT part of the peers;
our C++ figure includes it.

    /usr/bin/python3 bench/peers/peers.py prepare --out DIR [--configs a,b,c]
    /usr/bin/python3 bench/peers/peers.py torch --dir DIR --config NAME \\
        [--batches 1,8,64,256,1024] [--threads 2] [--min_time 1.0] \\
        [--paths xnnpack,mkldnn]

`prepare` writes, per config, DIR/<config>/:
    model.onnx                  the dense network (opset 17; input "v" [n, d],
                                output "scores" [n, num_tasks], n dynamic)
    model_int8.onnx             the same graph as ONNX Runtime's dynamic int8
                                quantizer makes it (quantize_onnx.py)
    models/<config>/1/          the same weights in our model format, so
                                DIR/<config>/models is a --model_root
    meta.json                   d, num_tasks, FLOPs per candidate, the
                                verification diffs; for the int8 peers (ONNX
                                Runtime, PyTorch's dynamic quantization) their
                                error and how their scores move with the batch
It is a cache: a config whose files are newer than this code is skipped.

`torch` times PyTorch in this process (every fast path, interleaved, the best
one kept per batch) and prints one JSON object; `--paths dynamic_int8` times
its dynamic int8 quantization instead.

Use /usr/bin/python3 (Debian's python3-torch). Debian's torch has no fast
BLAS: its eager matmul is the slow reference gemm, so the paths timed are
TorchScript + optimize_for_mobile (XNNPACK) and Linear layers converted with
torch.utils.mkldnn.to_mkldnn (oneDNN).
"""

import argparse
import contextlib
import copy
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

# XNNPACK runs on its own thread pool: OpenMP threads spinning after torch's
# elementwise ops would steal its cores. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import onnx  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from masknet_tools import config  # noqa: E402
from masknet_tools import export  # noqa: E402
from masknet_tools import reference  # noqa: E402
from masknet_tools import reference_configs  # noqa: E402

import quantize_onnx  # noqa: E402  (beside this file)

CONFIGS = ("paper-criteo-parallel", "paper-criteo-serial", "twitter-recap")
SEED = 1
OPSET = 17
TOLERANCE = 1e-4
VERIFY_ROWS = 64
ORT_BENCH = os.path.join(HERE, "ort_bench.js")

# The cache is stale when any of these is newer than its files.
_CODE = [
    os.path.abspath(__file__),
    os.path.join(HERE, "quantize_onnx.py"),
] + [
    os.path.join(ROOT, "tools", "masknet_tools", name)
    for name in ("reference.py", "reference_configs.py", "export.py",
                 "config.py", "safetensors_io.py")
]


def log(message):
    print(f"[peers] {message}", file=sys.stderr, flush=True)


# --- Weights -----------------------------------------------------------------


def seeded_reference(config_name, seed=SEED):
    """The MaskNetReference of `config_name` (float32) with seeded weights.

    Every tensor is re-initialised in state_dict order from torch.manual_seed:
    dense weights N(0, 1/fan_in) (activations stay O(1), so the probabilities
    spread over (0, 1) and the verification means something), biases and
    shifts N(0, 0.05^2), norm scales 1 + N(0, 0.05^2), embeddings N(0, 0.05^2),
    batch-norm running_mean N(0, 0.05^2) and running_var U(0.5, 1.5).
    """
    model = reference.MaskNetReference(reference_configs.get(config_name))
    scales = set()  # names of LN / BN / affine scale tensors
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, (reference.LayerNorm, reference.BatchNorm)):
            scales.add(prefix + "weight")
        if isinstance(module, reference.DenseFieldEncoder):
            scales.add(prefix + "scale")
    torch.manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tensor.shape
        if name.endswith("running_var"):
            value = torch.rand(shape) + 0.5
        elif name in scales:
            value = 1 + torch.randn(shape) * 0.05
        elif name.endswith(".weight") and len(shape) == 2:
            value = torch.randn(shape) / shape[1]**0.5
        else:
            value = torch.randn(shape) * 0.05
        state[name] = value.float()
    model.load_state_dict(state, strict=True)
    return model.eval()


# --- The dense network ---------------------------------------------------------


class FastLayerNorm(nn.Module):
    """reference.LayerNorm computed by torch's fused layer_norm."""

    def __init__(self, ref):
        super().__init__()
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())
        self.eps = ref.eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias,
                            self.eps)


class FastFieldLayerNorm(nn.Module):
    """reference.FieldLayerNorm; equal-width fields covering the whole
    vector are normalized as one [n, fields, width] layer_norm."""

    def __init__(self, ref):
        super().__init__()
        slices = list(ref._field_slices.values())
        names = list(ref._field_slices)
        widths = {end - begin for begin, end in slices}
        eps = {ref[name].eps for name in names}
        contiguous = all(slices[i][1] == slices[i + 1][0]
                         for i in range(len(slices) - 1))
        self.grouped = (len(widths) == 1 and len(eps) == 1 and contiguous and
                        slices[0][0] == 0)
        if self.grouped:
            self.num_fields, self.width = len(slices), widths.pop()
            self.eps = eps.pop()
            self.weight = nn.Parameter(
                torch.stack([ref[n].weight.detach() for n in names]))
            self.bias = nn.Parameter(
                torch.stack([ref[n].bias.detach() for n in names]))
            # Explicit unit scale and zero shift: torch 1.13 exports a
            # layer_norm without them as an invalid LayerNormalization.
            self.register_buffer("ones", torch.ones(self.width))
            self.register_buffer("zeros", torch.zeros(self.width))
        else:
            self.slices = slices
            self.norms = nn.ModuleList(FastLayerNorm(ref[n]) for n in names)

    def forward(self, x):
        if self.grouped:
            y = F.layer_norm(x.reshape(-1, self.num_fields, self.width),
                             (self.width,), self.ones, self.zeros, self.eps)
            y = y * self.weight + self.bias
            return y.reshape(-1, self.num_fields * self.width)
        return torch.cat([
            norm(x[:, begin:end])
            for norm, (begin, end) in zip(self.norms, self.slices)
        ],
                         dim=1)


def _fast_norm(ref):
    if isinstance(ref, reference.LayerNorm):
        return FastLayerNorm(ref)
    if isinstance(ref, reference.FieldLayerNorm):
        return FastFieldLayerNorm(ref)
    return nn.Identity()


def _linear(ref_linear, batch_norm=None):
    """A plain nn.Linear copy of `ref_linear`, an eval batch norm folded in."""
    weight = ref_linear.weight.detach().clone()
    bias = (ref_linear.bias.detach().clone() if ref_linear.bias is not None
            else None)
    if isinstance(batch_norm, reference.BatchNorm):
        scale = 1 / torch.sqrt(batch_norm.running_var + batch_norm.eps)
        shift = -batch_norm.running_mean * scale
        if batch_norm.affine:
            shift = shift * batch_norm.weight.detach() + batch_norm.bias.detach()
            scale = scale * batch_norm.weight.detach()
        weight = weight * scale[:, None]
        bias = (bias * scale if bias is not None else 0) + shift
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _dense_stack(ref_stack):
    layers = []
    for layer in ref_stack:
        layers.append(_linear(layer, layer.batch_norm))
        if layer.relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Block(nn.Module):

    def __init__(self, ref):
        super().__init__()
        self.input_norm = _fast_norm(ref.input_norm)
        self.mask = nn.Sequential(_linear(ref.mask.aggregation), nn.ReLU(),
                                  _linear(ref.mask.projection))
        self.hidden = _linear(ref.hidden)
        self.layer_norm = (FastLayerNorm(ref.layer_norm) if isinstance(
            ref.layer_norm, reference.LayerNorm) else nn.Identity())
        self.relu = ref.relu

    def forward(self, net, mask_input):
        y = self.layer_norm(self.hidden(self.input_norm(net) *
                                        self.mask(mask_input)))
        return torch.relu(y) if self.relu else y


class DenseNetwork(nn.Module):
    """V [n, d] -> probabilities [n, num_tasks] of a MaskNetReference.

    The reference's dense part (masknet, mlp, task heads, sigmoid,
    calibration) rebuilt from plain torch modules, float32: nn.Linear (so
    torch.utils.mkldnn.to_mkldnn and optimize_for_mobile find every dense
    layer; eval batch norms folded into the layer before them), fused
    F.layer_norm, and equal-width field LNs as one grouped layer_norm.
    `check_against_reference` shows it computes what the reference does.
    """

    def __init__(self, ref):
        super().__init__()
        masknet = ref.masknet
        self.input_norm = _fast_norm(masknet.input_norm)
        self.mask_reads_normalized = masknet.mask_reads_normalized
        self.serial = masknet.serial
        self.blocks = nn.ModuleList(Block(b) for b in masknet.blocks)
        self.mlp = _dense_stack(ref.mlp)
        self.heads = nn.ModuleList(
            _dense_stack(ref.tasks[name]) for name in ref.task_names)
        rates = ref.negative_sampling_rates
        self.calibrated = any(r is not None for r in rates)
        self.register_buffer(
            "rates",
            torch.tensor([1.0 if r is None else r for r in rates],
                         dtype=torch.float32))

    def forward(self, v):
        normalized = self.input_norm(v)
        mask_input = normalized if self.mask_reads_normalized else v
        if self.serial:
            net = normalized
            for block in self.blocks:
                net = block(net, mask_input)
        else:
            net = torch.cat([block(normalized, mask_input)
                             for block in self.blocks], dim=1)
        shared = self.mlp(net)
        p = torch.sigmoid(torch.cat([head(shared) for head in self.heads],
                                    dim=1))
        if self.calibrated:
            p = p * self.rates / (1 - p + p * self.rates)
        return p


def reference_probabilities(ref, v):
    """The reference's own modules on V, in float64: the ground truth."""
    ref64 = copy.deepcopy(ref).double()
    with torch.inference_mode():
        shared = ref64.mlp(ref64.masknet(v.double()))
        logits = torch.cat([ref64.tasks[name](shared)
                            for name in ref64.task_names], dim=1)
        return ref64.probabilities_from_logits(logits)


def dense_flops(net):
    """2 x multiply-adds of every nn.Linear of `net`, per candidate."""
    return 2 * sum(m.in_features * m.out_features
                   for m in net.modules() if isinstance(m, nn.Linear))


def random_v(n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float32)


# --- PyTorch fast paths ---------------------------------------------------------


def build_path(net, path, d):
    """A callable V -> probabilities for PyTorch path `path`.

      eager       the module as it is (Debian: reference gemm; slow)
      mkldnn      torch.utils.mkldnn.to_mkldnn: Linear -> MkldnnLinear (oneDNN
                  inner product, weights as mkldnn tensors; dense tensors in
                  and out of each layer), traced
      xnnpack     torch.jit.trace + optimize_for_mobile (frozen, XNNPACK
                  prepacked linear_clamp, fused ReLU)
      jit_mkldnn  torch.jit.freeze + optimize_for_inference (torch 1.13
                  leaves Linear on the reference gemm: as slow as eager)
      dynamic_int8  torch.ao.quantization.quantize_dynamic: every Linear with
                  int8 weights, activations quantized per call (one scale
                  per batch) on fbgemm or onednn (int8_engine), traced
    """
    example = random_v(8, d, 0)
    net = copy.deepcopy(net).eval()
    with torch.no_grad():
        if path == "eager":
            return net
        if path == "mkldnn":
            from torch.utils import mkldnn
            return torch.jit.trace(mkldnn.to_mkldnn(net), example)
        if path == "xnnpack":
            from torch.utils import mobile_optimizer
            return mobile_optimizer.optimize_for_mobile(
                torch.jit.trace(net, example))
        if path == "dynamic_int8":
            return torch.jit.trace(dynamic_int8(net), example)
        if path == "jit_mkldnn":
            return torch.jit.optimize_for_inference(
                torch.jit.freeze(torch.jit.trace(net, example)))
    raise ValueError(f"unknown path {path!r}")


PATHS = ("eager", "mkldnn", "xnnpack", "jit_mkldnn", "dynamic_int8")
FP32_PATHS = PATHS[:4]
# eager (reference gemm) and jit_mkldnn (optimize_for_inference leaves the
# Linear layers on the same gemm here) measured 10-60x slower: not timed by
# default; eager would take ~15 s a call on twitter-recap at batch 1024.
DEFAULT_PATHS = ("xnnpack", "mkldnn")


def int8_engine():
    """The x86 quantized engine of this torch: fbgemm, or onednn (Debian's
    torch 1.13 has onednn and qnnpack, an ARM-first engine); None if none."""
    engines = torch.backends.quantized.supported_engines
    return next((e for e in ("fbgemm", "onednn") if e in engines), None)


def dynamic_int8(net):
    """PyTorch's dynamic int8 quantization of every nn.Linear of `net`, as
    `quantize_dynamic(net, {nn.Linear})` does it by default: one weight scale
    per layer. (Its per-channel qconfig measured 5x slower on the onednn
    engine here: 8.8 against 1.6 ms for a 512-1024-512 MLP at batch 256.)"""
    from torch.ao import quantization
    torch.backends.quantized.engine = int8_engine()
    return quantization.quantize_dynamic(copy.deepcopy(net).eval(),
                                         {nn.Linear},
                                         dtype=torch.qint8)


def spearman(a, b):
    """Rank correlation of two 1-D arrays (no ties expected)."""
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def heavy_tailed_v(n, d, seed):
    """Normal rows with every value multiplied by 1 + |t| (Student's t, 2
    degrees of freedom, capped at 89), as parity_test's
    Int8KeepsTheOrderOfHeavyTailedCandidates does: a few values far out."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(n, d, generator=generator, dtype=torch.float64)
    z = torch.randn(n, d, generator=generator, dtype=torch.float64)
    chi2 = (torch.randn(n, d, 2, generator=generator,
                        dtype=torch.float64)**2).sum(-1)
    t = (z / torch.sqrt(chi2 / 2)).abs().clamp(max=89)
    return (normal * (1 + t)).float()


def int8_checks(ref, run, v, batch_v, heavy_v):
    """How an int8 peer `run` (V, alone: bool -> probabilities) compares with
    the float64 reference: its largest error, how far a row's score moves
    with its batch-mates, and the rank agreement within a heavy-tailed
    batch (the lowest Spearman over the tasks) in a batch and row by row."""
    truth = reference_probabilities(ref, v)
    in_batch, alone = run(batch_v, False), run(batch_v, True)
    moved = (in_batch.double() - alone.double()).abs().max(dim=1).values
    heavy_truth = reference_probabilities(ref, heavy_v).numpy()

    def worst_spearman(p):
        p = p.double().numpy()
        return min(spearman(p[:, t], heavy_truth[:, t])
                   for t in range(p.shape[1]))

    return {
        "max_abs_diff": float((run(v, False).double() - truth).abs().max()),
        "batch_rows": batch_v.shape[0],
        "rows_moved_by_batch": int((moved > 1e-6).sum()),
        "max_moved_by_batch": float(moved.max()),
        "heavy_tailed_max_abs_v": float(heavy_v.abs().max()),
        "heavy_tailed_spearman_in_batch": worst_spearman(run(heavy_v, False)),
        "heavy_tailed_spearman_alone": worst_spearman(run(heavy_v, True)),
    }


def time_calls(fn, v, min_time):
    """Mean seconds per call over >= min_time seconds of back-to-back calls."""
    calls, start = 0, time.perf_counter()
    while True:
        fn(v)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


# --- ONNX Runtime (through node) --------------------------------------------


def ort_run(model_path, v, alone=False):
    """Runs `model_path` on V [n, d] with ort_bench.js --run (one call, or
    with `alone` one call per row); returns scores."""
    work = os.path.dirname(model_path)
    inp, out = os.path.join(work, ".verify_v.f32"), os.path.join(
        work, ".verify_scores.f32")
    v.numpy().astype("<f4").tofile(inp)
    try:
        subprocess.run([
            "node", ORT_BENCH, "--model", model_path, "--run", inp, "--rows",
            str(v.shape[0]), "--out", out
        ] + (["--alone"] if alone else []),
                       check=True,
                       stdout=subprocess.DEVNULL)
        scores = np.fromfile(out, dtype="<f4")
    finally:
        for f in (inp, out):
            if os.path.exists(f):
                os.remove(f)
    return torch.from_numpy(scores.reshape(v.shape[0], -1).copy())


# --- prepare ---------------------------------------------------------------------


class Trivial(nn.Module):
    """sigmoid(v[:, :num_tasks]): overhead.onnx, for ORT's per-call cost."""

    def __init__(self, num_tasks):
        super().__init__()
        self.num_tasks = num_tasks

    def forward(self, v):
        return torch.sigmoid(v[:, :self.num_tasks])


@contextlib.contextmanager
def _removed_on_error(path):
    try:
        yield
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise


def _export_onnx(module, d, path):
    """torch.onnx.export: input "v" [batch, d], output "scores" [batch, k]."""
    tmp = path + ".tmp"
    with torch.no_grad(), _removed_on_error(tmp):
        torch.onnx.export(module,
                          random_v(2, d, 0),
                          tmp,
                          input_names=["v"],
                          output_names=["scores"],
                          dynamic_axes={
                              "v": {0: "batch"},
                              "scores": {0: "batch"}
                          },
                          opset_version=OPSET,
                          do_constant_folding=True)
    os.replace(tmp, path)


def _outputs(out_dir, config_name):
    base = os.path.join(out_dir, config_name)
    version = os.path.join(base, "models", config_name, "1")
    return base, [
        os.path.join(base, "model.onnx"),
        os.path.join(base, "meta.json"),
        os.path.join(base, "overhead.onnx"),
        os.path.join(version, export.CONFIG_FILE),
        os.path.join(version, export.WEIGHTS_FILE),
        os.path.join(base, "model_int8.onnx"),
    ]


def is_fresh(out_dir, config_name):
    """True when every output of `config_name` is newer than the code."""
    _, files = _outputs(out_dir, config_name)
    if not all(os.path.exists(f) for f in files):
        return False
    code = max(os.path.getmtime(f) for f in _CODE if os.path.exists(f))
    return min(os.path.getmtime(f) for f in files) > code


def prepare(config_name, out_dir, force=False):
    """Writes model.onnx, models/ and meta.json of `config_name`; returns meta."""
    base, files = _outputs(out_dir, config_name)
    onnx_path, meta_path = files[0], files[1]
    if not force and is_fresh(out_dir, config_name):
        log(f"{config_name}: up to date in {base}")
        with open(meta_path) as f:
            return json.load(f)
    os.makedirs(base, exist_ok=True)
    started = time.time()
    seconds = {}

    t = time.time()
    ref = seeded_reference(config_name)
    net = DenseNetwork(ref).eval()
    model_config = ref.model_config
    seconds["build"] = time.time() - t

    t = time.time()
    export.export_model(model_config,
                        ref.state_dict(),
                        os.path.join(base, "models"),
                        config_name,
                        version=1,
                        overwrite=True)
    seconds["export_model_format"] = time.time() - t
    _, written = export.load_model(
        os.path.join(base, "models", config_name, "1"))
    state = ref.state_dict()
    format_diff = max(
        float((written[name] - state[name]).abs().max()) for name in state)
    if format_diff != 0:
        raise RuntimeError(f"{config_name}: our format's weights differ from "
                           f"the reference's by {format_diff}")

    d = config.instance_width(model_config)
    t = time.time()
    _export_onnx(net, d, onnx_path)
    seconds["export_onnx"] = time.time() - t
    _export_onnx(Trivial(len(ref.task_names)), d, files[2])
    int8_onnx, quantized_layers = quantize_onnx.quantize_dynamic(
        onnx.load(onnx_path))
    onnx.save(int8_onnx, files[5])

    # Verification on a random V batch against the reference (float64).
    t = time.time()
    v = random_v(VERIFY_ROWS, d, 12345)
    truth = reference_probabilities(ref, v)
    diffs = {}

    def diff(p):
        return float((p.double() - truth).abs().max())

    with torch.inference_mode():
        ref32 = ref.probabilities_from_logits(
            torch.cat([ref.tasks[n](ref.mlp(ref.masknet(v)))
                       for n in ref.task_names], dim=1))
        diffs["reference_float32"] = diff(ref32)
        diffs["torch_eager"] = diff(net(v))
    torch.set_num_threads(1)
    for path in FP32_PATHS[1:]:  # eager is torch_eager above
        fn = build_path(net, path, d)
        with torch.inference_mode():
            diffs[f"torch_{path}"] = diff(fn(v))
    diffs["onnxruntime"] = diff(ort_run(onnx_path, v))
    seconds["verify"] = time.time() - t
    # The int8 peers: their error, and how much their scores depend on the
    # batch (DynamicQuantizeLinear and torch's dynamic quantization pick one
    # activation scale per call).
    t = time.time()
    batch_v, heavy_v = random_v(256, d, 777), heavy_tailed_v(256, d, 778)
    int8 = {"onnxruntime": int8_checks(
        ref, lambda x, alone: ort_run(files[5], x, alone), v, batch_v, heavy_v)}
    int8["onnxruntime"]["quantized_layers"] = quantized_layers
    if int8_engine():
        quantized = dynamic_int8(net)

        def torch_int8(x, alone):
            with torch.inference_mode():
                return (torch.cat([quantized(row[None]) for row in x])
                        if alone else quantized(x))

        int8["pytorch"] = int8_checks(ref, torch_int8, v, batch_v, heavy_v)
    seconds["verify_int8"] = time.time() - t
    for system, checks in int8.items():
        if not checks["max_abs_diff"] < 0.25:  # a broken graph, not rounding
            raise RuntimeError(f"{config_name}: {system} int8 is off the "
                               f"reference by {checks['max_abs_diff']}")
    worst = max(diffs.values())
    if worst > TOLERANCE:
        raise RuntimeError(f"{config_name}: outputs disagree with the "
                           f"reference: {diffs}")

    num_params = sum(
        p.numel() for p in list(net.parameters()) + list(net.buffers()))
    flops = dense_flops(net)
    meta = {
        "config": config_name,
        "instance_width": d,
        "num_tasks": len(ref.task_names),
        "tasks": ref.task_names,
        "flops_per_candidate": flops,
        "flops_per_candidate_config": config.flops_per_candidate(model_config),
        "dense_layers": sum(1 for m in net.modules()
                            if isinstance(m, nn.Linear)),
        "dense_network_params": num_params,
        "seed": SEED,
        "init": "torch.manual_seed(1); dense weights N(0, 1/fan_in), biases "
                "N(0, 0.05^2), norm scales 1 + N(0, 0.05^2), running_var "
                "U(0.5, 1.5) (peers.seeded_reference)",
        "model_root": os.path.join(base, "models"),
        "onnx": onnx_path,
        "onnx_opset": OPSET,
        "onnx_bytes": os.path.getsize(onnx_path),
        "onnx_int8": files[5],
        "int8_peers": int8,
        "torch_version": torch.__version__,
        "verify": {
            "rows": VERIFY_ROWS,
            "truth": "reference modules in float64 on the same V",
            "tolerance": TOLERANCE,
            "max_abs_diff": diffs,
            "model_format_weights_max_abs_diff": format_diff,
            "truth_min": float(truth.min()),
            "truth_max": float(truth.max()),
            "truth_std": float(truth.std()),
        },
        "prepare_seconds": seconds,
        "prepare_total_seconds": time.time() - started,
    }
    tmp_meta = meta_path + ".tmp"
    with open(tmp_meta, "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    os.replace(tmp_meta, meta_path)
    log(f"{config_name}: prepared in {meta['prepare_total_seconds']:.1f} s; "
        f"max diffs {diffs}")
    return meta


# --- torch timing ----------------------------------------------------------------


def time_torch(out_dir, config_name, batches, threads, min_time, paths,
               repeats=3, warmup=0.2):
    """Times every path in `paths` on every batch, interleaved; JSON dict."""
    base, _ = _outputs(out_dir, config_name)
    with open(os.path.join(base, "meta.json")) as f:
        meta = json.load(f)
    version_dir = os.path.join(base, "models", config_name, "1")
    model_config, weights = export.load_model(version_dir)
    ref = reference.MaskNetReference(model_config).float()
    ref.load_state_dict(weights, strict=True)
    net = DenseNetwork(ref.eval()).eval()
    d = meta["instance_width"]

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    built = {path: build_path(net, path, d) for path in paths}
    table = {path: {} for path in paths}
    results = []
    with torch.inference_mode():
        for batch in batches:
            v = random_v(batch, d, 1000 + batch)
            for fn in built.values():  # warm up (JIT profiling, prepacking)
                time_calls(fn, v, warmup)
            best = {path: float("inf") for path in paths}
            for _ in range(repeats):
                for path, fn in built.items():
                    best[path] = min(best[path], time_calls(fn, v, min_time))
            for path in paths:
                table[path][str(batch)] = round(batch / best[path], 1)
            winner = min(paths, key=lambda p: best[p])
            results.append({
                "batch": batch,
                "path": winner,
                "latency_us": round(best[winner] * 1e6, 2),
                "candidates_per_s": round(batch / best[winner], 1),
            })
    winners = [r["path"] for r in results]
    path = max(paths, key=lambda p: (winners.count(p), -paths.index(p)))
    return {
        "system": "pytorch",
        "version": torch.__version__,
        "path": path,
        "config": config_name,
        "threads": threads,
        "min_time": min_time,
        "repeats": repeats,
        "flops_per_candidate": meta["flops_per_candidate"],
        "results": results,
        "candidates_per_s_by_path": table,
        "env": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
    }


def _ints(text):
    return [int(x) for x in text.split(",") if x]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write ONNX, our format and meta.json")
    p.add_argument("--out", required=True)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--force", action="store_true", help="ignore the cache")
    t = sub.add_parser("torch", help="time PyTorch's fast paths")
    t.add_argument("--dir", required=True, help="the --out of prepare")
    t.add_argument("--config", required=True)
    t.add_argument("--batches", default="1,8,64,256,1024")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--min_time", type=float, default=1.0)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--paths", default=",".join(DEFAULT_PATHS),
                   help=f"subset of {','.join(PATHS)}")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        for name in args.configs.split(","):
            prepare(name, args.out, force=args.force)
        return 0
    paths = [p for p in args.paths.split(",") if p]
    for p in paths:
        if p not in PATHS:
            parser.error(f"unknown path {p!r}")
    result = time_torch(args.dir, args.config, _ints(args.batches),
                        args.threads, args.min_time, paths, args.repeats)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
