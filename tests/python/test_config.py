"""Tests of masknet_tools.config and the reference configs."""

import os
import tempfile
import unittest

from google.protobuf import text_format

from masknet_tools import config
from masknet_tools import reference_configs
from masknet_tools.protos import config_pb2

CONTEXT, CANDIDATE = config_pb2.CONTEXT, config_pb2.CANDIDATE


def _small_config(mode=config_pb2.PARALLEL,
                  blocks=None,
                  fields=None,
                  **masknet_options):
    """Two dense fields of width 3 (context) and 5 (candidate): d = 8."""
    fields = fields or [
        config.dense_field("a", CONTEXT, 3),
        config.dense_field("b", CANDIDATE, 5)
    ]
    blocks = blocks or [config.mask_block(4, aggregation_size=6)]
    return config_pb2.ModelConfig(fields=fields,
                                  masknet=config.masknet(
                                      mode, blocks, **masknet_options),
                                  tasks=[config.task_head("t")])


class ReferenceConfigTest(unittest.TestCase):

    def test_every_reference_config_is_valid(self):
        for name in reference_configs.NAMES:
            with self.subTest(name):
                config.validate(reference_configs.get(name))

    def test_flops_match_the_masknet_spec_table(self):
        expected_mflop = {
            "paper-criteo-parallel": 6.19,
            "paper-criteo-serial": 4.63,
            "twitter-recap": 96.1
        }
        for name, mflop in expected_mflop.items():
            with self.subTest(name):
                flops = config.flops_per_candidate(reference_configs.get(name))
                self.assertAlmostEqual(flops / 1e6, mflop, delta=0.05)

    def test_instance_widths_match_the_masknet_spec_table(self):
        self.assertEqual(
            config.instance_width(reference_configs.get("paper-criteo-serial")),
            390)
        self.assertEqual(
            config.instance_width(reference_configs.get("twitter-recap")), 2776)


class WidthTest(unittest.TestCase):

    def test_reduction_of_mask_input_width_uses_d_in_every_block(self):
        blocks = [
            config.mask_block(4,
                              reduction_factor=1.5,
                              reduction_base=config_pb2.MASK_INPUT_WIDTH)
            for _ in range(2)
        ]
        shapes = config.block_shapes(_small_config(config_pb2.SERIAL, blocks))
        self.assertEqual([shape.aggregation_width for shape in shapes],
                         [12, 12])

    def test_reduction_of_masked_input_width_follows_the_serial_chain(self):
        blocks = [
            config.mask_block(4,
                              reduction_factor=1.5,
                              reduction_base=config_pb2.MASKED_INPUT_WIDTH)
            for _ in range(2)
        ]
        shapes = config.block_shapes(_small_config(config_pb2.SERIAL, blocks))
        self.assertEqual(
            shapes, [config.BlockShape(8, 12, 4),
                     config.BlockShape(4, 6, 4)])

    def test_parallel_blocks_all_mask_v(self):
        blocks = [
            config.mask_block(4, aggregation_size=6),
            config.mask_block(3, aggregation_size=2)
        ]
        model_config = _small_config(config_pb2.PARALLEL, blocks)
        self.assertEqual(
            [shape.masked_width for shape in config.block_shapes(model_config)],
            [8, 8])
        self.assertEqual(config.masknet_output_width(model_config), 7)

    def test_field_slices_follow_schema_order(self):
        self.assertEqual(dict(config.field_slices(_small_config())), {
            "a": (0, 3),
            "b": (3, 8)
        })


class ValidateTest(unittest.TestCase):

    def assertInvalid(self, model_config, message):
        with self.assertRaisesRegex(config.ConfigError, message):
            config.validate(model_config)

    def test_rejects_a_reduction_that_is_not_whole(self):
        block = config.mask_block(4,
                                  reduction_factor=0.3,
                                  reduction_base=config_pb2.MASK_INPUT_WIDTH)
        self.assertInvalid(_small_config(blocks=[block]), "not a whole number")

    def test_rejects_field_layer_norm_after_the_first_serial_block(self):
        blocks = [
            config.mask_block(4, aggregation_size=4),
            config.mask_block(4,
                              aggregation_size=4,
                              input_norm=config_pb2.FIELD_LAYER_NORM)
        ]
        self.assertInvalid(_small_config(config_pb2.SERIAL, blocks), "not V")

    def test_rejects_field_layer_norm_with_a_scalar_field(self):
        fields = [
            config.dense_field("a", CONTEXT, 1),
            config.dense_field("b", CANDIDATE, 5)
        ]
        self.assertInvalid(
            _small_config(fields=fields,
                          input_norm=config_pb2.FIELD_LAYER_NORM),
            "at least 2 wide")

    def test_rejects_a_normalized_mask_input_without_an_input_norm(self):
        self.assertInvalid(
            _small_config(mask_input=config_pb2.MASK_INPUT_NORMALIZED),
            "needs an input_norm")

    def test_rejects_input_norms_over_fields_that_are_not_adjacent(self):
        model_config = _small_config(
            fields=[config.dense_field(name, CANDIDATE, 2) for name in "abc"])
        model_config.input_norms.append(config.input_norm("n", ["a", "c"]))
        self.assertInvalid(model_config, "not adjacent")

    def test_rejects_unspecified_choices(self):
        model_config = _small_config()
        model_config.fields[
            0].dense.non_finite = config_pb2.NON_FINITE_POLICY_UNSPECIFIED
        model_config.masknet.blocks[
            0].activation = config_pb2.ACTIVATION_UNSPECIFIED
        self.assertInvalid(
            model_config,
            "non_finite is unspecified(.|\n)*activation is unspecified")

    def test_rejects_a_head_that_does_not_end_in_one_logit(self):
        model_config = _small_config()
        model_config.tasks[0].layers[-1].activation = config_pb2.RELU
        self.assertInvalid(model_config, "output_size 1 and ACTIVATION_NONE")

    def test_rejects_an_eps_that_is_used_but_zero(self):
        model_config = _small_config()
        model_config.masknet.blocks[0].layer_norm_eps = 0
        self.assertInvalid(model_config, "eps 0")


class FileTest(unittest.TestCase):

    def test_text_format_round_trip(self):
        model_config = reference_configs.get("variant-serial-field-ln")
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "model_config.pbtxt")
            config.write_config(model_config, path)
            self.assertEqual(config.read_config(path), model_config)

    def test_unknown_fields_are_errors(self):
        with self.assertRaises(text_format.ParseError):
            config.parse_config("description: 'x' hidden_units: 3")


if __name__ == "__main__":
    unittest.main()
