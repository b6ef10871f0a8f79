"""masknet_server as a child process, for the Python tests, the drills and the
benchmarks."""

import re
import signal
import socket
import subprocess
import tempfile

from waiting import DEFAULT_TIMEOUT, NotYet, wait_until


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
    file. Give it --port=0 to have the system pick the gRPC port: wait_serving() reads it from the log."""

    def __init__(self, binary, args, prefix=(), env=None):
        self.log = tempfile.NamedTemporaryFile("w+")
        self.process = subprocess.Popen(list(prefix) + [binary] + list(args), stdout=self.log,
                                        stderr=subprocess.STDOUT, env=env)

    def output(self):
        """Everything it printed so far."""
        with open(self.log.name) as f:
            return f.read()

    def wait_serving(self, timeout=DEFAULT_TIMEOUT):
        """Waits for its "serving on <host>:<port>" line (the gRPC port is listening and the models the
        repository found at start-up are loaded); returns the port. Fails at once if it exits first,
        and with the end of its output if the line does not come in `timeout` seconds (and kills it
        then)."""
        def serving_port():
            text = self.output()
            m = re.search(r"serving on \S*:(\d+)", text)
            if not m:
                raise NotYet("its output so far ends with:\n" + text[-3000:])
            return int(m.group(1))
        try:
            self.port = wait_until(serving_port, timeout, "masknet_server to log 'serving on'", process=self.process)
        except AssertionError:
            self.process.kill()
            self.process.wait()
            raise
        return self.port

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        """SIGTERM, then (exit code, everything it printed)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        log = self.output()
        self.log.close()
        return code, log
