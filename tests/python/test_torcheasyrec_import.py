"""masknet_tools.torcheasyrec_import on models TorchEasyRec's own code built
(tests/fixtures/frameworks/torcheasyrec/): the architecture comes from the
pipeline config, the checkpoint must be exactly that model, and what we
cannot serve is refused by name. That the imported models score as
TorchEasyRec does is tests/framework_import_check.py's."""

import unittest

from masknet_tools import checkpoints
from masknet_tools import textproto
from masknet_tools import torcheasyrec_import
from masknet_tools.protos import config_pb2
from tests.python.framework_fixtures import Fixture

TABLES = "model.embedding_group.emb_impls.__BASE__.ebc.embedding_bags."


def _fixture(case):
    return Fixture("torcheasyrec", case)


class TorchEasyRecConfigTest(unittest.TestCase):

    def test_without_top_mlp_the_blocks_feed_the_logit(self):
        for case in ("no_top_mlp", "serial_no_top_mlp"):
            with self.subTest(case=case):
                model_config, weights, _, _ = _fixture(case).import_()
                self.assertEqual(list(model_config.mlp), [])
                blocks = model_config.masknet.blocks
                reads = sum(b.output_size for b in blocks) \
                    if model_config.masknet.mode == config_pb2.PARALLEL \
                    else blocks[-1].output_size
                self.assertEqual(list(weights["tasks.probs.0.weight"].shape),
                                 [1, reads])

    def test_the_config_says_what_torcheasyrec_computes(self):
        model_config, _, _, _ = _fixture("no_top_mlp").import_()
        self.assertEqual(
            [(f.name, f.WhichOneof("kind")) for f in model_config.fields],
            [("uid", "categorical"), ("price", "dense"), ("iid", "categorical")])
        fields = {f.name: f for f in model_config.fields}
        self.assertEqual(fields["uid"].categorical.num_buckets, 7)
        # vocab_list of four: TorchEasyRec adds the default value and <OOV>.
        self.assertEqual(fields["iid"].categorical.num_buckets, 6)
        self.assertEqual(fields["iid"].categorical.pooling, config_pb2.MEAN)
        # reduction_ratio 1.5 of V = 3 + 1 + 5.
        self.assertEqual([b.aggregation_size
                          for b in model_config.masknet.blocks], [13, 13])
        self.assertTrue(all(f.scope == config_pb2.CANDIDATE
                            for f in model_config.fields))

    def test_table_rows_are_counted_as_torcheasyrecs_id_feature_counts_them(self):
        cases = [
            ("num_buckets: 7", 7),
            ("hash_bucket_size: 11", 11),
            ('vocab_list: "a" vocab_list: "b"', 4),
            ('vocab_list: "a" vocab_list: "b" default_bucketize_value: 1', 2),
            ('vocab_dict { key: "a" value: 2 } vocab_dict { key: "b" value: 5 }',
             6),
            ('vocab_file: "v.txt"', "rows of id_feature 'f'"),
        ]
        for text, rows in cases:
            with self.subTest(text=text):
                options = textproto.parse(text)
                self.assertEqual(torcheasyrec_import._rows(
                    options, "id_feature 'f'"), rows)


class DamagedTorchEasyRecCheckpointTest(unittest.TestCase):

    def test_a_top_mlp_layer_without_its_bias_is_refused(self):
        fixture = _fixture("serial_default_ratio")
        state = fixture.state()
        bias = [k for k in state if k.startswith("model.mask_net_layer.top_mlp.")
                and k.endswith("perceptron.0.bias")]
        self.assertTrue(bias)
        del state[bias[0]]
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    f"missing '{bias[0]}'"):
            fixture.import_(state)

    def test_fewer_mask_blocks_than_n_mask_blocks_are_named(self):
        fixture = _fixture("serial_aggdim_nobias")
        state = {k: v for k, v in fixture.state().items()
                 if ".mask_blocks.2." not in k}
        with self.assertRaisesRegex(
                checkpoints.CheckpointError,
                "missing 'model.mask_net_layer.mask_blocks.2.mask_generator"):
            fixture.import_(state)


class RefusedTorchEasyRecConfigTest(unittest.TestCase):

    def assert_refused(self, case, old, new, pattern):
        fixture = _fixture(case)
        text = fixture.config_text()
        self.assertIn(old, text)
        with self.assertRaisesRegex(checkpoints.CheckpointError, pattern):
            fixture.import_(config_text=text.replace(old, new, 1))

    def test_options_that_cannot_be_served_are_refused_by_name(self):
        cases = [
            ("parallel_bn_shared", "use_bn: true", "use_bn: true\n        use_ln: true",
             "top_mlp.use_ln is not supported"),
            ("parallel_bn_shared", "group_type: DEEP", "group_type: WIDE",
             "only a DEEP group is supported"),
            ("parallel_bn_shared", "num_buckets: 10", "num_buckets: 10\n    weighted: true",
             "id_feature 'cat_a': weighted is not supported"),
            ("parallel_bn_shared", 'normalizer: "method=expression,expr=log(x+3)"',
             "boundaries: 1.0", "raw_feature 'vec_c': boundaries is not supported"),
            ("parallel_bn_shared", "model_config {", "model_config {\n  num_class: 2",
             "num_class 2"),
            ("parallel_bn_shared", "mask_block {", "mask_block {\n        gate: 1",
             "mask_block.gate is not supported"),
            ("parallel_bn_shared", "num_buckets: 10", "embedding_dim: 3",
             "no hash_bucket_size, num_buckets, vocab_list"),
        ]
        for case, old, new, pattern in cases:
            with self.subTest(pattern=pattern):
                self.assert_refused(case, old, new, pattern)

    def test_use_ln_false_is_served(self):
        fixture = _fixture("parallel_bn_shared")
        text = fixture.config_text().replace(
            "use_bn: true", "use_bn: true\n        use_ln: false", 1)
        model_config, _, _, _ = fixture.import_(config_text=text)
        self.assertEqual(len(model_config.mlp), 2)

    def test_a_second_feature_group_is_refused_by_name(self):
        fixture = _fixture("parallel_bn_shared")
        text = fixture.config_text().replace(
            "  losses {", '  feature_groups {\n    group_name: "other"\n'
            '    feature_names: "cat_a"\n    group_type: DEEP\n  }\n  losses {', 1)
        with self.assertRaisesRegex(checkpoints.CheckpointError,
                                    "model_config has 2 feature_groups"):
            fixture.import_(config_text=text)


if __name__ == "__main__":
    unittest.main()
