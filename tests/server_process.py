"""masknet_server as a child process, for the Python tests, the drills and the
benchmarks."""

import json
import os
import re
import signal
import socket
import subprocess
import tempfile

from waiting import DEFAULT_TIMEOUT, NotYet, http_ok, wait_until


def free_port():
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_help(binary):
    """What `binary --help` prints."""
    return subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60).stdout


def flag_default(help_text, flag):
    """The default --help gives for --`flag`, as text; None if it lists no such flag or no default."""
    for entry in re.split(r"\n\s*--", help_text):
        if entry.startswith(flag + " ("):
            m = re.search(r"\);\s+default: (\S+);", entry)
            return m.group(1) if m else None
    return None


class ServerProcess:
    """masknet_server with `args` (run under `prefix`, e.g. setpriv, if given), its output in a temporary
    file. Give it --port=0 to have the system pick the gRPC port: the server writes the ports it bound to
    its --ports_file, which wait_serving() reads (no log line is read as an API)."""

    def __init__(self, binary, args, prefix=(), env=None):
        self.log = tempfile.NamedTemporaryFile("w+")
        self.ports_dir = tempfile.TemporaryDirectory()
        os.chmod(self.ports_dir.name, 0o777)  # a server run as another user (prefix) writes there too
        self.ports_file = os.path.join(self.ports_dir.name, "ports.json")
        self.port = self.http_port = None
        self.process = subprocess.Popen(list(prefix) + [binary] + list(args) + [f"--ports_file={self.ports_file}"],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self):
        """Everything it printed so far."""
        with open(self.log.name) as f:
            return f.read()

    def wait_serving(self, timeout=DEFAULT_TIMEOUT):
        """Waits until it serves: the gRPC port listens and the models the repository found at start-up are
        loaded (then it writes its ports file). Returns the gRPC port; sets .port and .http_port (0: off).
        Fails at once if it exits first, and with the end of its output if it does not serve in `timeout`
        seconds (and kills it then)."""
        def ports():
            try:
                with open(self.ports_file) as f:
                    return json.load(f)
            except FileNotFoundError:
                raise NotYet("no ports file yet; its output so far ends with:\n" + self.output()[-3000:]) from None
        try:
            bound = wait_until(ports, timeout, "masknet_server to write its ports file", process=self.process)
        except AssertionError:
            self.process.kill()
            self.process.wait()
            raise
        self.port, self.http_port = bound["grpc"], bound["http"]
        return self.port

    def wait_ready(self, timeout=DEFAULT_TIMEOUT):
        """Waits until its /readyz answers 200 "ready" (a model version is served); after wait_serving, with
        the HTTP port on."""
        assert self.http_port, "wait_ready needs wait_serving first, and the HTTP port on"
        url = f"http://127.0.0.1:{self.http_port}/readyz"

        def ready():
            body = http_ok(url)
            if body.strip() != "ready":
                raise NotYet(f"/readyz said {body[:200]!r}")
            return True
        wait_until(ready, timeout, "masknet_server's /readyz to say ready", process=self.process)

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        """SIGTERM, then (exit code, everything it printed)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        log = self.output()
        self.log.close()
        self.ports_dir.cleanup()
        return code, log
