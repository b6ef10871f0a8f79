"""Tests of masknet_tools.fuxictr_import on the stand-in of FuxiCTR's MaskNet
(tests/python/fuxictr.py)."""

import copy
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools import export
from masknet_tools import features
from masknet_tools import fuxictr_import
from masknet_tools import reference
from masknet_tools.protos import config_pb2
from tests.python import fuxictr

CONTEXT_FIELDS = ("user_id", "user_age")


def request_of(model_config, inputs):
    """(context, candidates) Features: user fields are the context."""
    n = len(inputs["item_id"])

    def values(name, i):
        v = inputs[name][i]
        if name in ("item_tags", "clicks"):
            return fuxictr.unpadded(v)
        return [v.item()]

    context = features.make_features(model_config, config_pb2.CONTEXT,
                                     {f: values(f, 0) for f in CONTEXT_FIELDS})
    candidates = [
        features.make_features(
            model_config, config_pb2.CANDIDATE,
            {f: values(f, i) for f in inputs if f not in CONTEXT_FIELDS},
            explicit_counts=True) for i in range(n)
    ]
    return context, candidates


class FuxiCtrImportTest(unittest.TestCase):

    def _assert_same_scores(self, yaml_config, seed, batch_norm=False):
        model = fuxictr.build(yaml_config, seed, batch_norm)
        model_config, weights, _ = fuxictr_import.import_masknet(
            model.state_dict(), yaml_config, fuxictr.feature_map())
        config.validate(model_config)
        export.check_weights(model_config, weights)
        ours = reference.MaskNetReference(model_config).double()
        ours.load_state_dict(weights, strict=True)
        inputs = fuxictr.random_inputs(10, seed + 1)
        with torch.no_grad():
            expected = model(inputs)
            got = ours(*request_of(model_config, inputs))
        np.testing.assert_allclose(got, expected.double(), atol=1e-5)
        self.assertGreater(float(expected.std()), 0.01)
        return model_config

    def test_serial_masknet_scores_as_the_stand_in(self):
        model_config = self._assert_same_scores(
            fuxictr.model_config("SerialMaskNet"), 0)
        self.assertEqual(
            [(f.name, f.scope, f.WhichOneof("kind")) for f in model_config.fields],
            [("user_id", config_pb2.CONTEXT, "categorical"),
             ("user_age", config_pb2.CONTEXT, "dense"),
             ("item_id", config_pb2.CANDIDATE, "categorical"),
             ("item_price", config_pb2.CANDIDATE, "dense"),
             ("item_tags", config_pb2.CANDIDATE, "categorical"),
             ("clicks", config_pb2.CANDIDATE, "categorical")])
        self.assertEqual(model_config.fields[1].dense.embedding_dim, 6)
        self.assertEqual(model_config.masknet.input_norm,
                         config_pb2.FIELD_LAYER_NORM)
        # int(36 * 0.7) = 25 for block 0, int(20 * 0.7) = 14 for block 1.
        self.assertEqual([b.aggregation_size for b in model_config.masknet.blocks],
                         [25, 14])
        self.assertEqual([t.name for t in model_config.tasks], ["clk"])

    def test_parallel_without_layer_norms_with_batch_norm(self):
        model_config = self._assert_same_scores(
            fuxictr.model_config("ParallelMaskNet", emb_layernorm=False,
                                 net_layernorm=False), 2, batch_norm=True)
        self.assertTrue(all(b.no_layer_norm for b in model_config.masknet.blocks))
        self.assertEqual(len(model_config.mlp), 2)

    def _import(self, yaml_config=None, feature_map=None, edit_state=None,
                expid=None):
        yaml_config = yaml_config or fuxictr.model_config("SerialMaskNet")
        state = fuxictr.build(fuxictr.model_config("SerialMaskNet"),
                              0).state_dict()
        if edit_state:
            edit_state(state)
        return fuxictr_import.import_masknet(
            state, yaml_config, feature_map or fuxictr.feature_map(), expid)

    def test_missing_and_unexpected_tensors_are_named(self):
        name = "embedding_layer.embedding_layer.embedding_layers.item_tags.weight"
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    f"missing tensor '{name}'"):
            self._import(edit_state=lambda s: s.pop(name))
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "missing tensor 'emb_norm.5.bias'"):
            self._import(edit_state=lambda s: s.pop("emb_norm.5.bias"))
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "unexpected tensors.*feature_encoders"):
            self._import(edit_state=lambda s: s.update(
                {"feature_encoders.x.weight": torch.ones(2, 2)}))

    def test_options_that_cannot_be_served_are_refused_by_name(self):
        base = fuxictr.model_config("SerialMaskNet")
        cases = []
        for key, value, pattern in (
                ("dnn_hidden_activations", "tanh", "'tanh' is not supported"),
                ("task", "regression", "task 'regression'"),
                ("model_type", "DeepMaskNet", "model_type 'DeepMaskNet'"),
                ("attention_dim", 8, "option 'attention_dim'")):
            yaml_config = copy.deepcopy(base)
            yaml_config["MaskNet_tiny"][key] = value
            cases.append((yaml_config, None, pattern))
        for key, value in (("use_features", ["item_id", "user_id"]),
                           ("feature_specs", [{"name": "item_tags"}])):
            yaml_config = copy.deepcopy(base)
            yaml_config["MaskNet_tiny"][key] = value
            cases.append((yaml_config, None, f"option '{key}' is not supported"))
        feature_map = fuxictr.feature_map()
        feature_map["features"][0] = {"user_id": 5}
        cases.append((base, feature_map, "is not {name: {spec}}"))
        feature_map = fuxictr.feature_map()
        feature_map["features"][5]["item_tags"]["max_len"] = None
        cases.append((base, feature_map, "max_len None"))
        feature_map = fuxictr.feature_map()
        feature_map["features"][0]["user_id"]["pretrained_emb"] = "u.h5"
        cases.append((base, feature_map, "pretrained embeddings"))
        feature_map = fuxictr.feature_map()
        feature_map["features"][5]["item_tags"]["feature_encoder"] = (
            "layers.MaskedMaxPooling()")
        cases.append((base, feature_map, "MaskedMaxPooling"))
        two = copy.deepcopy(base)
        two["MaskNet_other"] = dict(two["MaskNet_tiny"])
        cases.append((two, None, "2 MaskNet experiments.*--expid"))
        for yaml_config, feature_map, pattern in cases:
            with self.subTest(pattern=pattern):
                with self.assertRaisesRegex(checkpoints.CheckpointError,
                                            pattern):
                    self._import(yaml_config, feature_map)
        self._import(two, expid="MaskNet_other")  # chosen: imports


class FuxiCtrCommandTest(unittest.TestCase):

    def test_the_feature_map_is_required_and_only_for_fuxictr(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = os.path.join(tmp, "MaskNet_tiny.model")
            torch.save(
                fuxictr.build(fuxictr.model_config("SerialMaskNet"),
                              0).state_dict(), checkpoint)
            for framework, extra in (("fuxictr", []),
                                     ("torcheasyrec",
                                      ["--feature_map", "x.json"])):
                result = subprocess.run(
                    [sys.executable,
                     os.path.join(root, "tools", "import_model.py"), "--from",
                     framework, "--checkpoint", checkpoint, "--config",
                     "unused.yaml", "--model_root", tmp, "--model_name", "m"] +
                    extra, capture_output=True, text=True, check=False)
                self.assertNotEqual(result.returncode, 0)
                self.assertIn("--feature_map", result.stderr)


if __name__ == "__main__":
    unittest.main()
