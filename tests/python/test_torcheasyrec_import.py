"""Tests of masknet_tools.torcheasyrec_import and textproto on the stand-in
of TorchEasyRec's MaskNet (tests/python/torcheasyrec.py)."""

import unittest

import numpy as np
import torch

from masknet_tools import checkpoints
from masknet_tools import config
from masknet_tools import export
from masknet_tools import features
from masknet_tools import reference
from masknet_tools import textproto
from masknet_tools import torcheasyrec_import
from masknet_tools.protos import config_pb2
from tests.python import torcheasyrec


def candidates_of(model_config, inputs):
    """The candidates' Features of the stand-in's inputs (no context)."""
    n = len(next(iter(inputs.values())))
    return [
        features.make_features(model_config, config_pb2.CANDIDATE,
                               {name: v[i].tolist() for name, v in inputs.items()})
        for i in range(n)
    ]


class TextProtoTest(unittest.TestCase):

    def test_reads_nested_repeated_and_scalar_fields(self):
        message = textproto.parse("""
            a: 1  b: -2.5e1 c: "x\\"y" # comment
            d { e: true f: [1, 2] f: 3 } d < e: false >
            g: ENUM_NAME h: 'single'""")
        self.assertEqual(message["a"], [1])
        self.assertEqual(message["b"], [-25.0])
        self.assertEqual(message["c"], ['x"y'])
        self.assertEqual(message["d"], [{"e": [True], "f": [1, 2, 3]},
                                        {"e": [False]}])
        self.assertEqual(textproto.first(message, "g"), "ENUM_NAME")
        self.assertEqual(textproto.first(message, "h"), "single")
        self.assertIsNone(textproto.first(message, "missing"))

    def test_reads_every_spelling_of_a_bool_and_checks_types(self):
        message = textproto.parse(
            'a: True b: f c: t d: False e: 1 s: "caf\\303\\251 é" n: "3"')
        self.assertEqual([textproto.first(message, k, kind=bool)
                          for k in "abcde"], [True, False, True, False, True])
        self.assertEqual(textproto.first(message, "s"), "café é")
        with self.assertRaisesRegex(textproto.TextProtoError,
                                    "n: expected int, got '3'"):
            textproto.first(message, "n", kind=int)

    def test_malformed_text_names_the_line(self):
        for text, pattern in (("a {\n b: 1", "missing '}'"),
                              ("a: 1\n}", "line 2"), ("a: 1\n$", "line 2")):
            with self.assertRaisesRegex(textproto.TextProtoError, pattern):
                textproto.parse(text)


