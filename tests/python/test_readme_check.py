"""tests/readme_check.py: it finds each way README's flag table and Layout can drift from what they describe."""

import os
import subprocess
import tempfile
import unittest

from tests import readme_check as check

HELP = {"port": "50051", "host": '"0.0.0.0"', "model_root": '""', "max_request_bytes": "67108864",
        "drain_delay": "0", "shutdown_grace_period": "25s", "tls_reload_interval": "1m", "precision": "fp32",
        "num_workers": "0", "admit_by_deadline": "true", "deadline_headroom": "0.25"}
README = {"port": "50051", "host": "`0.0.0.0`", "model_root": "(required)", "max_request_bytes": "64 MiB",
          "drain_delay": "0s", "shutdown_grace_period": "25s", "tls_reload_interval": "1m", "precision": "fp32",
          "num_workers": "the CPUs this process may use", "admit_by_deadline": "true", "deadline_headroom": "0.25"}


class DisagreementsTest(unittest.TestCase):
    def test_the_same_flags_and_defaults_agree(self):
        self.assertEqual(check.disagreements(HELP, README), [])

    def test_each_drift_is_named(self):
        for change, expected in [
            (lambda r: r.pop("drain_delay"), "--drain_delay is in --help but not in README's table"),
            (lambda r: r.update(gone="1"), "--gone is in README's table but not in --help"),
            (lambda r: r.update(max_request_bytes="4 MiB"), "--max_request_bytes: README says default 4 MiB"),
            (lambda r: r.update(shutdown_grace_period="30s"), "--shutdown_grace_period: README says default 30s"),
            (lambda r: r.update(tls_reload_interval="60m"), "--tls_reload_interval: README says default 60m"),
            (lambda r: r.update(precision="bf16"), "--precision: README says default bf16"),
            (lambda r: r.update(admit_by_deadline="false"), "--admit_by_deadline: README says default false"),
        ]:
            readme = dict(README)
            change(readme)
            problems = check.disagreements(HELP, readme)
            self.assertEqual(len(problems), 1, problems)
            self.assertIn(expected, problems[0])

    def test_a_default_in_words_stands_for_an_empty_or_zero_one_only(self):
        helped = dict(HELP, num_workers="4")
        self.assertIn("--num_workers: README says 'the CPUs this process may use', --help shows default 4",
                      check.disagreements(helped, README))

    def test_sizes_and_durations_are_compared_as_values(self):
        self.assertEqual(check.normalized("64 MiB"), 64 << 20)
        self.assertEqual(check.normalized("1m"), check.normalized("60s"))
        self.assertEqual(check.normalized("0s"), check.normalized("0"))
        self.assertEqual(check.normalized("1h30m"), 5400)


class LayoutTest(unittest.TestCase):
    LAYOUT = """## Layout

| `server/` | the server |
| `docs/` | docs |

| `server/server.{h,cc}` | the root |
| `server/main.cc` | main |

Data flows: `server/server` → out.
"""

    def checkout(self, files):
        root = tempfile.mkdtemp()
        for f in files:
            os.makedirs(os.path.join(root, os.path.dirname(f)), exist_ok=True)
            open(os.path.join(root, f), "w").close()
        subprocess.run(["git", "init", "-q", root], check=True)
        return root

    def test_a_layout_that_names_everything_agrees(self):
        root = self.checkout(["server/server.h", "server/server.cc", "server/main.cc", "server/CMakeLists.txt",
                              "docs/x.md", "README.md"])
        self.assertEqual(check.layout_problems(self.LAYOUT, root), [])

    def test_a_missing_folder_or_file_and_a_named_file_that_is_gone_are_named(self):
        root = self.checkout(["server/server.h", "server/server.cc", "server/tls.cc", "docs/x.md", "deploy/k.yaml"])
        self.assertEqual(check.layout_problems(self.LAYOUT, root), [
            "the top-level folder deploy/ is not in README's Layout",
            "server/tls.cc is not in README's Layout",
            "README's Layout names server/main.cc, which is not in the checkout"])


if __name__ == "__main__":
    unittest.main()
