"""tools/import_model.py, the one command, on models the frameworks' own code
built (tests/fixtures/frameworks/)."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import torch

from masknet_tools import checkpoints
from masknet_tools import export
from tests.python.framework_fixtures import Fixture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
IMPORT_MODEL = os.path.join(ROOT, "tools", "import_model.py")


def _run(*args, prefix=(), tool=IMPORT_MODEL):
    return subprocess.run(list(prefix) + [sys.executable, tool] + list(args),
                          capture_output=True, text=True, check=False)


def _fixture_args(fixture):
    """--from and the fixture's import arguments, its files as paths."""
    args = ["--from", fixture.framework]
    for flag, value in fixture.args.items():
        args += [flag, fixture.path(flag) if flag in (
            "--checkpoint", "--config", "--feature_map") else value]
    return args


class ImportModelCommandTest(unittest.TestCase):

    def test_one_command_writes_a_version_the_server_loads(self):
        for framework, case in (("the-algorithm-ml", "parallel_prodlike"),
                                ("fuxictr", "serial_two_blocks_layernorms"),
                                ("torcheasyrec", "no_top_mlp")):
            fixture = Fixture(framework, case)
            with self.subTest(framework=framework), \
                    tempfile.TemporaryDirectory() as tmp:
                result = _run(*_fixture_args(fixture), "--model_root",
                              os.path.join(tmp, "models"), "--model_name", "m")
                self.assertEqual(result.returncode, 0, result.stderr)
                model_config, _ = export.load_model(
                    os.path.join(tmp, "models", "m", "1"))
                self.assertEqual(model_config.metadata["imported_from"],
                                 framework)

    def test_a_directory_checkpoint_is_explained(self):
        fixture = Fixture("the-algorithm-ml", "parallel_prodlike")
        with tempfile.TemporaryDirectory() as tmp:
            result = _run("--from", "the-algorithm-ml", "--checkpoint", tmp,
                          "--config", fixture.path("--config"), "--model_root",
                          os.path.join(tmp, "models"), "--model_name", "m")
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("is a directory", result.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "models", "m")))

    def test_unreadable_inputs_are_named(self):
        fixture = Fixture("the-algorithm-ml", "parallel_prodlike")
        with tempfile.TemporaryDirectory() as tmp:
            not_torch = os.path.join(tmp, "notes.txt")
            with open(not_torch, "w") as f:
                f.write("not a checkpoint")
            bad_yaml = os.path.join(tmp, "bad.yaml")
            with open(bad_yaml, "w") as f:
                f.write("model: [unclosed")
            not_a_dict = os.path.join(tmp, "tensor.pt")
            torch.save(torch.ones(3), not_a_dict)
            checkpoint = fixture.path("--checkpoint")
            cases = [
                (not_torch, bad_yaml, "notes.txt: not a torch.save file"),
                (not_a_dict, bad_yaml, "expected a state_dict"),
                (os.path.join(tmp, "missing.pt"), bad_yaml, "no such file"),
                (checkpoint, bad_yaml, "bad.yaml: not YAML"),
                (checkpoint, os.path.join(tmp, "missing.yaml"),
                 "missing.yaml: No such file"),
            ]
            for checkpoint_path, config_path, message in cases:
                with self.subTest(message=message):
                    result = _run("--from", "the-algorithm-ml", "--checkpoint",
                                  checkpoint_path, "--config", config_path,
                                  "--model_root", os.path.join(tmp, "models"),
                                  "--model_name", "m")
                    self.assertNotEqual(result.returncode, 0)
                    self.assertIn(message, result.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "models", "m")))

    def test_a_misshaped_tensor_is_named_by_its_checkpoint_name(self):
        fixture = Fixture("torcheasyrec", "no_top_mlp")
        state = fixture.state()
        state["model.mask_net_layer.ln_emb.weight"] = torch.ones(5)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "masknet.pt")
            torch.save(state, checkpoint)
            result = _run("--from", "torcheasyrec", "--checkpoint", checkpoint,
                          "--config", fixture.path("--config"), "--model_root",
                          os.path.join(tmp, "models"), "--model_name", "m")
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("'model.mask_net_layer.ln_emb.weight' has shape [5], "
                          "expected [9]", result.stderr)

    def test_another_frameworks_checkpoint_is_named_for_what_it_is(self):
        for framework, case, other in (
                ("fuxictr", "serial_two_blocks_layernorms", "the-algorithm-ml"),
                ("torcheasyrec", "no_top_mlp", "the-algorithm-ml"),
                ("the-algorithm-ml", "serial_no_mlp", "torcheasyrec")):
            with self.subTest(framework=framework):
                state = checkpoints.strip_wrapper_prefix(
                    Fixture(framework, case).state())
                with self.assertRaisesRegex(
                        checkpoints.CheckpointError,
                        f"is a {framework} model.*--from {framework}"):
                    checkpoints.check_framework(state, other)
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "not a the-algorithm-ml MaskNet"):
            checkpoints.check_framework({"fc.weight": torch.ones(1)},
                                        "the-algorithm-ml")

    def test_runs_from_a_read_only_checkout_without_tests_and_writes_nothing_there(self):
        fixture = Fixture("the-algorithm-ml", "serial_masked_nobn")
        with tempfile.TemporaryDirectory() as tmp:
            # The tool's own files only (no tests/), unwritable; as root,
            # the tool runs as nobody so that this means something.
            checkout = os.path.join(tmp, "checkout")
            for part in ("tools", "proto"):
                shutil.copytree(os.path.join(ROOT, part),
                                os.path.join(checkout, part),
                                ignore=shutil.ignore_patterns("__pycache__"))
            work = os.path.join(tmp, "work")
            shutil.copytree(fixture.folder, work)
            os.chmod(tmp, 0o755)
            for dirpath, _, filenames in os.walk(work):
                os.chmod(dirpath, 0o777)
                for name in filenames:
                    os.chmod(os.path.join(dirpath, name), 0o644)
            for dirpath, _, filenames in os.walk(checkout):
                os.chmod(dirpath, 0o555)
                for name in filenames:
                    os.chmod(os.path.join(dirpath, name), 0o444)
            prefix = []
            if os.geteuid() == 0:
                prefix = ["setpriv", "--reuid=65534", "--regid=65534",
                          "--clear-groups"]

            def listing():
                return sorted((d, tuple(sorted(f)), os.stat(d).st_mtime_ns)
                              for d, _, f in os.walk(checkout))
            before = listing()
            tool = os.path.join(checkout, "tools", "import_model.py")
            try:
                help_run = _run("--help", prefix=prefix, tool=tool)
                self.assertEqual(help_run.returncode, 0, help_run.stderr)
                self.assertIn("--checkpoint", help_run.stdout)
                result = _run("--from", "the-algorithm-ml", "--checkpoint",
                              os.path.join(work, "checkpoint.pt"), "--config",
                              os.path.join(work, "config.yaml"), "--model_root",
                              os.path.join(work, "models"), "--model_name",
                              "recap", prefix=prefix, tool=tool)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertTrue(os.path.exists(os.path.join(
                    work, "models", "recap", "1", "weights.safetensors")))
                self.assertEqual(listing(), before)
            finally:
                for dirpath, _, _ in os.walk(checkout):
                    os.chmod(dirpath, 0o755)


if __name__ == "__main__":
    unittest.main()
