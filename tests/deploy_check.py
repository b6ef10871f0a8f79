#!/usr/bin/python3
"""Checks deploy/ against a real masknet_server (run by ctest as deploy_check).

The Kubernetes manifests, the compose file, the Prometheus configuration and
the Grafana dashboard cannot run here (no cluster, no registry), so this
checks what can be checked:
  - every flag they pass is one masknet_server accepts: a server is started
    with the Deployment's own arguments;
  - every port and HTTP path they name is one the server serves, and the gRPC
    probe names the Ranker service of the API;
  - Debian's Prometheus, with the scrape job of deploy/prometheus, scrapes the
    server, and promtool accepts the whole configuration;
  - every metric the dashboard queries is one the server exports, and every
    query is valid PromQL (Prometheus evaluates it). The server serves the
    model root with a canary beside the stable version and every call
    shadowed, so that the shadow-scoring series exist.

    deploy_check.py --server BIN --client BIN --model_root DIR
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

import yaml

from server_process import ServerProcess, flag_default, free_port, server_help
from waiting import NotYet, http_get, http_json, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
ARGS = None


def load_yaml(*path):
    with open(os.path.join(DEPLOY, *path)) as f:
        return list(yaml.safe_load_all(f))


def deployment():
    (doc,) = load_yaml("kubernetes", "deployment.yaml")
    return doc


def container():
    (c,) = deployment()["spec"]["template"]["spec"]["containers"]
    return c


def flag_names(args):
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def rollout_root(model_root):
    """A copy of `model_root` (its version directories linked) in which the first model's newest version is
    published a second time as the next version, labelled canary beside it as stable, with every call shadowed."""
    root = tempfile.mkdtemp()
    for i, model in enumerate(sorted(m for m in os.listdir(model_root) if not m.startswith("."))):
        os.makedirs(os.path.join(root, model))
        versions = sorted(int(v) for v in os.listdir(os.path.join(model_root, model)) if v.isdigit())
        for v in versions:
            os.symlink(os.path.abspath(os.path.join(model_root, model, str(v))), os.path.join(root, model, str(v)))
        if i == 0:
            stable = versions[-1]
            os.symlink(os.path.abspath(os.path.join(model_root, model, str(stable))),
                       os.path.join(root, model, str(stable + 1)))
            with open(os.path.join(root, model, "rollout.pbtxt"), "w") as f:
                f.write(f'labels {{ name: "stable" version: {stable} }}\n'
                        f'labels {{ name: "canary" version: {stable + 1} }}\nshadow_fraction: 1\n')
    return root


class Server(ServerProcess):
    """masknet_server with the Deployment's arguments, on free ports."""

    def __init__(self, args, model_root):
        self.http_port = free_port()
        args = [a for a in args if not a.startswith(("--model_root", "--port", "--metrics_port", "--host"))]
        super().__init__(ARGS.server, [f"--model_root={model_root}", "--host=127.0.0.1",
                                       "--port=0", f"--metrics_port={self.http_port}"] + args)
        self.grpc_port = self.wait_serving()
        self.wait_ready()

    def url(self, path):
        return f"http://127.0.0.1:{self.http_port}{path}"


class DeployTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.help = server_help(ARGS.server)
        cls.root = rollout_root(ARGS.model_root)
        # The shadow worker runs under SCHED_IDLE: with other tests keeping the cores busy it may wait seconds
        # for one, and the one shadow call must not be dropped for that.
        cls.server = Server(container()["args"] + ["--shadow_max_delay=1m"], cls.root)
        # One Rank call, so that per-call series exist, and its shadow.
        subprocess.run([ARGS.client, f"--target=127.0.0.1:{cls.server.grpc_port}", "--candidates=2"],
                       check=True, capture_output=True)

        def shadowed():
            status, metrics = http_get(cls.server.url("/metrics"))
            if status != 200 or not re.search(r'^masknet_shadow_calls_total\{[^}]*outcome="scored"[^}]*\} 1$',
                                              metrics, re.M):
                raise NotYet("the call's shadow is not scored yet")
            return metrics

        cls.metrics = wait_until(shadowed, what="the shadow call to be scored", process=cls.server.process)

    @classmethod
    def tearDownClass(cls):
        code, log = cls.server.stop()
        shutil.rmtree(cls.root, ignore_errors=True)
        assert code == 0, log

    def test_every_flag_of_the_manifests_and_compose_is_accepted(self):
        # The server started above with the Deployment's arguments.
        (compose,) = load_yaml("compose.yaml")
        flags = flag_names(container()["args"]) + flag_names(compose["services"]["masknet"]["command"])
        self.assertTrue(flags)
        for flag in flags:
            self.assertIn(flag + " ", self.help, f"{flag} is not a masknet_server flag")

    def test_ports_and_probes_are_what_the_server_serves(self):
        c = container()
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(str(ports["grpc"]), flag_default(self.help, "port"))
        self.assertEqual(str(ports["http"]), flag_default(self.help, "metrics_port"))
        with open(os.path.join(ROOT, "proto", "masknet", "serving", "v1", "ranker.proto")) as f:
            proto = f.read()
        service = re.search(r"^package ([\w.]+);", proto, re.M).group(1) + "." + \
            re.search(r"^service (\w+)", proto, re.M).group(1)
        self.assertEqual(c["readinessProbe"]["grpc"]["service"], service)
        self.assertEqual(c["readinessProbe"]["grpc"]["port"], ports["grpc"])
        for probe in ("startupProbe", "livenessProbe"):
            path = c[probe]["httpGet"]["path"]
            self.assertEqual(http_get(self.server.url(path))[0], 200, f"{probe} {path}")
        annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(annotations["prometheus.io/scrape"], "true")
        self.assertEqual(annotations["prometheus.io/port"], str(ports["http"]))
        (scrape,) = load_yaml("kubernetes", "prometheus-scrape.yaml")
        kept = [r for r in scrape["scrape_configs"][0]["relabel_configs"] if r.get("action") == "keep"]
        self.assertEqual(kept[0]["source_labels"], ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"])
        self.assertEqual(http_get(self.server.url(annotations["prometheus.io/path"]))[0], 200)
        (svc,) = load_yaml("kubernetes", "service.yaml")
        self.assertEqual(svc["spec"].get("clusterIP"), "None")
        self.assertEqual({p["targetPort"] for p in svc["spec"]["ports"]}, set(ports))
        (compose,) = load_yaml("compose.yaml")
        published = {int(p.split(":")[1]) for p in compose["services"]["masknet"]["ports"]}
        self.assertEqual(published, set(ports.values()))
        # Requests equal limits, and the workers match the CPUs.
        res = c["resources"]
        self.assertEqual(res["requests"], res["limits"])
        workers = [a for a in c["args"] if a.startswith("--num_workers=")]
        self.assertEqual(workers, [f"--num_workers={res['limits']['cpu']}"])

    def test_prometheus_scrapes_the_server_with_the_deploy_configuration(self):
        promtool = subprocess.run(["promtool", "check", "config", os.path.join(DEPLOY, "prometheus", "prometheus.yml")],
                                  capture_output=True, text=True)
        self.assertEqual(promtool.returncode, 0, promtool.stdout + promtool.stderr)
        (config,) = load_yaml("prometheus", "prometheus.yml")
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "masknet"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{self.server.http_port}"]}]
        config["scrape_configs"] = [job]  # the Kubernetes job needs a cluster
        config["global"]["scrape_interval"] = "1s"
        work = tempfile.mkdtemp()
        try:
            with open(os.path.join(work, "prometheus.yml"), "w") as f:
                yaml.safe_dump(config, f)
            port = free_port()
            with open(os.path.join(work, "prometheus.log"), "w") as log:
                prometheus = subprocess.Popen(
                    [ARGS.prometheus, f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/data",
                     f"--web.listen-address=127.0.0.1:{port}"],
                    stdout=log, stderr=subprocess.STDOUT)
            try:
                def query(expr):
                    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
                    return http_json(url)

                def scraped():
                    result = query("masknet_ready")["data"]["result"]
                    if not result or result[0]["value"][1] != "1":
                        raise NotYet(f"masknet_ready: {result}")
                    return True

                # A first start on a new machine answers 503 (and worse) for a while.
                wait_until(scraped, what="Prometheus to scrape masknet_ready", process=prometheus)
                # Every dashboard query is valid PromQL against the real series.
                for expr in dashboard_queries():
                    answer = query(expr.replace("$model", ".*"))
                    self.assertEqual(answer["status"], "success", f"{expr}: {answer}")
            except AssertionError:
                with open(os.path.join(work, "prometheus.log")) as log:
                    print("Prometheus's log ends with:\n" + log.read()[-3000:], file=sys.stderr)
                raise
            finally:
                prometheus.terminate()
                prometheus.wait(timeout=60)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def test_every_metric_the_dashboard_queries_is_exported(self):
        exported = set()
        for line in self.metrics.splitlines():
            m = re.match(r"# TYPE (\S+) (\w+)", line)
            if m:
                exported.add(m.group(1))
                if m.group(2) == "histogram":
                    exported.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
        queried = set()
        for expr in dashboard_queries():
            queried.update(re.findall(r"\b((?:masknet|process)_[a-z_]+)", expr))
        self.assertTrue(queried)
        self.assertEqual(queried - exported, set(), "queried but not exported")


def dashboard_queries():
    with open(os.path.join(DEPLOY, "grafana", "dashboards", "masknet.json")) as f:
        dashboard = json.load(f)
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--model_root", required=True)
    parser.add_argument("--prometheus", default="prometheus", help="the Prometheus binary (default: from PATH)")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
