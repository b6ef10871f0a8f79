"""masknet_tools.twitter_import on models Twitter's own code built
(tests/fixtures/frameworks/the-algorithm-ml/): the architecture comes from the
YAML, the checkpoint must be exactly that model, and what Twitter's code
cannot build or we cannot serve is refused by name. That the imported models
score as Twitter's code does is tests/framework_import_check.py's."""

import os
import unittest

import numpy as np
import yaml

from masknet_tools import checkpoints
from masknet_tools.protos import config_pb2
from tests.python.framework_fixtures import Fixture


def _fixture(case):
    return Fixture("the-algorithm-ml", case)


class RecapConfigTest(unittest.TestCase):

    def test_the_config_says_what_twitter_computes(self):
        fixture = _fixture("parallel_prodlike")
        model_config, _, notes, _ = fixture.import_()
        self.assertEqual([(f.name, f.scope) for f in model_config.fields],
                         [("continuous", config_pb2.CANDIDATE),
                          ("binary", config_pb2.CANDIDATE),
                          ("user_embedding", config_pb2.CONTEXT),
                          ("user_eng_embedding", config_pb2.CONTEXT),
                          ("author_embedding", config_pb2.CANDIDATE)])
        # The truncations give the widths: 13 continuous, 5 binary.
        self.assertEqual([f.dense.width for f in model_config.fields[:2]],
                         [13, 5])
        continuous = model_config.fields[0].dense
        state = fixture.state()
        self.assertEqual(
            (continuous.non_finite, continuous.transform),
            (config_pb2.REPLACE_WITH_ZERO, config_pb2.SIGNED_LOG1P))
        # The clamp and the ratios are the checkpoint's, as Twitter uses them.
        self.assertAlmostEqual(continuous.clamp_max, float(state[
            "model._preprocessor._before_concat_layers.3.max_value"]), places=6)
        self.assertAlmostEqual(
            model_config.tasks[0].negative_sampling_rate,
            float(state["model._calibrators.recap__engagement__is_favorited"
                        ".ratio"]), places=6)
        self.assertEqual([list(n.fields) for n in model_config.input_norms],
                         [["continuous", "binary"], ["user_embedding"],
                          ["user_eng_embedding"], ["author_embedding"]])
        self.assertEqual([t.name for t in model_config.tasks], [
            "recap__engagement__is_favorited", "recap__engagement__is_replied",
            "recap__engagement__is_report_tweet_clicked"
        ])
        self.assertEqual(
            model_config.metadata["task.recap__engagement__is_favorited"],
            "recap.engagement.is_favorited")
        widths = [f.dense.width for f in model_config.fields]
        self.assertEqual([b.aggregation_size for b in model_config.masknet.blocks],
                         [14, int(sum(widths) * 0.5)])  # V: every field
        self.assertEqual(len(notes), 1)
        self.assertIn("eps 0 served as 1e-12", notes[0])

    def test_the_continuous_width_comes_from_the_mask_file_read_beside_the_yaml(self):
        # Raw 14 continuous features, truncated to 12, of which the mask keeps
        # 8; no BatchNorm tells the width.
        fixture = _fixture("serial_masked_nobn")
        model_config, _, _, _ = fixture.import_()
        mask = np.load(os.path.join(fixture.folder, "continuous_mask.npy"))
        self.assertEqual(model_config.fields[0].dense.width,
                         int(np.count_nonzero(mask)))
        self.assertEqual(model_config.fields[0].dense.width, 8)
        self.assertEqual(model_config.fields[1].dense.width, 6)

    def test_a_mask_file_that_cannot_be_read_is_named(self):
        def point_elsewhere(recap):
            recap["train_data"]["preprocess"]["truncate_and_slice"][
                "continuous_feature_mask_path"] = "missing_mask.npy"
        with self.assertRaisesRegex(
                checkpoints.CheckpointError,
                "truncate_and_slice.continuous_feature_mask_path: cannot read "
                ".*missing_mask.npy"):
            _fixture("serial_masked_nobn").import_yaml(point_elsewhere)

    def test_a_mask_beyond_the_truncation_is_refused(self):
        def truncate_more(recap):
            recap["train_data"]["preprocess"]["truncate_and_slice"][
                "continuous_feature_truncation"] = 3
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "beyond the continuous_feature_truncation"
                                    " of 3"):
            _fixture("serial_masked_nobn").import_yaml(truncate_more)


