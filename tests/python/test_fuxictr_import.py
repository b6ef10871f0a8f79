"""masknet_tools.fuxictr_import on models FuxiCTR's own code built
(tests/fixtures/frameworks/fuxictr/): the architecture comes from
model_config.yaml and feature_map.json, the checkpoint must be exactly that
model, and what FuxiCTR cannot build or we cannot serve is refused by name.
That the imported models score as FuxiCTR does is
tests/framework_import_check.py's."""

import copy
import json
import unittest

import torch
import yaml

from masknet_tools import checkpoints
from masknet_tools.protos import config_pb2
from tests.python.framework_fixtures import Fixture

CASE = "serial_two_blocks_layernorms"
EXPERIMENT = "MaskNet_" + CASE
TABLES = "embedding_layer.embedding_layer.embedding_layers."


def _fixture(case=CASE):
    return Fixture("fuxictr", case)


def _feature_map(fixture, change):
    """The fixture's feature map with change(name -> spec) applied."""
    with open(fixture.path("--feature_map")) as f:
        feature_map = json.load(f)
    specs = {name: spec for entry in feature_map["features"]
             for name, spec in entry.items()}
    change(specs)
    return feature_map


class FuxiCtrConfigTest(unittest.TestCase):

    def test_the_config_says_what_fuxictr_computes(self):
        model_config, _, notes, _ = _fixture().import_()
        self.assertEqual(
            [(f.name, f.scope, f.WhichOneof("kind")) for f in model_config.fields],
            [("user_id", config_pb2.CONTEXT, "categorical"),
             ("user_age", config_pb2.CONTEXT, "dense"),
             ("item_id", config_pb2.CANDIDATE, "categorical"),
             ("user_hist", config_pb2.CONTEXT, "categorical"),
             ("item_price", config_pb2.CANDIDATE, "dense"),
             ("item_tags", config_pb2.CANDIDATE, "categorical"),
             ("hour", config_pb2.CANDIDATE, "categorical")])
        fields = {f.name: f for f in model_config.fields}
        self.assertEqual(fields["item_id"].categorical.num_buckets, 20)
        self.assertEqual(fields["user_hist"].categorical.pooling, config_pb2.SUM)
        self.assertEqual(fields["item_tags"].categorical.pooling, config_pb2.MEAN)
        self.assertEqual(fields["item_tags"].categorical.max_ids, 4)
        self.assertEqual(model_config.masknet.mode, config_pb2.SERIAL)
        self.assertEqual([b.output_size for b in model_config.masknet.blocks],
                         [8, 6])
        self.assertEqual([t.name for t in model_config.tasks], ["clk"])
        self.assertEqual(notes, [])

    def test_a_table_of_another_size_than_vocab_size_is_refused(self):
        fixture = _fixture()
        for rows in (19, 21):
            with self.subTest(rows=rows):
                feature_map = _feature_map(
                    fixture, lambda s: s["item_id"].update(vocab_size=rows))
                with self.assertRaisesRegex(
                        checkpoints.CheckpointError,
                        f"'{TABLES}item_id.weight' has shape \\[20, 3\\], "
                        f"expected \\[{rows}, 3\\]"):
                    fixture.import_(feature_map=feature_map)

    def test_options_fuxictrs_masknet_ignores_are_noted_and_ignored(self):
        fixture = _fixture()
        config = fixture.yaml_config()
        config[EXPERIMENT].update(batch_norm=True, some_option=1)
        _, _, notes, _ = fixture.import_(config_text=yaml.safe_dump(config))
        self.assertEqual(len(notes), 1)
        self.assertIn("ignored here too: batch_norm, some_option", notes[0])


