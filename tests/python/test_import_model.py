"""Tests of tools/import_model.py and masknet_tools.twitter_import on the
heavy-ranker stand-in (tests/python/twitter_recap.py)."""

import copy
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch
import yaml

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools import export
from masknet_tools import features
from masknet_tools import reference
from masknet_tools import twitter_import
from masknet_tools.protos import config_pb2
from tests.python import torcheasyrec
from tests.python import twitter_recap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
IMPORT_MODEL = os.path.join(ROOT, "tools", "import_model.py")


def _requests(model_config, inputs):
    """(context, candidates) Features of the stand-in's inputs."""
    n = len(inputs["continuous"])
    context = features.make_features(
        model_config, config_pb2.CONTEXT,
        {k: v for k, v in twitter_recap.scope_values(inputs, 0).items()
         if k.startswith("user")})
    candidates = [
        features.make_features(
            model_config, config_pb2.CANDIDATE, {
                k: v for k, v in twitter_recap.scope_values(inputs,
                                                            i).items()
                if not k.startswith("user")
            }) for i in range(n)
    ]
    return context, candidates


class RecapImportTest(unittest.TestCase):

    def setUp(self):
        self.recap, self.widths, self.rates = twitter_recap.example()
        self.wrapper = twitter_recap.build(self.recap, self.widths, self.rates)
        self.state = checkpoints.strip_wrapper_prefix(
            self.wrapper.state_dict())

    def _import(self, state=None, recap=None):
        return twitter_import.import_recap(
            self.state if state is None else state,
            self.recap if recap is None else recap)

    def _assert_same_scores(self, wrapper, recap, widths, seed):
        model_config, weights, _ = twitter_import.import_recap(
            checkpoints.strip_wrapper_prefix(wrapper.state_dict()), recap)
        config.validate(model_config)
        export.check_weights(model_config, weights)
        ours = reference.MaskNetReference(model_config).double()
        ours.load_state_dict(weights, strict=True)
        inputs = twitter_recap.random_inputs(widths, 9, seed)
        with torch.no_grad():
            expected = wrapper.model(**inputs)
            got = ours(*_requests(model_config, inputs))
        np.testing.assert_allclose(got, expected.double(), atol=1e-5)
        self.assertGreater(float(expected.std()), 0.01)  # not saturated

    def test_parallel_heavy_ranker_scores_as_the_stand_in(self):
        self._assert_same_scores(self.wrapper, self.recap, self.widths, 1)

    def test_serial_without_batch_norm_scores_as_the_stand_in(self):
        recap, widths, rates = twitter_recap.example(parallel=False)
        wrapper = twitter_recap.build(recap, widths, rates, seed=3)
        self._assert_same_scores(wrapper, recap, widths, 2)

    def test_config_says_what_twitter_does(self):
        model_config, _, notes = self._import()
        self.assertEqual([(f.name, f.scope) for f in model_config.fields],
                         [("continuous", config_pb2.CANDIDATE),
                          ("binary", config_pb2.CANDIDATE),
                          ("user_embedding", config_pb2.CONTEXT),
                          ("user_eng_embedding", config_pb2.CONTEXT),
                          ("author_embedding", config_pb2.CANDIDATE)])
        continuous = model_config.fields[0].dense
        self.assertEqual(
            (continuous.non_finite, continuous.transform, continuous.clamp_min,
             continuous.clamp_max),
            (config_pb2.REPLACE_WITH_ZERO, config_pb2.SIGNED_LOG1P, -5, 5))
        self.assertEqual([list(n.fields) for n in model_config.input_norms],
                         [["continuous", "binary"], ["user_embedding"],
                          ["user_eng_embedding"], ["author_embedding"]])
        self.assertEqual([t.name for t in model_config.tasks], [
            "recap__engagement__is_favorited", "recap__engagement__is_replied",
            "recap__engagement__is_report_tweet_clicked"
        ])
        self.assertAlmostEqual(model_config.tasks[0].negative_sampling_rate,
                               0.01 / 0.8387, places=6)
        self.assertFalse(model_config.tasks[1].HasField(
            "negative_sampling_rate"))
        self.assertAlmostEqual(model_config.tasks[2].negative_sampling_rate,
                               2.5, places=6)
        self.assertEqual(
            model_config.metadata["task.recap__engagement__is_favorited"],
            "recap.engagement.is_favorited")
        self.assertEqual(len(notes), 1)
        self.assertIn("eps 0", notes[0])

    def test_missing_tensor_is_named(self):
        for name in ("_user_embedding_layer_norm.bias",
                     "_calibrators.recap__engagement__is_replied.ratio"):
            state = dict(self.state)
            del state[name]
            with self.assertRaisesRegex(checkpoints.CheckpointError,
                                        "missing tensor '" + name):
                self._import(state)

    def test_unexpected_tensor_is_named(self):
        state = dict(self.state, **{"_position_debias.weight": torch.ones(3)})
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "unexpected tensors.*_position_debias"):
            self._import(state)

    def test_misshaped_tensor_is_named_by_its_checkpoint_name(self):
        state = dict(self.state)
        state["_preprocessor.layer_norm.layer.weight"] = torch.ones(5)
        model_config, weights, _ = self._import(state)
        with self.assertRaises(export.ExportError) as e:
            export.check_weights(model_config, weights)
        message = checkpoints.with_checkpoint_names(str(e.exception), state,
                                                    weights)
        self.assertIn(
            "'input_norms.features.weight' (checkpoint: "
            "'_preprocessor.layer_norm.layer.weight') has shape [5], "
            "expected [43]", message)

    def test_options_that_cannot_be_served_are_refused_by_name(self):
        cases = [
            (["multi_task_type"], "share_partial", "share_partial"),
            (["multi_task_type"], "share_none", "share_none"),
            (["large_embeddings"], {"tables": []}, "large_embeddings"),
            (["tasks", "recap.engagement.is_replied", "mlp_config",
              "final_layer_activation"], True, "final_layer_activation"),
            (["backbone"], {"mlp_config": {"layer_sizes": [4]}},
             "not a MaskNet.*mlp_config"),
            (["featurization_config", "double_norm_log_config",
              "layer_norm_config", "axis"], 1, "axis -1"),
            (["backbone", "mask_net_config", "gate"], 1, "option 'gate'"),
        ]
        for path, value, pattern in cases:
            recap = copy.deepcopy(self.recap)
            section = recap["model"]
            for key in path[:-1]:
                section = section[key]
            section[path[-1]] = value
            with self.subTest(path=path):
                with self.assertRaisesRegex(checkpoints.CheckpointError,
                                            pattern):
                    self._import(recap=recap)

    def test_config_and_checkpoint_that_disagree_are_refused(self):
        recap = copy.deepcopy(self.recap)
        del recap["model"]["tasks"]["recap.engagement.is_favorited"][
            "affine_map"]
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "affine_map and the checkpoint disagree"):
            self._import(recap=recap)
        recap = copy.deepcopy(self.recap)
        del recap["model"]["featurization_config"]["double_norm_log_config"][
            "batch_norm_config"]
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "batch_norm_config and the checkpoint"):
            self._import(recap=recap)

    def test_other_frameworks_checkpoints_are_recognised(self):
        fuxictr = {
            "embedding_layer.embedding_layer.embedding_layers.C1.weight":
                torch.ones(3, 2),
            "mask_net.mask_blocks.0.mask_layer.0.weight": torch.ones(2, 2)
        }
        torcheasyrec = {"mask_net_layer.ln_emb.weight": torch.ones(2)}
        for state, name in ((fuxictr, "fuxictr"), (torcheasyrec,
                                                   "torcheasyrec")):
            with self.assertRaisesRegex(checkpoints.CheckpointError,
                                        f"is a {name} model.*--from {name}"):
                checkpoints.check_framework(state, "the-algorithm-ml")
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "not a the-algorithm-ml MaskNet"):
            checkpoints.check_framework({"fc.weight": torch.ones(1)},
                                        "the-algorithm-ml")


