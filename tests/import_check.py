#!/usr/bin/python3
"""Bring your own checkpoint, end to end: import, serve, compare.

Run by ctest as import_check. For each case, builds a stand-in of a
framework's model with that framework's tensor names and configuration
(tests/python/), saves its checkpoint and configuration file, imports them
with the one command (tools/import_model.py), serves every imported model
from one masknet_server, and checks that the server's scores match the
stand-in's within 1e-5.

    import_check.py --server BIN
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, ROOT)

import grpc  # noqa: E402

from masknet_tools.protos import ranker_pb2  # noqa: E402
from server_process import ServerProcess  # noqa: E402
from tests.python import fuxictr  # noqa: E402
from tests.python import torcheasyrec  # noqa: E402
from tests.python import twitter_recap  # noqa: E402

ARGS = None
TOLERANCE = 1e-5
CANDIDATES = 50


def _write_yaml(value, path):
    with open(path, "w") as f:
        yaml.safe_dump(value, f, sort_keys=False)


def _write_text(text, path):
    with open(path, "w") as f:
        f.write(text)


def _recap_case(parallel):
    """(name, framework, files to write, extra flags, expected scores,
    request)."""
    recap, widths, rates = twitter_recap.example(parallel)
    wrapper = twitter_recap.build(recap, widths, rates, seed=7 + parallel)
    inputs = twitter_recap.random_inputs(widths, CANDIDATES, seed=11)
    with torch.no_grad():
        expected = wrapper.model(**inputs).numpy()
    request = ranker_pb2.RankRequest()
    # Dense fields only, each scope's in schema order (continuous, binary,
    # the embeddings); the viewer's embeddings are the request context.
    for name, values in inputs.items():
        if name.startswith("user"):
            request.context.dense.extend(values[0].tolist())
    for i in range(CANDIDATES):
        candidate = request.candidates.add(id=1000 + i)
        for name, values in inputs.items():
            if not name.startswith("user"):
                candidate.features.dense.extend(values[i].tolist())
    name = "recap_parallel" if parallel else "recap_serial"
    files = {
        "checkpoint": lambda path: torch.save(wrapper.state_dict(), path),
        "config": lambda path: _write_yaml(recap, path),
    }
    return name, "the-algorithm-ml", files, [], expected, request


def _fuxictr_case(parallel):
    yaml_config = fuxictr.model_config(
        "ParallelMaskNet" if parallel else "SerialMaskNet",
        emb_layernorm=not parallel, net_layernorm=not parallel)
    model = fuxictr.build(yaml_config, seed=9 + parallel, batch_norm=parallel)
    inputs = fuxictr.random_inputs(CANDIDATES, seed=17)
    with torch.no_grad():
        expected = model(inputs).numpy()
    request = ranker_pb2.RankRequest()
    request.context.ids.append(int(inputs["user_id"][0]))  # the user's fields
    request.context.dense.append(float(inputs["user_age"][0]))
    for i in range(CANDIDATES):
        candidate = request.candidates.add(id=3000 + i)
        candidate.features.ids.append(int(inputs["item_id"][i]))
        candidate.features.dense.append(float(inputs["item_price"][i]))
        for name in ("item_tags", "clicks"):
            ids = fuxictr.unpadded(inputs[name][i])
            candidate.features.ids.extend(ids)
        candidate.features.id_counts.extend(
            [1] + [len(fuxictr.unpadded(inputs[n][i])) for n in ("item_tags", "clicks")])
    files = {
        "checkpoint": lambda path: torch.save(model.state_dict(), path),
        "config": lambda path: _write_yaml(yaml_config, path),
        "feature_map": lambda path: _write_text(json.dumps(fuxictr.feature_map()), path),
    }
    name = "fuxictr_parallel" if parallel else "fuxictr_serial"
    return name, "fuxictr", files, [], expected, request


def _torcheasyrec_case(parallel):
    text = torcheasyrec.pipeline_config(parallel=parallel, use_bn=not parallel)
    wrapper = torcheasyrec.build(text, seed=5 + parallel)
    inputs = torcheasyrec.random_inputs(CANDIDATES, seed=13)
    with torch.no_grad():
        expected = wrapper.model(inputs).numpy()
    request = ranker_pb2.RankRequest()
    order = ["c1", "c2", "i1", "c3", "c4", "i2"]  # the feature group's
    for i in range(CANDIDATES):
        candidate = request.candidates.add(id=2000 + i)
        for name in order:
            values = inputs[name][i].tolist()
            if name in torcheasyrec.ID_FEATURES:
                candidate.features.ids.extend(values)
                candidate.features.id_counts.append(len(values))
            else:
                candidate.features.dense.extend(values)
    files = {
        "checkpoint": lambda path: torch.save(wrapper.state_dict(), path),
        "config": lambda path: _write_text(text, path),
    }
    name = "torcheasyrec_parallel" if parallel else "torcheasyrec_serial_bn"
    return name, "torcheasyrec", files, ["--max_ids", "2"], expected, request


class ImportCheck(unittest.TestCase):

    def test_imported_models_serve_the_frameworks_scores(self):
        cases = [_recap_case(True), _recap_case(False), _fuxictr_case(True), _fuxictr_case(False),
                 _torcheasyrec_case(True), _torcheasyrec_case(False)]
        with tempfile.TemporaryDirectory() as tmp:
            model_root = os.path.join(tmp, "models")
            for name, framework, files, extra_flags, _, _ in cases:
                flags = ["--from", framework] + extra_flags
                for flag, write in files.items():
                    path = os.path.join(tmp, f"{name}.{flag}")
                    write(path)
                    flags += [f"--{flag}", path]
                result = subprocess.run(
                    [sys.executable, os.path.join(ROOT, "tools", "import_model.py")] + flags +
                    ["--model_root", model_root, "--model_name", name],
                    capture_output=True, text=True, check=False)
                self.assertEqual(result.returncode, 0, result.stderr)
                print(f"\n{name}: {result.stdout.strip()}", end="")
            server = ServerProcess(ARGS.server, [f"--model_root={model_root}", "--host=127.0.0.1",
                                                 "--port=0", "--metrics_port=0", "--model_poll_interval=0"])
            channel = grpc.insecure_channel(f"127.0.0.1:{server.wait_serving()}")
            try:
                grpc.channel_ready_future(channel).result(timeout=60)
                rank = channel.unary_unary(
                    "/masknet.serving.v1.Ranker/Rank",
                    request_serializer=ranker_pb2.RankRequest.SerializeToString,
                    response_deserializer=ranker_pb2.RankResponse.FromString)
                for name, _, _, _, expected, request in cases:
                    request.model_name = name
                    response = rank(request, timeout=30)
                    self.assertEqual([c.id for c in response.candidates],
                                     [c.id for c in request.candidates])
                    served = np.array([list(c.scores) for c in response.candidates])
                    difference = np.abs(served - expected).max()
                    print(f"\n{name}: {len(response.tasks)} tasks x {CANDIDATES} candidates, "
                          f"max |served - framework| {difference:.2e}", end="")
                    np.testing.assert_allclose(served, expected, atol=TOLERANCE)
                    self.assertGreater(expected.std(), 0.01)  # scores not saturated
            finally:
                channel.close()
                code, log = server.stop()
            self.assertEqual(code, 0, log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