class DamagedRecapCheckpointTest(unittest.TestCase):
    """The damaged checkpoints that were once imported as another model."""

    def assert_refused(self, case, state, *names):
        with self.assertRaises(checkpoints.CheckpointError) as caught:
            _fixture(case).import_(state)
        for name in names:
            self.assertIn(repr(name), str(caught.exception))
        return str(caught.exception)

    def test_a_block_input_layer_norm_the_yaml_has_but_the_checkpoint_not(self):
        state = _fixture("parallel_prodlike").state()
        norm = "model._backbone._mask_blocks.1._input_layer_norm."
        del state[norm + "weight"], state[norm + "bias"]
        message = self.assert_refused("parallel_prodlike", state,
                                      norm + "weight", norm + "bias")
        self.assertIn("missing", message)

    def test_the_preprocessor_layer_norm_the_yaml_has_but_the_checkpoint_not(self):
        state = _fixture("parallel_prodlike").state()
        norm = "model._preprocessor.layer_norm.layer."
        del state[norm + "weight"], state[norm + "bias"]
        self.assert_refused("parallel_prodlike", state, norm + "weight",
                            norm + "bias")

    def test_a_tower_layer_missing(self):
        # layer_sizes [8, 4, 1] with BatchNorm and ReLU: Linears at 0, 3, 6.
        state = _fixture("parallel_prodlike").state()
        layer = "model._towers.recap__engagement__is_favorited.layers.3."
        del state[layer + "weight"], state[layer + "bias"]
        self.assert_refused("parallel_prodlike", state, layer + "weight",
                            layer + "bias")

    def test_an_unexpected_tensor_under_a_tower(self):
        state = _fixture("parallel_prodlike").state()
        extra = "model._towers.recap__engagement__is_favorited.extra.weight"
        state[extra] = state["model._calibrators.recap__engagement__is_favorited"
                             ".ratio"].reshape(1)
        message = self.assert_refused("parallel_prodlike", state, extra)
        self.assertIn("unexpected", message)

    def test_a_missing_tensor_is_named_as_the_checkpoint_names_it(self):
        state = _fixture("parallel_prodlike").state()
        del state["model._backbone._mask_blocks.1._hidden_layer.bias"]
        message = self.assert_refused(
            "parallel_prodlike", state,
            "model._backbone._mask_blocks.1._hidden_layer.bias")
        self.assertNotIn("masknet.blocks", message)


class RefusedRecapConfigTest(unittest.TestCase):

    def assert_refused(self, case, edit, pattern):
        with self.assertRaisesRegex(checkpoints.CheckpointError, pattern):
            _fixture(case).import_yaml(edit)

    def test_options_that_cannot_be_served_are_refused_by_name(self):
        def setting(path, value):
            def edit(recap):
                section = recap
                for key in path[:-1]:
                    section = section[key]
                section[path[-1]] = value
            return edit
        cases = [
            (["model", "multi_task_type"], "share_none", "share_none"),
            (["model", "large_embeddings"], {"tables": []}, "large_embeddings"),
            (["model", "position_debias_config"], {"position_feature_index": 1},
             "position_debias_config"),
            (["model", "featurization_config", "double_norm_log_config",
              "layer_norm_config", "axis"], 1, "axis -1"),
            (["model", "featurization_config", "double_norm_log_config",
              "layer_norm_config", "center"], False, "center == scale"),
            (["model", "backbone", "mask_net_config", "gate"], 1,
             "mask_net_config.gate: not an option"),
            (["model", "tasks", "recap.engagement.is_replied", "mlp_config"],
             None, "only MLP towers"),
            (["model", "featurization_config"], {"log1p_abs_config": {}},
             "double_norm_log_config is missing"),
            (["model", "backbone", "mask_net_config", "mask_blocks", 0,
              "reduction_factor"], 0.5,
             r"mask_blocks\[0\]: give exactly one of reduction_factor and "
             "aggregation_size"),
        ]
        for path, value, pattern in cases:
            with self.subTest(path=path):
                self.assert_refused("parallel_prodlike", setting(path, value),
                                    pattern)

    def test_models_twitters_code_cannot_run_are_refused(self):
        def serial_with_mlp(recap):
            recap["model"]["backbone"]["mask_net_config"]["use_parallel"] = False
        self.assert_refused("parallel_prodlike", serial_with_mlp,
                            "use_parallel false is not a model the-algorithm-ml"
                            " can run")

        def single_layer_tower(recap):
            recap["model"]["tasks"]["recap.engagement.is_replied"][
                "mlp_config"]["layer_sizes"] = [1]
        self.assert_refused("parallel_prodlike", single_layer_tower,
                            "a single layer without final_layer_activation")

    def test_the_model_section_alone_is_not_enough(self):
        fixture = _fixture("parallel_prodlike")
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "must be the whole RecapConfig"):
            fixture.import_(config_text=yaml.safe_dump(
                fixture.yaml_config()["model"]))

    def test_a_task_without_train_data_is_refused(self):
        def drop_task_data(recap):
            del recap["train_data"]["tasks"]["recap.engagement.is_replied"]
        self.assert_refused("parallel_prodlike", drop_task_data,
                            "train_data.tasks has no 'recap.engagement."
                            "is_replied'")


if __name__ == "__main__":
    unittest.main()