class ImportModelCommandTest(unittest.TestCase):

    def _run(self, *args):
        return subprocess.run([sys.executable, IMPORT_MODEL] + list(args),
                              capture_output=True,
                              text=True,
                              check=False)

    def test_one_command_writes_a_version_the_server_loads(self):
        recap, widths, rates = twitter_recap.example()
        wrapper = twitter_recap.build(recap, widths, rates)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "recap.pt")
            torch.save(wrapper.state_dict(), checkpoint)
            yaml_path = os.path.join(tmp, "local_prod.yaml")
            with open(yaml_path, "w") as f:
                yaml.safe_dump(recap, f, sort_keys=False)
            result = self._run("--from", "the-algorithm-ml", "--checkpoint",
                               checkpoint, "--config", yaml_path,
                               "--model_root", os.path.join(tmp, "models"),
                               "--model_name", "recap")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("eps 0", result.stderr)
            version = os.path.join(tmp, "models", "recap", "1")
            model_config, _ = export.load_model(version)
            self.assertEqual(len(model_config.tasks), 3)

            # A directory (a distributed checkpoint) is explained.
            result = self._run("--from", "the-algorithm-ml", "--checkpoint",
                               tmp, "--config", yaml_path, "--model_root",
                               os.path.join(tmp, "models"), "--model_name",
                               "other")
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("is a directory", result.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "models",
                                                         "other")))

    def test_unreadable_inputs_are_named(self):
        recap, widths, rates = twitter_recap.example()
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "recap.pt")
            torch.save(
                twitter_recap.build(recap, widths, rates).state_dict(),
                checkpoint)
            not_torch = os.path.join(tmp, "notes.txt")
            with open(not_torch, "w") as f:
                f.write("not a checkpoint")
            bad_yaml = os.path.join(tmp, "bad.yaml")
            with open(bad_yaml, "w") as f:
                f.write("model: [unclosed")
            not_a_dict = os.path.join(tmp, "tensor.pt")
            torch.save(torch.ones(3), not_a_dict)
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
                    result = self._run("--from", "the-algorithm-ml",
                                       "--checkpoint", checkpoint_path,
                                       "--config", config_path, "--model_root",
                                       os.path.join(tmp, "models"),
                                       "--model_name", "m")
                    self.assertNotEqual(result.returncode, 0)
                    self.assertIn(message, result.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "models", "m")))

    def test_runs_from_a_read_only_checkout_without_tests_and_writes_nothing_there(self):
        recap, widths, rates = twitter_recap.example()
        with tempfile.TemporaryDirectory() as tmp:
            # The tool's own files only (no tests/), unwritable; as root,
            # the tool runs as nobody so that this means something.
            checkout = os.path.join(tmp, "checkout")
            for part in ("tools", "proto"):
                shutil.copytree(os.path.join(ROOT, part),
                                os.path.join(checkout, part),
                                ignore=shutil.ignore_patterns("__pycache__"))
            work = os.path.join(tmp, "work")
            os.makedirs(work)
            checkpoint = os.path.join(work, "recap.pt")
            torch.save(twitter_recap.build(recap, widths, rates).state_dict(),
                       checkpoint)
            yaml_path = os.path.join(work, "recap.yaml")
            with open(yaml_path, "w") as f:
                yaml.safe_dump(recap, f, sort_keys=False)
            for path, mode in ((tmp, 0o755), (work, 0o777),
                               (checkpoint, 0o644), (yaml_path, 0o644)):
                os.chmod(path, mode)
            for dirpath, dirnames, filenames in os.walk(checkout):
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
                help_run = subprocess.run(prefix + [sys.executable, tool, "--help"],
                                          capture_output=True, text=True, check=False)
                self.assertEqual(help_run.returncode, 0, help_run.stderr)
                self.assertIn("--checkpoint", help_run.stdout)
                result = subprocess.run(
                    prefix + [sys.executable, tool, "--from", "the-algorithm-ml",
                              "--checkpoint", checkpoint, "--config", yaml_path,
                              "--model_root", os.path.join(work, "models"),
                              "--model_name", "recap"],
                    capture_output=True, text=True, check=False)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertTrue(os.path.exists(os.path.join(
                    work, "models", "recap", "1", "weights.safetensors")))
                self.assertEqual(listing(), before)
            finally:
                for dirpath, _, _ in os.walk(checkout):
                    os.chmod(dirpath, 0o755)

    def test_a_misshaped_tensor_is_named_by_its_checkpoint_name(self):
        text = torcheasyrec.pipeline_config()
        state = torcheasyrec.build(text, 0).state_dict()
        state["model.mask_net_layer.ln_emb.weight"] = torch.ones(5)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "masknet.pt")
            torch.save(state, checkpoint)
            config_path = os.path.join(tmp, "pipeline.config")
            with open(config_path, "w") as f:
                f.write(text)
            result = self._run("--from", "torcheasyrec", "--checkpoint",
                               checkpoint, "--config", config_path,
                               "--model_root", os.path.join(tmp, "models"),
                               "--model_name", "m")
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(
                "'masknet.input_norm.weight' (checkpoint: "
                "'mask_net_layer.ln_emb.weight') has shape [5], expected [22]",
                result.stderr)


if __name__ == "__main__":
    unittest.main()
