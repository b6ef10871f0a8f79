#!/usr/bin/python3
"""Overload and fault drills against a real masknet_server.

    tests/drills.py --server BIN --loadgen BIN [--quick] [--markdown FILE]

scripts/drills.sh builds and runs this (CI runs it with --quick, a few
minutes). One server with the default limits and a 1 s model poll serves a
private model root with two models: `criteo`, the paper-criteo-parallel
reference configuration with random weights (6.2 MFLOP a candidate: the
CPUs, not the bytes of the requests, bound it), and the bundled demo model
`home_timeline` (tiny: a 512-candidate call is cheaper to score than to
receive). It goes through every drill in turn:

  capacity     closed-loop 64-candidate calls to criteo: the baseline
  overload     open-loop calls to criteo at 3x that rate, with and without
               deadlines
  overload by bytes  512-candidate calls to home_timeline at 3x its capacity
  flood        as many 1-candidate calls at once as one client can start,
               over 32 connections, up to 250k outstanding
  vanishing    clients killed (SIGKILL) with hundreds of calls in flight
  cancel       thousands of queued calls cancelled by their client at once
  huge         calls at the candidate limit, over it, and over the byte limit
  slow         clients trickling large requests a few bytes at a time, and
               connections that open and send nothing, beside normal load
  model dir    the model root unreadable, then the model's directory
               removed and restored, under calls
  versions     (a server of its own) resident memory with three versions of
               one model loaded, against their weights and workspaces

After each drill the server must be alive, hold no call (masknet_calls_in_flight
returns to 0), serve at least half its baseline throughput again within a few
seconds, and its memory must have stayed bounded (peak resident memory, VmHWM)
and come back down (resident memory after the drill). Overload must be answered
with RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED, never anything else. The summary
table (also written as Markdown with --markdown) is what README's "Overload
and faults" section quotes. As root, the server runs as the user nobody, so
that a directory made unreadable is unreadable to it.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402

from masknet_tools import synthetic  # noqa: E402
from masknet_tools.protos import ranker_pb2  # noqa: E402
from server_process import ServerProcess, flag_default, free_port, server_help  # noqa: E402
from waiting import DEFAULT_TIMEOUT, NotYet, http_ok, wait_until  # noqa: E402

ARGS = None
MODEL = "criteo"         # compute-bound: the overload drills' model
DEMO = "home_timeline"   # tiny: requests cost more to receive than to score
MB = 1e6
# What a drill may leave resident beyond the baseline once it has passed (the
# server keeps up to --max_idle_heap_bytes, 64 MiB, of free heap, and every
# drill leaves some: connections' buffers, fragmentation), and how far above
# the baseline resident memory may peak during one.
SETTLED_SLACK_BYTES = 200e6
PEAK_BOUND_BYTES = 1.5e9


def log(message):
    print(f"[drills] {message}", flush=True)


class Server(ServerProcess):
    """masknet_server on a private copy of the demo model root."""

    def __init__(self, binary, work):
        self.work = work
        self.model_root = os.path.join(work, "models")
        shutil.copytree(os.path.join(ROOT, "models"), self.model_root)
        export_random_model("paper-criteo-parallel", self.model_root, MODEL, 1)
        self.binary = os.path.join(work, "masknet_server")
        shutil.copy(binary, self.binary)
        self.metrics_port = free_port()
        prefix = []
        if os.geteuid() == 0:  # root reads any file: run as nobody so that chmod means something
            for path in (work, self.model_root):
                os.chmod(path, 0o755)
            for dirpath, dirnames, filenames in os.walk(self.model_root):
                for name in dirnames:
                    os.chmod(os.path.join(dirpath, name), 0o755)
                for name in filenames:
                    os.chmod(os.path.join(dirpath, name), 0o644)
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        super().__init__(self.binary, [f"--model_root={self.model_root}", "--host=127.0.0.1", "--port=0",
                                       f"--metrics_port={self.metrics_port}", "--model_poll_interval=1s",
                                       "--log_format=json"], prefix=prefix)
        self.port = self.wait_serving()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        grpc.channel_ready_future(self.channel).result(timeout=DEFAULT_TIMEOUT)
        self.rank = self.channel.unary_unary("/masknet.serving.v1.Ranker/Rank",
                                             request_serializer=ranker_pb2.RankRequest.SerializeToString,
                                             response_deserializer=ranker_pb2.RankResponse.FromString)

    def status(self, field):
        """A field of /proc/<pid>/status in bytes (VmRSS, VmHWM)."""
        return proc_status(self.process.pid, field)

    def reset_peak(self):
        """Starts a new VmHWM window (writing 5 to clear_refs resets it)."""
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as f:
            f.write("5")

    def metric(self, name):
        """The sum of every series of a metric on /metrics."""
        text = http_ok(f"http://127.0.0.1:{self.metrics_port}/metrics")
        total, found = 0.0, False
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
                found = True
        if not found:
            raise KeyError(name)
        return total

    def stop(self):
        self.channel.close()
        return super().stop()


def export_random_model(config_name, root, name, version):
    """A reference configuration with PyTorch's default initialisation (seeded by `version`), exported;
    returns the bytes of its weights file."""
    import torch
    from masknet_tools import export, reference, reference_configs
    torch.manual_seed(version)
    model = reference.MaskNetReference(reference_configs.get(config_name))
    export.export_model(model.model_config, model.state_dict(), root, name, version=version)
    return os.path.getsize(os.path.join(root, name, str(version), "weights.safetensors"))


def random_request(config_name, model_name, candidates, seed=1):
    """A RankRequest of `candidates` candidates with random valid ids (and zero dense values)."""
    import random
    from masknet_tools import config, features, reference_configs
    from masknet_tools.protos import config_pb2
    model_config = reference_configs.get(config_name)
    rng = random.Random(seed)

    def values(scope):
        out = {}
        for field in config.scope_fields(model_config, scope):
            if field.WhichOneof("kind") == "dense":
                out[field.name] = [0.0] * field.dense.width
            else:
                out[field.name] = [rng.randrange(field.categorical.num_buckets)]
        return out
    message = ranker_pb2.RankRequest(model_name=model_name)
    message.context.CopyFrom(features.make_features(model_config, config_pb2.CONTEXT, values(config_pb2.CONTEXT)))
    for i in range(candidates):
        candidate = message.candidates.add(id=i)
        candidate.features.CopyFrom(features.make_features(model_config, config_pb2.CANDIDATE,
                                                           values(config_pb2.CANDIDATE)))
    return message


def loadgen(server, *args, model=MODEL, timeout=300):
    """masknet_loadgen against `server`; its JSON results."""
    out = os.path.join(server.work, "loadgen.json")
    subprocess.run([ARGS.loadgen, f"--target=127.0.0.1:{server.port}", f"--model={model}", f"--json={out}",
                    *args], check=True, capture_output=True, text=True, timeout=timeout)
    with open(out) as f:
        return json.load(f)


def proc_status(pid, field):
    """A field of /proc/<pid>/status in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def errors_text(result):
    """A loadgen run's refusals, e.g. "RESOURCE_EXHAUSTED 1,234"."""
    return ", ".join(f"{code} {e['count']:,}" for code, e in sorted(result["errors"].items())) or "no errors"