class RefusedFuxiCtrConfigTest(unittest.TestCase):

    def assert_feature_map_refused(self, change, pattern):
        fixture = _fixture()
        with self.assertRaisesRegex(checkpoints.CheckpointError, pattern):
            fixture.import_(feature_map=_feature_map(fixture, change))

    def assert_params_refused(self, params, pattern, case=CASE):
        fixture = _fixture(case)
        config = copy.deepcopy(fixture.yaml_config())
        experiment = next(k for k in config if k != "Base")
        config[experiment].update(params)
        with self.assertRaisesRegex(checkpoints.CheckpointError, pattern):
            fixture.import_(config_text=yaml.safe_dump(config))

    def test_feature_options_that_change_the_embedding_are_refused_by_name(self):
        cases = [
            (lambda s: s["item_id"].update(feature_encoder="nn.Tanh()"),
             "feature 'item_id' \\(categorical\\): feature_encoder 'nn.Tanh\\(\\)'"),
            (lambda s: s["user_age"].update(feature_encoder="nn.Sigmoid()"),
             "feature 'user_age' \\(numeric\\): feature_encoder"),
            (lambda s: s["item_tags"].pop("feature_encoder"),
             "feature 'item_tags' \\(sequence\\): no feature_encoder"),
            (lambda s: s["item_tags"].update(
                feature_encoder="layers.MaskedMaxPooling()"),
             "feature_encoder 'layers.MaskedMaxPooling\\(\\)' is not supported"),
            (lambda s: s["item_id"].update(embedding_dim=4),
             "feature 'item_id' \\(categorical\\): embedding_dim 4 differs"),
            (lambda s: s["item_id"].update(pretrained_emb="emb.npz"),
             "pretrained embeddings are not supported"),
            (lambda s: s["hour"].update(type="embedding"),
             "type 'embedding' is not supported"),
        ]
        for change, pattern in cases:
            with self.subTest(pattern=pattern):
                self.assert_feature_map_refused(change, pattern)

    def test_model_options_that_cannot_be_served_are_refused_by_name(self):
        cases = [
            ({"task": "regression"}, "task 'regression' is not supported"),
            ({"model_type": "OtherMaskNet"}, "model_type 'OtherMaskNet'"),
            ({"dnn_hidden_activations": "tanh"},
             "dnn_hidden_activations 'tanh' is not supported"),
            ({"use_features": ["item_id"]}, "option 'use_features'"),
            ({"dnn_hidden_units": []}, "dnn_hidden_units \\[\\] has no mask"),
            ({"reduction_ratio": 0.01}, "makes block 0's mask layer"),
        ]
        for params, pattern in cases:
            with self.subTest(params=params):
                self.assert_params_refused(params, pattern)

    def test_lists_fuxictrs_parallel_masknet_cannot_build_are_refused(self):
        self.assert_params_refused(
            {"dnn_hidden_activations": ["relu", "relu"]},
            "dnn_hidden_activations as a list is not a model FuxiCTR's "
            "ParallelMaskNet can build", case="parallel_emb_layernorm_mlp")

    def test_a_checkpoint_of_another_model_type_names_every_difference(self):
        fixture = _fixture()
        config = fixture.yaml_config()
        config[EXPERIMENT]["model_type"] = "ParallelMaskNet"
        with self.assertRaises(checkpoints.CheckpointError) as caught:
            fixture.import_(config_text=yaml.safe_dump(config))
        message = str(caught.exception)
        self.assertIn("missing 'mask_net.dnn.mlp.", message)
        self.assertIn("unexpected 'mask_net.fc.0.bias'", message)


class SharedTablesTest(unittest.TestCase):

    def test_a_shared_table_is_one_table_under_each_name(self):
        fixture = _fixture("serial_shared_embedding")
        state = fixture.state()
        _, weights, _, _ = fixture.import_(state)
        tables = [n for n in state if n.startswith(TABLES)]
        shared = [n for n in tables if sum(
            state[m].data_ptr() == state[n].data_ptr() for m in tables) > 1]
        self.assertEqual(len(shared), 3)  # item_id's, under three names
        for name in shared:
            field = name[len(TABLES):-len(".weight")]
            self.assertTrue(torch.equal(weights[f"fields.{field}.embedding"],
                                        state[name]))


if __name__ == "__main__":
    unittest.main()
