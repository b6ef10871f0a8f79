#!/usr/bin/python3
"""Imports what the frameworks' own code produced, serves it, and compares.

Run by ctest as framework_import_check. Every fixture under
tests/fixtures/frameworks/<framework>/<case>/ (written by
tools/framework_fixtures/, see its README) holds a checkpoint and
configuration made by the framework's own code at a recorded commit, and
either requests with the framework's own scores for them or the text with
which the import must refuse it. Each is imported with the one command
(tools/import_model.py), every imported model is served from one
masknet_server, and the served scores must match the framework's within
1e-5. The same models are then served at --precision=int8 (on a CPU with
AVX512_VNNI): each fixture's largest |int8 - fp32| score difference must stay
within parity_test's int8 bound, and it is printed with the rank correlation
of its int8 and fp32 scores (Spearman over all of the fixture's candidates,
the lowest over the tasks; its requests hold 1-6 candidates each, too few for
a per-request figure).

    framework_import_check.py --server BIN [--framework NAME]
"""

import argparse
import concurrent.futures
import glob
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import grpc  # noqa: E402

from masknet_tools.protos import fixture_pb2  # noqa: E402
from masknet_tools.protos import ranker_pb2  # noqa: E402
from server_process import ServerProcess  # noqa: E402

ARGS = None
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "frameworks")
TOLERANCE = 1e-5
INT8_TOLERANCE = 0.15  # parity_test's kInt8Tolerance


def spearman(a, b):
    """Rank correlation of two 1-D arrays (average ranks for ties)."""
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for value in np.unique(x):  # ties share their mean rank
            r[x == value] = r[x == value].mean()
        return r
    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0
    return float(np.corrcoef(ra, rb)[0, 1])


def serve(model_root, *flags):
    """masknet_server on the imported models; (process, Rank callable, GetModelInfo callable, channel)."""
    server = ServerProcess(ARGS.server, [f"--model_root={model_root}", "--host=127.0.0.1", "--port=0",
                                         "--metrics_port=0", "--model_poll_interval=0", "--fail_on_model_error",
                                         *flags])
    channel = grpc.insecure_channel(f"127.0.0.1:{server.wait_serving()}")
    rank = channel.unary_unary("/masknet.serving.v1.Ranker/Rank",
                               request_serializer=ranker_pb2.RankRequest.SerializeToString,
                               response_deserializer=ranker_pb2.RankResponse.FromString)
    info = channel.unary_unary("/masknet.serving.v1.Ranker/GetModelInfo",
                               request_serializer=ranker_pb2.GetModelInfoRequest.SerializeToString,
                               response_deserializer=ranker_pb2.ModelInfo.FromString)
    return server, rank, info, channel


def cases(folder, name):
    """The fixture's requests, addressed to model `name`, and its expected responses."""
    with open(os.path.join(folder, "cases.binpb"), "rb") as f:
        parity = fixture_pb2.ParityFixture.FromString(f.read())
    for c in parity.cases:
        request = ranker_pb2.RankRequest()
        request.CopyFrom(c.request)
        request.model_name = name
        yield c, request


def scores(response):
    return np.array([list(x.scores) for x in response.candidates])


def fixtures():
    """(framework, case, folder, meta) of every fixture, sorted."""
    found = []
    for meta_path in sorted(glob.glob(os.path.join(FIXTURES, "*", "*", "meta.json"))):
        folder = os.path.dirname(meta_path)
        with open(meta_path) as f:
            meta = json.load(f)
        found.append((meta["framework"], os.path.basename(folder), folder, meta))
    return found


def import_model(folder, meta, model_root, model_name):
    """Runs tools/import_model.py on a fixture; the finished process."""
    args = [os.path.join(folder, a) if os.path.exists(os.path.join(folder, a)) else a
            for a in meta["import_args"]]
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "import_model.py"), "--from", meta["framework"], *args,
         "--model_root", model_root, "--model_name", model_name],
        capture_output=True, text=True, check=False, timeout=600)