class Drills(unittest.TestCase):
    """The drills in order; each records a row of the summary."""

    rows = []

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="masknet-drills-")
        cls.server = Server(ARGS.server, cls.work)
        data = synthetic.generate(synthetic.SyntheticOptions(num_requests=40))
        cls.requests = [data.rank_request(r, model_name=DEMO) for r in range(40)]
        cls.seconds = 2 if ARGS.quick else 8
        # Warm up, then the baseline: closed loop, 64-candidate calls.
        loadgen(cls.server, "--concurrency=8", "--warmup=1s", "--duration=1s")
        cls.baseline = cls.capacity()
        cls.baseline_rss = cls.server.status("VmRSS")
        log(f"capacity {cls.baseline:,.0f} calls/s of 64 candidates; resident {cls.baseline_rss / MB:.0f} MB")
        cls.rows.append(("capacity", f"{cls.baseline:,.0f} calls/s of 64 candidates to {MODEL}, closed loop", "-",
                         f"{cls.baseline_rss / MB:.0f} MB", "-", "-"))

    @classmethod
    def tearDownClass(cls):
        code, server_log = cls.server.stop()
        shutil.rmtree(cls.work, ignore_errors=True)
        if code != 0:
            raise AssertionError(f"the server exited with {code} after the drills:\n{server_log[-3000:]}")

    @classmethod
    def capacity(cls):
        result = loadgen(cls.server, "--concurrency=8", "--warmup=0.5s", f"--duration={max(2, cls.seconds // 2)}s")
        return result["calls"]["ok_per_s"]

    def start(self):
        self.assertTrue(self.server.alive())
        self.server.reset_peak()

    def finish(self, name, what, outcome):
        """The checks every drill ends with; records its row."""
        self.assertTrue(self.server.alive(), f"{name}: the server died")
        peak = self.server.status("VmHWM")
        self.assertLess(peak - self.baseline_rss, PEAK_BOUND_BYTES, f"{name}: resident memory peaked at {peak / MB:.0f} MB")
        wait_until(lambda: self.server.metric("masknet_calls_in_flight") == 0,
                   what=f"{name}: the server to hold no call (masknet_calls_in_flight 0)")
        # Throughput back to normal, on the first try or within a few seconds.
        recovered_at, after = None, 0.0
        for _ in range(3):
            after = self.capacity()
            if after >= 0.5 * self.baseline:
                recovered_at = time.time()
                break
        self.assertIsNotNone(recovered_at, f"{name}: throughput after the drill {after:,.0f} calls/s, "
                                           f"baseline {self.baseline:,.0f}")
        def settled_rss():  # the releaser runs every second
            rss = self.server.status("VmRSS")
            if rss - self.baseline_rss > SETTLED_SLACK_BYTES:
                raise NotYet(f"resident memory {rss / MB:.0f} MB, baseline {self.baseline_rss / MB:.0f} MB")
            return rss
        settled = wait_until(settled_rss, 30, f"{name}: resident memory to come back down")
        self.rows.append((name, what, outcome, f"{peak / MB:.0f} MB", f"{settled / MB:.0f} MB",
                          f"{after / self.baseline:.0%}"))
        log(f"{name}: {outcome}; peak {peak / MB:.0f} MB, after {settled / MB:.0f} MB (heap: "
            f"{self.server.metric('masknet_heap_in_use_bytes') / MB:.0f} MB in use, "
            f"{self.server.metric('masknet_heap_free_bytes') / MB:.0f} MB free), "
            f"throughput after {after / self.baseline:.0%} of baseline")

    def assert_overload_codes(self, result, name):
        unexpected = set(result["errors"]) - {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
        self.assertFalse(unexpected, f"{name}: answers other than overload: {result['errors']}")

    def test_1_overload(self):
        self.start()
        rate = 3 * self.baseline
        # Without deadlines only a full queue refuses, and the backlog grows by
        # at least the baseline rate each second (open-loop batches run larger
        # than the baseline's, up to twice as fast): run until it is twice the
        # queue, however fast or loaded the machine.
        queue_calls = int(flag_default(server_help(ARGS.server), "max_queued_candidates")) / 64
        outcomes = []
        for deadline, seconds in (("100ms", self.seconds), ("0s", max(self.seconds, 2 * queue_calls / self.baseline))):
            result = loadgen(self.server, f"--rate={rate:.0f}", f"--deadline={deadline}", "--warmup=0s",
                             f"--duration={seconds:.1f}s", "--max_outstanding=20000")
            self.assert_overload_codes(result, "overload")
            refused = sum(e["count"] for e in result["errors"].values())
            # Overload is refused, and what is admitted is still served.
            self.assertGreater(refused, 0, f"overload: nothing refused at 3x capacity: {result}")
            self.assertGreater(result["calls"]["ok_per_s"], 0.4 * self.baseline,
                               f"overload: goodput collapsed: {result['calls']}, {errors_text(result)}")
            refusals = result["errors"].get("RESOURCE_EXHAUSTED", {}).get("latency_ms", {})
            outcomes.append(f"deadline {deadline}: {result['calls']['ok_per_s'] / self.baseline:.0%} of capacity "
                            f"served, {errors_text(result)}; refused in p99 {refusals.get('p99', 0):.0f} ms")
        self.finish("overload", f"{rate:,.0f} calls/s of 64 candidates to {MODEL} (3x capacity), open loop",
                    "; ".join(outcomes))

    def test_1b_overload_by_bytes(self):
        # Not a bound on goodput: this measures what happens when receiving
        # the calls, not scoring them, saturates the CPUs.
        self.start()
        capacity = loadgen(self.server, "--candidates=512", "--concurrency=8", "--warmup=0.5s", "--duration=2s",
                           model=DEMO)["calls"]["ok_per_s"]
        rate = 3 * capacity
        result = loadgen(self.server, "--candidates=512", f"--rate={rate:.0f}", "--deadline=100ms", "--warmup=0s",
                         f"--duration={self.seconds}s", model=DEMO)
        self.assert_overload_codes(result, "overload by bytes")
        mb_per_s = rate * 512 * 112 / 1e6  # ~112 bytes a home_timeline candidate
        self.finish("overload by bytes", f"{rate:,.0f} calls/s of 512 candidates to {DEMO} (3x its capacity of "
                    f"{capacity:,.0f}; ~{mb_per_s:.0f} MB/s of requests), 100 ms deadline",
                    f"{result['calls']['ok_per_s'] / capacity:.0%} of capacity served, {errors_text(result)}")

    def test_2_flood(self):
        self.start()
        result = loadgen(self.server, "--candidates=1", "--rate=400000", "--arrivals=uniform", "--channels=32",
                         "--threads=2", "--warmup=0s", f"--duration={self.seconds}s", "--max_outstanding=250000",
                         model=DEMO)
        self.assert_overload_codes(result, "flood")
        self.finish("flood", f"1-candidate calls to {DEMO} started as fast as one client can, over 32 connections, "
                    "up to 250k outstanding",
                    f"{result['calls']['sent']:,} sent, {result['calls']['ok']:,} ok, " + errors_text(result))

    def test_3_vanishing_clients(self):
        self.start()
        rounds = 3 if ARGS.quick else 10
        for _ in range(rounds):
            clients = [subprocess.Popen([ARGS.loadgen, f"--target=127.0.0.1:{self.server.port}", f"--model={MODEL}",
                                         "--concurrency=300", "--warmup=0s", "--duration=60s"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
            time.sleep(1.0)
            for c in clients:
                c.kill()
            for c in clients:
                c.wait()
        self.finish("vanishing clients", f"{rounds} rounds of 3 clients with 300 calls each in flight, SIGKILLed",
                    "their calls cancelled; nothing held")

    def test_4_cancel_en_masse(self):
        self.start()
        n = 2000 if ARGS.quick else 10000
        # 2,000 calls of 64 candidates are 3-4 s of scoring; the queue takes
        # 1,024 of them (--max_queued_candidates) and refuses the rest.
        message = random_request("paper-criteo-parallel", MODEL, 64)
        futures = [self.server.rank.future(message, timeout=60) for _ in range(n)]
        for f in futures:
            f.cancel()
        codes = {}
        for f in futures:
            try:
                f.result()
                code = "OK"
            except grpc.FutureCancelledError:
                code = "CANCELLED"
            except grpc.RpcError as e:
                code = e.code().name
            codes[code] = codes.get(code, 0) + 1
        self.assertLessEqual(set(codes), {"OK", "CANCELLED", "RESOURCE_EXHAUSTED"}, codes)
        self.finish("cancel en masse", f"{n:,} calls of 64 candidates to {MODEL} started, then all cancelled",
                    ", ".join(f"{c} {k:,}" for c, k in sorted(codes.items())))

    def test_5_huge_calls(self):
        self.start()
        base = self.requests[0]
        big = ranker_pb2.RankRequest(model_name=DEMO)
        big.context.CopyFrom(base.context)
        while len(big.candidates) < 8192:
            big.candidates.extend(base.candidates[:8192 - len(big.candidates)])
        too_many = ranker_pb2.RankRequest()
        too_many.CopyFrom(big)
        too_many.candidates.append(base.candidates[0])
        too_big = ranker_pb2.RankRequest(model_name="x" * (65 << 20))
        cases = [("8,192 candidates (the limit)", big, "OK"), ("8,193 candidates", too_many, "INVALID_ARGUMENT"),
                 ("a 65 MiB message", too_big, "RESOURCE_EXHAUSTED")]

        def call(message):
            try:
                self.server.rank(message, timeout=120)
                return "OK"
            except grpc.RpcError as e:
                return e.code().name
        outcomes = []
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for label, message, expected in cases:
                got = list(pool.map(call, [message] * 8))
                self.assertEqual(got, [expected] * 8, label)
                outcomes.append(f"{label}: {expected}")
        self.finish("huge calls", "8 at once of each kind", "; ".join(outcomes))

    def test_6_slow_clients(self):
        self.start()
        # A proxy per slow client forwards its bytes to the server 64 at a
        # time, every millisecond (at most 64 kB/s); the request is ~200 kB.
        message = ranker_pb2.RankRequest(model_name=DEMO)
        message.context.CopyFrom(self.requests[0].context)
        while len(message.candidates) < 2000:
            message.candidates.extend(self.requests[0].candidates)
        size_kb = message.ByteSize() / 1e3
        stop = threading.Event()
        proxies = [TrickleProxy(self.server.port, stop) for _ in range(10)]
        idle = []
        for _ in range(200):  # connections that never speak
            s = socket.create_connection(("127.0.0.1", self.server.port))
            idle.append(s)
        codes = {}
        lock = threading.Lock()

        def slow_call(proxy):
            with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
                rank = channel.unary_unary("/masknet.serving.v1.Ranker/Rank",
                                           request_serializer=ranker_pb2.RankRequest.SerializeToString,
                                           response_deserializer=ranker_pb2.RankResponse.FromString)
                try:
                    rank(message, timeout=60)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
            with lock:
                codes[code] = codes.get(code, 0) + 1
        threads = [threading.Thread(target=slow_call, args=(p,)) for p in proxies]
        for t in threads:
            t.start()
        time.sleep(0.5)
        during = loadgen(self.server, "--concurrency=8", "--warmup=0s", f"--duration={self.seconds}s")
        for t in threads:
            t.join()
        stop.set()
        for s in idle:
            s.close()
        self.assertEqual(during["errors"], {}, "normal calls failed beside the slow clients")
        self.assertGreater(during["calls"]["ok_per_s"], 0.5 * self.baseline,
                           f"slow clients starved the others: {during['calls']}")
        self.assertLessEqual(set(codes), {"OK", "DEADLINE_EXCEEDED"}, codes)
        self.finish("slow clients", f"10 clients trickling {size_kb:.0f} kB requests 64 bytes a millisecond, "
                    "200 silent connections, beside closed-loop load",
                    f"others served {during['calls']['ok_per_s'] / self.baseline:.0%} of baseline; slow calls: "
                    + ", ".join(f"{c} {k}" for c, k in sorted(codes.items())))

    def test_7_model_directory(self):
        self.start()
        root = self.server.model_root
        model_dir = os.path.join(root, DEMO)
        aside = os.path.join(self.work, "aside")
        results = {}
        stop = threading.Event()

        def load():  # a steady trickle of calls that counts what they got
            while not stop.is_set():
                try:
                    self.server.rank(self.requests[1], timeout=10)
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                results[code] = results.get(code, 0) + 1
                time.sleep(0.01)
        worker = threading.Thread(target=load)
        worker.start()
        try:
            # Unreadable root, then unreadable model directory: what is loaded keeps serving.
            for path in (root, model_dir):
                os.chmod(path, 0)
                time.sleep(2.5)  # two polls
                before = results.get("OK", 0)
                wait_until(lambda: results.get("OK", 0) > before, what=f"{path} unreadable: a call to succeed")
                os.chmod(path, 0o755)
            self.assertEqual(set(results), {"OK"}, results)
            # Removed: the model is unloaded (NOT_FOUND) until it is back.
            os.rename(model_dir, aside)
            wait_until(lambda: results.get("NOT_FOUND", 0) > 0, what="the removal to be seen (NOT_FOUND)")
            os.rename(aside, model_dir)
            seen = results.get("OK", 0)
            wait_until(lambda: results.get("OK", 0) > seen + 10, what="the model to come back (10 calls OK)")
        finally:
            stop.set()
            worker.join()
        self.assertLessEqual(set(results), {"OK", "NOT_FOUND"}, results)
        self.finish("model directory", "root unreadable, model directory unreadable (2.5 s each), model directory "
                    "removed and restored, under calls",
                    "unreadable: loaded version kept serving; removed: NOT_FOUND, then served again after a poll ("
                    + ", ".join(f"{c} {k:,}" for c, k in sorted(results.items())) + ")")


class VersionsMemory(unittest.TestCase):
    """Resident memory with several versions loaded: their weights, the workers' workspaces and a constant."""

    def test_versions_memory(self):
        config_name = "paper-criteo-parallel" if ARGS.quick else "twitter-recap"
        work = tempfile.mkdtemp(prefix="masknet-versions-")
        root = os.path.join(work, "models")
        try:
            weight_bytes = 0
            for version in (1, 2, 3):
                weight_bytes += export_random_model(config_name, root, "m", version)
            server = ServerProcess(ARGS.server, [f"--model_root={root}", "--host=127.0.0.1", "--port=0",
                                                 "--metrics_port=0", "--model_poll_interval=0", "--keep_versions=3",
                                                 "--num_workers=2"])
            try:
                server.wait_serving()  # every version loaded
                resident = proc_status(server.process.pid, "VmRSS")
                peak = proc_status(server.process.pid, "VmHWM")
            finally:
                _, server_log = server.stop()
            workspaces = [int(m) << 20 for m in re.findall(r"(\d+) MiB workspace per worker", server_log)]
            self.assertEqual(len(workspaces), 3, server_log)
            workspace = 2 * max(workspaces)  # two workers, each with the largest version's
            rest = resident - weight_bytes - workspace
            log(f"versions: 3 x {config_name}: weights {weight_bytes / MB:.0f} MB, 2 workers' workspaces at most "
                f"{workspace / MB:.0f} MB; resident {resident / MB:.0f} MB (peak while loading {peak / MB:.0f} MB), "
                f"the rest {rest / MB:.0f} MB")
            self.assertLess(rest, 150e6, "resident memory beyond the weights and workspaces")
            Drills.rows.append(("versions", f"3 versions of {config_name} loaded, 2 workers",
                                f"weights {weight_bytes / MB:.0f} MB + workspaces ≤ {workspace / MB:.0f} MB + "
                                f"{rest / MB:.0f} MB", f"{peak / MB:.0f} MB (loading)", f"{resident / MB:.0f} MB",
                                "-"))
        finally:
            shutil.rmtree(work, ignore_errors=True)


class TrickleProxy:
    """A TCP proxy to the server that forwards the client's bytes 64 at a time, every millisecond."""

    def __init__(self, target_port, stop):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.target_port = target_port
        self.stop = stop
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        client, _ = self.listener.accept()
        self.listener.close()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))

        def up():
            try:
                while not self.stop.is_set():
                    data = client.recv(64)
                    if not data:
                        break
                    upstream.sendall(data)
                    time.sleep(0.001)
            except OSError:
                pass
            try:
                upstream.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def down():
            try:
                while True:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    client.sendall(data)
            except OSError:
                pass
        threads = [threading.Thread(target=up, daemon=True), threading.Thread(target=down, daemon=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        upstream.close()


def summary_markdown(rows):
    lines = ["| drill | load | outcome | peak resident | resident after | throughput after |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--quick", action="store_true", help="short drills (CI)")
    parser.add_argument("--markdown", help="also write the summary table here")
    ARGS, rest = parser.parse_known_args()
    program = unittest.main(argv=[sys.argv[0]] + rest, verbosity=2, exit=False)
    print()
    print(summary_markdown(Drills.rows))
    if ARGS.markdown:
        with open(ARGS.markdown, "w") as f:
            f.write(summary_markdown(Drills.rows) + "\n")
    sys.exit(0 if program.result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
