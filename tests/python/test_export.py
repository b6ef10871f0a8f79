"""Tests of masknet_tools.export: strict checks, layout, round trips."""

import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch

from masknet_tools import config
from masknet_tools import export
from masknet_tools import fixtures
from masknet_tools import reference
from masknet_tools import reference_configs
from masknet_tools import safetensors_io


def _model(name="variant-parallel-easyrec"):
    model = reference.MaskNetReference(reference_configs.get(name))
    fixtures.randomize_weights(model, np.random.default_rng(0))
    return model


class ExportTest(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.root = self.directory.name

    def tearDown(self):
        self.directory.cleanup()

    def _export(self, weights, **options):
        return export.export_model(
            reference_configs.get("variant-parallel-easyrec"), weights,
            self.root, "m", **options)

    def assertRejected(self, weights, message):
        with self.assertRaisesRegex(export.ExportError, message):
            self._export(weights)
        self.assertEqual(
            os.listdir(os.path.join(self.root, "m")) if os.path.isdir(
                os.path.join(self.root, "m")) else [], [],
            "nothing may be left behind")

    def test_writes_the_repository_layout_and_reads_it_back_exactly(self):
        model = _model()
        version_dir = self._export(model.state_dict(), version=3)
        self.assertEqual(version_dir, os.path.join(self.root, "m", "3"))
        self.assertEqual(sorted(os.listdir(os.path.join(self.root, "m"))),
                         ["3"])
        self.assertEqual(sorted(os.listdir(version_dir)),
                         ["model_config.pbtxt", "weights.safetensors"])
        model_config, weights = export.load_model(version_dir)
        self.assertEqual(model_config, model.model_config)
        for name, values in model.state_dict().items():
            np.testing.assert_array_equal(weights[name], values)

    def test_bf16_stores_the_rounded_weights(self):
        state = _model().state_dict()
        _, weights = export.load_model(self._export(state, bf16=True))
        name = "masknet.blocks.0.mask.aggregation.weight"
        rounded = safetensors_io.bf16_bits_to_float32(
            safetensors_io.float32_to_bf16_bits(state[name].numpy()))
        np.testing.assert_array_equal(weights[name], rounded)

    def test_rejects_a_missing_tensor(self):
        state = _model().state_dict()
        del state["masknet.blocks.1.input_norm.bias"]
        self.assertRejected(
            state, "missing tensor 'masknet.blocks.1.input_norm.bias' \\[40\\]")

    def test_rejects_an_extra_tensor(self):
        state = _model().state_dict()
        state["masknet.blocks.0.hidden.bias"] = torch.zeros(32)
        self.assertRejected(state,
                            "unexpected tensor 'masknet.blocks.0.hidden.bias'")

    def test_rejects_a_misshaped_tensor(self):
        state = _model().state_dict()
        state["mlp.0.weight"] = state["mlp.0.weight"].T
        self.assertRejected(
            state,
            "'mlp.0.weight' has shape \\[64, 24\\], expected \\[24, 64\\]")

    def test_rejects_non_finite_weights(self):
        state = _model().state_dict()
        state["fields.doc_id.embedding"][3, 1] = float("nan")
        self.assertRejected(state, "'fields.doc_id.embedding' has a NaN")

    def test_rejects_an_invalid_config(self):
        model_config = reference_configs.get("variant-parallel-easyrec")
        model_config.tasks[0].layers[-1].output_size = 2
        with self.assertRaises(config.ConfigError):
            export.export_model(model_config, {}, self.root, "m")

    def test_a_model_the_server_refuses_is_not_exported(self):
        # Finite weights with a non-negative variance pass the exporter's
        # own checks; folded (weight / sqrt(var + eps)) into float32 they
        # overflow, and the server's loader says so.
        model = _model("variant-serial-block-ln")
        state = model.state_dict()
        state["mlp.0.batch_norm.running_var"][2] = 0.0
        state["mlp.0.batch_norm.weight"][2] = 1e36  # scale 3.2e38: finite
        state["mlp.0.weight"][2, 0] = 4.0  # times the scale: not
        with self.assertRaisesRegex(
                export.ExportError,
                "the server would not load this model: .*/m/1: layer "
                "'mlp.0' output 2: folding its batch norm"):
            export.export_model(model.model_config, state, self.root, "m")
        self.assertEqual(os.listdir(os.path.join(self.root, "m")), [],
                         "nothing may be left behind")

    def test_without_the_server_checker_nothing_is_exported(self):
        missing = {export.CHECKER_ENV: os.path.join(self.root, "missing")}
        with mock.patch.dict(os.environ, missing), self.assertRaisesRegex(
                export.ExportError, "masknet_check_model"):
            self._export(_model().state_dict())
        self.assertEqual(os.listdir(os.path.join(self.root, "m")), [])

    def test_an_existing_version_is_kept_unless_overwritten(self):
        state = _model().state_dict()
        self._export(state)
        with self.assertRaises(FileExistsError):
            self._export(state)
        self._export(state, overwrite=True)
        self.assertEqual(sorted(os.listdir(os.path.join(self.root, "m"))),
                         ["1"])

    def test_load_reference_computes_in_float64(self):
        model = export.load_reference(self._export(_model().state_dict()))
        self.assertEqual(model.masknet.blocks[0].hidden.weight.dtype,
                         torch.float64)


if __name__ == "__main__":
    unittest.main()