class FrameworkImportCheck(unittest.TestCase):

    def test_every_frameworks_own_model_is_served_with_its_scores_or_refused_by_name(self):
        found = [f for f in fixtures() if ARGS.framework in (None, f[0])]
        if ARGS.framework is None:
            self.assertEqual({f[0] for f in found}, {"the-algorithm-ml", "fuxictr", "torcheasyrec"})
        self.assertTrue(found, "no fixtures")
        with tempfile.TemporaryDirectory() as tmp:
            model_root = os.path.join(tmp, "models")
            served = []
            names = [f"{framework.replace('-', '_')}_{case}" for framework, case, _, _ in found]
            # Two imports at a time: most of each is starting Python and torch.
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                results = list(pool.map(lambda f, n: import_model(f[2], f[3], model_root, n), found, names))
            for (framework, case, folder, meta), name, result in zip(found, names, results):
                with self.subTest(framework=framework, case=case):
                    if "refused_with" in meta:
                        self.assertNotEqual(result.returncode, 0, "imported, but must be refused")
                        self.assertIn(meta["refused_with"], result.stderr)
                        self.assertFalse(os.path.exists(os.path.join(model_root, name)))
                        print(f"\n{framework}/{case}: refused: {result.stderr.strip()}", end="")
                    else:
                        self.assertEqual(result.returncode, 0, result.stderr)
                        served.append((framework, case, folder, name))
            self.assertTrue(served)
            fp32 = {}  # name -> the fp32 scores of each of its requests
            server, rank, _, channel = serve(model_root)
            try:
                for framework, case, folder, name in served:
                    worst, fp32[name] = 0.0, []
                    for c, request in cases(folder, name):
                        with self.subTest(framework=framework, case=case, request=c.description):
                            response = rank(request, timeout=60)
                            self.assertEqual(list(response.tasks), list(c.expected.tasks))
                            self.assertEqual([x.id for x in response.candidates],
                                             [x.id for x in c.expected.candidates])
                            got, want = scores(response), scores(c.expected)
                            fp32[name].append(got)
                            worst = max(worst, float(np.abs(got - want).max()))
                            np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)
                    self.assertTrue(fp32[name], f"{framework}/{case}: no requests")
                    print(f"\n{framework}/{case}: {len(fp32[name])} requests, max |served - {framework}| "
                          f"{worst:.1e}", end="")
            finally:
                channel.close()
                code, log = server.stop()
            self.assertEqual(code, 0, log)
            self.check_int8(model_root, served, fp32)

    def check_int8(self, model_root, served, fp32):
        """The same models at --precision=int8 against their fp32 scores."""
        server, rank, info, channel = serve(model_root, "--precision=int8")
        try:
            precision = info(ranker_pb2.GetModelInfoRequest(model_name=served[0][3]), timeout=60).precision
            if precision != "int8":
                print(f"\nint8: this CPU serves {precision} instead (no AVX512_VNNI); not compared", end="")
                return
            for framework, case, folder, name in served:
                with self.subTest(framework=framework, case=case, precision="int8"):
                    int8 = [scores(rank(request, timeout=60)) for _, request in cases(folder, name)]
                    got, want = np.concatenate(int8), np.concatenate(fp32[name])
                    worst = float(np.abs(got - want).max())
                    rho = min(spearman(got[:, t], want[:, t]) for t in range(got.shape[1]))
                    print(f"\n{framework}/{case} int8: max |int8 - fp32| {worst:.3f}, Spearman with fp32 over "
                          f"{len(got)} candidates {rho:.3f}", end="")
                    self.assertLessEqual(worst, INT8_TOLERANCE)
        finally:
            channel.close()
            code, log = server.stop()
        self.assertEqual(code, 0, log)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--framework", help="only this framework's fixtures")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
