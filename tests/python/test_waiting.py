"""tests/waiting.py: the one wait of the Python tests, drills and benchmarks."""

import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import unittest

from tests import slow_prometheus
from tests import waiting


class FlakyThenJsonServer:
    """Answers its first connections with each of slow_prometheus's faults in turn (503 text, a 200 that is not
    JSON, no reply, a reset), then serves {"ok": true}."""

    def __init__(self, bad_answers):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/api"
        self.bad_answers = bad_answers
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        for i in range(self.bad_answers):
            connection, _ = self.listener.accept()
            slow_prometheus.answer_badly(connection, i % len(slow_prometheus.FAULTS), timeout=60)
        listener = self.listener

        class Good(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Good, bind_and_activate=False)
        server.socket.close()
        server.socket = listener
        server.serve_forever(poll_interval=0.05)


class WaitUntilTest(unittest.TestCase):
    def test_returns_the_first_true_value_and_takes_exceptions_and_false_values_as_not_yet(self):
        answers = iter([ConnectionResetError("reset"), ValueError("not JSON"), None, [], {"result": 1}])

        def probe():
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer
        self.assertEqual(waiting.wait_until(probe, 10, "a result", interval=0.001), {"result": 1})

    def test_a_timeout_names_what_was_awaited_and_what_was_last_seen(self):
        def probe():
            raise waiting.NotYet("masknet_ready is 0")
        with self.assertRaises(waiting.WaitTimeout) as caught:
            waiting.wait_until(probe, 0.2, "Prometheus to scrape", interval=0.01)
        self.assertIn("timed out after 0.2 s waiting for Prometheus to scrape; last saw: masknet_ready is 0",
                      str(caught.exception))

    def test_a_process_that_exits_fails_the_wait_at_once(self):
        process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
        started = time.monotonic()
        with self.assertRaises(waiting.WaitTimeout) as caught:
            waiting.wait_until(lambda: False, 60, "the server", process=process)
        self.assertLess(time.monotonic() - started, 30)
        self.assertIn("the server: the process exited with 3 first", str(caught.exception))

    def test_http_json_outlasts_a_service_that_starts_badly(self):
        server = FlakyThenJsonServer(bad_answers=2 * len(slow_prometheus.FAULTS))
        seen = []

        def probe():
            try:
                return waiting.http_json(server.url, timeout=5)
            except Exception as e:
                seen.append(type(e).__name__)
                raise
        self.assertEqual(waiting.wait_until(probe, 60, "the JSON API", interval=0.01), {"ok": True})
        # Every kind of bad answer was met and survived: 503 and a body that is
        # not JSON (NotYet), no reply and a reset (OSError and its kin).
        self.assertEqual(len(seen), 2 * len(slow_prometheus.FAULTS))
        self.assertEqual(seen.count("NotYet"), 4, seen)

    def test_http_json_names_the_status_and_body_it_got(self):
        server = FlakyThenJsonServer(bad_answers=1)  # 503 "Service Unavailable"
        with self.assertRaises(waiting.NotYet) as caught:
            waiting.http_json(server.url)
        self.assertIn("HTTP 503", str(caught.exception))
        self.assertIn("Service Unavailable", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
