"""Tests of masknet_tools.twitter_import on modules laid out like Twitter's.

TwitterMaskBlock, TwitterMlp and TwitterMaskNet below have the attribute
names and forward computations of the-algorithm-ml
projects/home/recap/model/mask_net.py and mlp.py (written for this test).
"""

import unittest

import numpy as np
import torch
from torch import nn

from masknet_tools import config
from masknet_tools import reference
from masknet_tools import twitter_import
from masknet_tools.protos import config_pb2


class TwitterMaskBlock(nn.Module):

    def __init__(self, input_dim, mask_input_dim, aggregation_size, output_size,
                 input_layer_norm):
        super().__init__()
        self._input_layer_norm = nn.LayerNorm(
            input_dim) if input_layer_norm else None
        self._mask_layer = nn.Sequential(
            nn.Linear(mask_input_dim, aggregation_size), nn.ReLU(),
            nn.Linear(aggregation_size, input_dim))
        self._hidden_layer = nn.Linear(input_dim, output_size)
        self._layer_norm = nn.LayerNorm(output_size)

    def forward(self, net, mask_input):
        if self._input_layer_norm is not None:
            net = self._input_layer_norm(net)
        return self._layer_norm(
            self._hidden_layer(net * self._mask_layer(mask_input)))


class TwitterMlp(nn.Module):

    def __init__(self, in_features, layer_sizes, batch_norm):
        super().__init__()
        modules = []
        for size in layer_sizes[:-1]:
            modules.append(nn.Linear(in_features, size))
            if batch_norm:
                modules.append(nn.BatchNorm1d(size))
            modules += [nn.ReLU(), nn.Dropout(0.1)]
            in_features = size
        modules.append(nn.Linear(in_features, layer_sizes[-1]))
        self.layers = nn.ModuleList(modules)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class TwitterMaskNet(nn.Module):

    def __init__(self, in_features, blocks, parallel, mlp_sizes=None):
        super().__init__()
        mask_blocks, input_size = [], in_features
        for aggregation_size, output_size, input_layer_norm in blocks:
            mask_blocks.append(
                TwitterMaskBlock(input_size, in_features, aggregation_size,
                                 output_size, input_layer_norm))
            if not parallel:
                input_size = output_size
        self._mask_blocks = nn.ModuleList(mask_blocks)
        self.parallel = parallel
        total = sum(b[1] for b in blocks) if parallel else blocks[-1][1]
        self._dense_layers = TwitterMlp(total, mlp_sizes,
                                        batch_norm=True) if mlp_sizes else None

    def forward(self, inputs):
        if self.parallel:
            net = torch.cat(
                [block(inputs, inputs) for block in self._mask_blocks], dim=1)
        else:
            net = inputs
            for block in self._mask_blocks:
                net = block(net, inputs)
        return self._dense_layers(
            net) if self._dense_layers is not None else net


class Backbone(nn.Module):
    """Puts the MaskNet under "_backbone." as Twitter's ranking model does."""

    def __init__(self, masknet):
        super().__init__()
        self._backbone = masknet


def _randomize(module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + [
                b for b in module.buffers() if b.is_floating_point()
        ]:
            tensor.copy_(
                torch.rand(tensor.shape, generator=generator) +
                0.5 if tensor.dim() ==
                1 else torch.randn(tensor.shape, generator=generator) * 0.3)
    module.eval()


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
        twitter = TwitterMaskNet(12, [(8, 6, False), (24, 5, True)],
                                 parallel=True,
                                 mlp_sizes=[7, 4])
        _randomize(twitter, 0)
        ours = _import(twitter, 12, config_pb2.PARALLEL)
        x = torch.randn(5, 12)
        with torch.no_grad():
            np.testing.assert_allclose(ours.mlp(ours.masknet(x)),
                                       twitter(x),
                                       atol=1e-5)

    def test_serial_masknet_computes_the_same(self):
        twitter = TwitterMaskNet(10, [(6, 8, True), (4, 3, False)],
                                 parallel=False)
        _randomize(twitter, 1)
        ours = _import(twitter, 10, config_pb2.SERIAL)
        x = torch.randn(5, 10)
        with torch.no_grad():
            np.testing.assert_allclose(ours.masknet(x), twitter(x), atol=1e-5)

    def test_config_takes_widths_and_twitter_choices_from_the_tensors(self):
        twitter = TwitterMaskNet(12, [(8, 6, False), (24, 5, True)],
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