class TorchEasyRecImportTest(unittest.TestCase):

    def _assert_same_scores(self, text, seed):
        wrapper = torcheasyrec.build(text, seed)
        state = checkpoints.strip_wrapper_prefix(wrapper.state_dict())
        model_config, weights, _ = torcheasyrec_import.import_masknet(
            state, text, max_ids=2)
        config.validate(model_config)
        export.check_weights(model_config, weights)
        ours = reference.MaskNetReference(model_config).double()
        ours.load_state_dict(weights, strict=True)
        inputs = torcheasyrec.random_inputs(12, seed + 1)
        with torch.no_grad():
            expected = wrapper.model(inputs)
            got = ours(
                features.make_features(model_config, config_pb2.CONTEXT, {}),
                candidates_of(model_config, inputs))
        np.testing.assert_allclose(got, expected.double(), atol=1e-5)
        self.assertGreater(float(expected.std()), 0.01)
        return model_config

    def test_parallel_masknet_scores_as_the_stand_in(self):
        model_config = self._assert_same_scores(
            torcheasyrec.pipeline_config(parallel=True), 0)
        self.assertEqual(
            [(f.name, f.WhichOneof("kind")) for f in model_config.fields],
            [("c1", "categorical"), ("c2", "categorical"), ("i1", "dense"),
             ("c3", "categorical"), ("c4", "categorical"), ("i2", "dense")])
        self.assertEqual(model_config.fields[1].categorical.pooling,
                         config_pb2.MEAN)
        self.assertEqual(model_config.masknet.input_norm,
                         config_pb2.LAYER_NORM)
        self.assertEqual(model_config.masknet.mask_input,
                         config_pb2.MASK_INPUT_RAW)
        # int(22 * 1.3) = 28, truncated: the width comes from the tensors.
        self.assertEqual(model_config.masknet.blocks[0].aggregation_size, 28)

    def test_serial_masknet_with_batch_norm_scores_as_the_stand_in(self):
        text = torcheasyrec.pipeline_config(parallel=False, use_bn=True)
        model_config = self._assert_same_scores(text, 3)
        self.assertEqual(model_config.masknet.mode, config_pb2.SERIAL)
        # Protobuf text's other spellings of false mean the same model.
        wrapper = torcheasyrec.build(text, 3)
        state = checkpoints.strip_wrapper_prefix(wrapper.state_dict())
        for spelling in ("False", "f", "0"):
            other, _, _ = torcheasyrec_import.import_masknet(
                state,
                text.replace("use_parallel: false", f"use_parallel: {spelling}"),
                max_ids=2)
            self.assertEqual(other, model_config)

    def _import(self, text, edit_state=None):
        wrapper = torcheasyrec.build(torcheasyrec.pipeline_config(), 0)
        state = checkpoints.strip_wrapper_prefix(wrapper.state_dict())
        if edit_state:
            edit_state(state)
        return torcheasyrec_import.import_masknet(state, text)

    def test_missing_and_unexpected_tensors_are_named(self):
        text = torcheasyrec.pipeline_config()
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "missing tensor 'output_linear.weight'"):
            self._import(text, lambda s: s.pop("output_linear.weight"))
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "embedding_bags.shared_emb.weight"):
            self._import(
                text, lambda s: s.pop("embedding_group.emb_impls.__BASE__.ebc."
                                      "embedding_bags.shared_emb.weight"))
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "unexpected tensors.*extra.weight"):
            self._import(text, lambda s: s.update({"extra.weight": torch.ones(1)}))

    def test_options_that_cannot_be_served_are_refused_by_name(self):
        base = torcheasyrec.pipeline_config()
        cases = [
            (base.replace('use_bn: false', 'use_bn: false use_ln: true'),
             "top_mlp.use_ln"),
            (base.replace('feature_name: "i1"',
                          'feature_name: "i1" boundaries: [0.5, 1.5]'),
             "raw_feature 'i1': boundaries"),
            (base.replace('num_class: 1', 'num_class: 2'), "num_class 2"),
            (base.replace('mask_net {', 'dlrm {} mask_net {', 1)
             .replace('mask_net {', 'maskless {', 1), "not a MaskNet"),
            (base.replace('pooling: "mean"', 'pooling: "max"'),
             "pooling 'max'"),
            (base.replace('n_mask_blocks: 3', 'n_mask_blocks: 4'),
             "n_mask_blocks is 4 but the checkpoint has 3"),
            (base.replace('n_mask_blocks: 3', 'n_mask_blocks: "3"'),
             "n_mask_blocks: expected int"),
            (base.replace('feature_name: "c1"', 'feature_name: "c1" weighted: true'),
             "id_feature 'c1': weighted is not supported"),
        ]
        for text, pattern in cases:
            with self.subTest(pattern=pattern):
                with self.assertRaisesRegex(checkpoints.CheckpointError,
                                            pattern):
                    self._import(text)

    def test_another_frameworks_checkpoint_is_named(self):
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "is a the-algorithm-ml model"):
            checkpoints.check_framework(
                {"_towers.a.layers.0.weight": torch.ones(1, 1)},
                "torcheasyrec")


if __name__ == "__main__":
    unittest.main()
