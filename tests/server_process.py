"""masknet_server as a child process, for the Python tests (deploy_check,
bf16_accuracy)."""

import signal
import socket
import subprocess
import tempfile


def free_port():
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """masknet_server with `args`, its output in a temporary file."""

    def __init__(self, binary, args):
        self.log = tempfile.NamedTemporaryFile("w+")
        self.process = subprocess.Popen([binary] + list(args), stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        """SIGTERM, then (exit code, everything it printed)."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.log.seek(0)
        log = self.log.read()
        self.log.close()
        return code, log
