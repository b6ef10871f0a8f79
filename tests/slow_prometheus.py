#!/usr/bin/python3
"""A stand-in for `prometheus` that starts as slowly and as badly as the real
one can on a new, loaded machine, then becomes the real one.

    slow_prometheus.py [prometheus's own arguments]

For its first SLOW_PROMETHEUS_SECONDS (default 4) it answers every
connection on its --web.listen-address with the next of: 503 "Service
Unavailable" text (what Prometheus serves while it starts), a 200 whose body
is not JSON, a connection closed without a reply, and a connection reset.
Then it execs the real prometheus (the first on PATH that is not this file)
with the same arguments, in the same process. deploy_check runs with it
(ctest: deploy_check_slow_prometheus) to show that its waits survive a slow
start.
"""

import os
import shutil
import socket
import struct
import sys
import time

FAULTS = [
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
    b"Connection: close\r\n\r\nService Unavailable\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nStarting\n",
    None,      # closed without a reply
    "reset",   # RST instead of a reply
]


def answer_badly(connection, i, timeout=1.0):
    """Reads a request from `connection` (waiting up to `timeout` seconds for it) and answers it with fault
    `i` of FAULTS; closes it."""
    with connection:
        connection.settimeout(timeout)
        try:
            connection.recv(65536)
            if FAULTS[i] == "reset":
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif FAULTS[i] is not None:
                connection.sendall(FAULTS[i])
        except OSError:
            pass


def listen_address(args):
    for a in args:
        if a.startswith("--web.listen-address="):
            host, port = a.split("=", 1)[1].rsplit(":", 1)
            return host or "0.0.0.0", int(port)
    return "0.0.0.0", 9090


def real_prometheus():
    me = os.path.realpath(__file__)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(d, "prometheus")
        if os.access(candidate, os.X_OK) and os.path.realpath(candidate) != me:
            return candidate
    return shutil.which("prometheus")


def main():
    args = sys.argv[1:]
    real = real_prometheus()
    if real is None:
        sys.exit("slow_prometheus: no prometheus on PATH")
    seconds = float(os.environ.get("SLOW_PROMETHEUS_SECONDS", "4"))
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(listen_address(args))
    listener.listen(64)
    end = time.monotonic() + seconds
    served = [0] * len(FAULTS)
    while (left := end - time.monotonic()) > 0:
        listener.settimeout(left)
        try:
            connection, _ = listener.accept()
        except socket.timeout:
            break
        i = sum(served) % len(FAULTS)
        served[i] += 1
        answer_badly(connection, i)
    listener.close()
    print(f"slow_prometheus: {seconds:g} s of faults ({served[0]} x 503, {served[1]} x not JSON, "
          f"{served[2]} x no reply, {served[3]} x reset); now {real}", file=sys.stderr, flush=True)
    os.execv(real, [real] + args)


if __name__ == "__main__":
    main()
