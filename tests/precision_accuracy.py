#!/usr/bin/python3
"""bf16 and int8 against fp32 where ranking decides: the demo model's held-out AUC.

Run by ctest as precision_accuracy. Starts masknet_server on the bundled
demo model (models/home_timeline) at --precision=fp32, =bf16 and =int8, sends
each every held-out request of the demo's synthetic data (regenerated from
its seed), and checks that:
  - fp32 reproduces the held-out AUCs recorded in the model's metadata;
  - bf16's and int8's AUCs are within 0.001 of fp32's for every task.
Prints the AUCs, the largest score difference from fp32, and the rank
agreement with fp32 inside each request (Spearman; the smallest and the
median over requests).

    precision_accuracy.py --server BIN
"""

import argparse
import os
import sys
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import grpc  # noqa: E402

from masknet_tools import metrics  # noqa: E402
from masknet_tools import synthetic  # noqa: E402
from masknet_tools import train  # noqa: E402
from masknet_tools.protos import ranker_pb2  # noqa: E402
from server_process import ServerProcess  # noqa: E402

ARGS = None
MODEL_ROOT = os.path.join(ROOT, "models")
AUC_TOLERANCE = 0.001
LOWER = ("bf16", "int8")  # the precisions checked against fp32


def spearman(a, b):
    """Rank correlation of two score vectors (ties get their mean rank)."""
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for value in np.unique(x):  # ties: mean rank
            tied = x == value
            if tied.sum() > 1:
                r[tied] = r[tied].mean()
        return r
    ra, rb = ranks(np.asarray(a)), ranks(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return 1.0 if (ra.std() == 0) == (rb.std() == 0) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


class Server(ServerProcess):
    """masknet_server on the demo model at `precision`, with gRPC stubs."""

    def __init__(self, precision):
        super().__init__(ARGS.server, [f"--model_root={MODEL_ROOT}", "--host=127.0.0.1", "--port=0",
                                       "--metrics_port=0", "--model_poll_interval=0", f"--precision={precision}"])
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.wait_serving()}")
        grpc.channel_ready_future(self.channel).result(timeout=60)
        self.rank = self.channel.unary_unary(
            "/masknet.serving.v1.Ranker/Rank",
            request_serializer=ranker_pb2.RankRequest.SerializeToString,
            response_deserializer=ranker_pb2.RankResponse.FromString)
        self.info = self.channel.unary_unary(
            "/masknet.serving.v1.Ranker/GetModelInfo",
            request_serializer=ranker_pb2.GetModelInfoRequest.SerializeToString,
            response_deserializer=ranker_pb2.ModelInfo.FromString)

    def stop(self):
        self.channel.close()
        return super().stop()


class PrecisionAccuracyTest(unittest.TestCase):
    def test_bf16_and_int8_keep_the_demo_models_heldout_auc(self):
        options = train.TrainingOptions()
        data = synthetic.generate(options.data)
        _, heldout_rows = train.heldout_split(options, data)
        requests = sorted(set(data.request_of[heldout_rows].tolist()))
        servers = {p: Server(p) for p in ("fp32",) + LOWER}
        try:
            info = {p: s.info(ranker_pb2.GetModelInfoRequest(model_name="home_timeline"), timeout=30)
                    for p, s in servers.items()}
            scores = {p: {} for p in servers}
            in_request = []  # per request: its candidates' ids
            for request in requests:
                message = data.rank_request(request, model_name="home_timeline")
                in_request.append([c.id for c in message.candidates])
                for p, s in servers.items():
                    response = s.rank(message, timeout=30)
                    for c in response.candidates:
                        scores[p][c.id] = list(c.scores)
        finally:
            for p, s in servers.items():
                code, log = s.stop()
                self.assertEqual(code, 0, log)
        rows = np.array(sorted(scores["fp32"]))
        np.testing.assert_array_equal(rows, np.sort(heldout_rows))
        as_array = {p: np.array([scores[p][r] for r in rows]) for p in servers}
        print(f"\nheld-out: {len(requests)} requests, {len(rows)} candidates; precision served: "
              + ", ".join(info[p].precision for p in servers))
        for p in LOWER:
            print(f"  max |{p} - fp32| score {np.abs(as_array[p] - as_array['fp32']).max():.2e}")
        for t, task in enumerate(synthetic.TASKS):
            labels = data.labels[task][rows]
            auc = {p: metrics.roc_auc(labels, as_array[p][:, t]) for p in servers}
            recorded = float(info["fp32"].metadata[f"heldout_auc_{task}"])
            print(f"  {task}: AUC fp32 {auc['fp32']:.5f} (metadata {recorded:.4f})"
                  + "".join(f", {p} {auc[p]:.5f} ({auc[p] - auc['fp32']:+.5f})" for p in LOWER))
            for p in LOWER:
                rho = [spearman([scores["fp32"][c][t] for c in ids], [scores[p][c][t] for c in ids])
                       for ids in in_request if len(ids) > 1]
                print(f"    {p}: Spearman with fp32 within a request: min {min(rho):.4f}, "
                      f"median {np.median(rho):.4f}")
            self.assertAlmostEqual(auc["fp32"], recorded, delta=0.00051)
            for p in LOWER:
                self.assertLessEqual(abs(auc[p] - auc["fp32"]), AUC_TOLERANCE, p)
        for p in LOWER:
            if info[p].precision != p:
                print(f"  this CPU cannot run {p}: that server ran {info[p].precision}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
