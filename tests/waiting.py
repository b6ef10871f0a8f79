"""Waiting for something to happen: the one wait of every Python test, drill
and benchmark.

A service that has been started is not yet a service that answers. Started
for the first time on a loaded machine with cold caches, it may refuse
connections, reset them, close them without a reply, or answer 503 or a body
that is not what its API promises (Prometheus serves "Service Unavailable"
text while it starts) -- for seconds. A wait takes all of that as "not yet"
until its deadline, and when the deadline passes it names what it waited for
and what it last saw, so that a failure in CI can be read without a rerun.

    wait_until(lambda: http_json(url)["data"]["result"], 120, "Prometheus to scrape the server")

Scripts wait with it too:

    /usr/bin/python3 tests/waiting.py URL [--body TEXT] [--timeout SECONDS] [--what TEXT]

waits until a GET of URL answers 200 (with TEXT as its body, surrounding
whitespace aside, if given); exits 0 then, or 1 with the timeout's message.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

# How long a wait for something that should happen promptly may take before
# it fails: generous, because waits return as soon as the thing happens and a
# first start on a loaded machine is slow.
DEFAULT_TIMEOUT = 120.0


class WaitTimeout(AssertionError):
    """The deadline of a wait passed (an AssertionError: a test that times out fails, it does not crash)."""


class NotYet(Exception):
    """Raised by a probe to say that it has not succeeded yet, and what it saw instead."""


def wait_until(probe, timeout=DEFAULT_TIMEOUT, what="a condition", *, interval=0.2, process=None):
    """Calls `probe()` until it returns a true value, and returns that value.

    Until then, a probe that returns a false value or raises any Exception
    (a refused or reset connection, an HTTP error, a body that is not JSON, a
    missing key) has not succeeded yet; the next try comes `interval` seconds
    later. If `process` (a subprocess.Popen) exits first, fails at once with its
    exit code. When `timeout` seconds pass, raises WaitTimeout:
    "timed out after 120 s waiting for <what>; last saw: <the last exception or value>".
    """
    deadline = time.monotonic() + timeout
    last = "nothing (never tried)"
    while True:
        try:
            value = probe()
            if value:
                return value
            last = repr(value)
        except Exception as e:  # every failure of a probe is "not yet"
            last = f"{type(e).__name__}: {e}" if not isinstance(e, NotYet) else str(e)
        if process is not None and process.poll() is not None:
            raise WaitTimeout(f"{what}: the process exited with {process.returncode} first; last saw: {last}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}; last saw: {last}")
        time.sleep(interval)


def http_get(url, timeout=10):
    """(status, body text) of a GET; raises OSError when there is no HTTP answer at all."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def http_ok(url, timeout=10):
    """The body of a GET that answered 200; raises NotYet naming the status and body otherwise."""
    status, body = http_get(url, timeout)
    if status != 200:
        raise NotYet(f"HTTP {status} from {url}: {body[:200]!r}")
    return body


def http_json(url, timeout=10):
    """The JSON body of a GET that answered 200; raises NotYet for another status or a body that is not JSON."""
    body = http_ok(url, timeout)
    try:
        return json.loads(body)
    except ValueError:
        raise NotYet(f"a body that is not JSON from {url}: {body[:200]!r}") from None


def main():
    parser = argparse.ArgumentParser(description="Waits until a GET of URL answers 200.")
    parser.add_argument("url")
    parser.add_argument("--body", help="the body it must answer (surrounding whitespace aside)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds (default %(default)g)")
    parser.add_argument("--what", help="what is waited for, for the message (default: URL)")
    args = parser.parse_args()

    def answered():
        body = http_ok(args.url)
        if args.body is not None and body.strip() != args.body:
            raise NotYet(f"the body {body[:200]!r}")
        return True
    try:
        wait_until(answered, args.timeout, args.what or args.url)
    except WaitTimeout as e:
        sys.exit(f"waiting: {e}")


if __name__ == "__main__":
    main()
