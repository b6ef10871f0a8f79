"""Tests of masknet_tools.twitter_import's MaskNet mapping on the stand-in
of Twitter's MaskNet (tests/python/twitter_recap.py)."""

import unittest

import numpy as np
import torch
from torch import nn

from masknet_tools import config
from masknet_tools import reference
from masknet_tools import twitter_import
from masknet_tools.protos import config_pb2
from tests.python import standins
from tests.python import twitter_recap


def _twitter_masknet(in_features, blocks, parallel, mlp_sizes=None):
    """Twitter's MaskNet (the stand-in's) of `blocks`: (aggregation_size,
    output_size, input_layer_norm); an MLP with batch norm and dropout."""
    options = {
        "use_parallel": parallel,
        "mask_blocks": [{
            "aggregation_size": a,
            "output_size": o,
            "input_layer_norm": n
        } for a, o, n in blocks]
    }
    if mlp_sizes:
        options["mlp"] = {
            "layer_sizes": mlp_sizes,
            "batch_norm": {
                "affine": True
            },
            "dropout": {
                "rate": 0.1
            }
        }
    return twitter_recap.MaskNet(options, in_features)


class Backbone(nn.Module):
    """Puts the MaskNet under "_backbone." as Twitter's ranking model does."""

    def __init__(self, masknet):
        super().__init__()
        self._backbone = masknet


def _import(twitter, d, mode, final_layer_activation=False):
    """Our MaskNetReference with Twitter's tensors; V is one dense field."""
    state = Backbone(twitter).state_dict()
    masknet, mlp = twitter_import.masknet_config(state, "_backbone.", mode,
                                                 final_layer_activation)
    model_config = config_pb2.ModelConfig(
        fields=[config.dense_field("v", config_pb2.CANDIDATE, d)],
        masknet=masknet,
        mlp=mlp,
        tasks=[config.task_head("t")])
    ours = reference.MaskNetReference(model_config)
    weights = twitter_import.map_masknet(state, "_backbone.")
    weights.update({
        name: values
        for name, values in ours.state_dict().items()
        if name.startswith("tasks.")
    })
    ours.load_state_dict(weights, strict=True)
    return ours


class TwitterImportTest(unittest.TestCase):

    def test_parallel_masknet_with_mlp_computes_the_same(self):
        twitter = _twitter_masknet(12, [(8, 6, False), (24, 5, True)],
                                 parallel=True,
                                 mlp_sizes=[7, 4])
        standins.randomize(twitter, 0)
        ours = _import(twitter, 12, config_pb2.PARALLEL)
        x = torch.randn(5, 12)
        with torch.no_grad():
            np.testing.assert_allclose(ours.mlp(ours.masknet(x)),
                                       twitter(x)["output"],
                                       atol=1e-5)

    def test_serial_masknet_computes_the_same(self):
        twitter = _twitter_masknet(10, [(6, 8, True), (4, 3, False)],
                                 parallel=False)
        standins.randomize(twitter, 1)
        ours = _import(twitter, 10, config_pb2.SERIAL)
        x = torch.randn(5, 10)
        with torch.no_grad():
            np.testing.assert_allclose(ours.masknet(x), twitter(x)["output"], atol=1e-5)

    def test_config_takes_widths_and_twitter_choices_from_the_tensors(self):
        twitter = _twitter_masknet(12, [(8, 6, False), (24, 5, True)],
                                 parallel=True,
                                 mlp_sizes=[7, 4])
        masknet, mlp = twitter_import.masknet_config(twitter.state_dict(), "",
                                                     config_pb2.PARALLEL)
        self.assertEqual([(b.aggregation_size, b.output_size, b.input_norm)
                          for b in masknet.blocks],
                         [(8, 6, config_pb2.NORM_NONE),
                          (24, 5, config_pb2.LAYER_NORM)])
        self.assertTrue(
            all(b.hidden_bias and b.activation == config_pb2.ACTIVATION_NONE
                for b in masknet.blocks))
        self.assertEqual(
            [(layer.output_size, layer.activation, layer.HasField("batch_norm"))
             for layer in mlp], [(7, config_pb2.RELU, True),
                                 (4, config_pb2.ACTIVATION_NONE, False)])

    def test_other_tensors_pass_through_and_unknown_masknet_tensors_are_errors(
            self):
        state = {
            "_backbone._mask_blocks.0._gate.weight": torch.zeros(2),
            "other.x": torch.ones(1)
        }
        with self.assertRaisesRegex(ValueError, "_gate"):
            twitter_import.map_masknet(state, "_backbone.")
        self.assertEqual(
            list(
                twitter_import.map_masknet({"other.x": torch.ones(1)},
                                           "_backbone.")), ["other.x"])


if __name__ == "__main__":
    unittest.main()
