"""Tests of the reference MaskNet on hand-computed cases of MODEL_FORMAT.md."""

import math
import unittest

import numpy as np
import torch

from masknet_tools import config
from masknet_tools import features
from masknet_tools import fixtures
from masknet_tools import reference
from masknet_tools.protos import config_pb2
from masknet_tools.protos import ranker_pb2

CONTEXT, CANDIDATE = config_pb2.CONTEXT, config_pb2.CANDIDATE
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def _model(fields,
           blocks=None,
           mode=config_pb2.PARALLEL,
           mlp=(),
           tasks=None,
           input_norms=(),
           **masknet_options):
    model_config = config_pb2.ModelConfig(
        fields=fields,
        input_norms=input_norms,
        masknet=config.masknet(
            mode, blocks or [config.mask_block(2, aggregation_size=2)],
            **masknet_options),
        mlp=mlp,
        tasks=tasks or [config.task_head("t")])
    return reference.MaskNetReference(model_config).double()


def _set(model, tensors):
    """Loads `tensors` (name to values) into `model`, keeping the others."""
    state = model.state_dict()
    for name, values in tensors.items():
        state[name] = torch.tensor(values, dtype=torch.float64)
    model.load_state_dict(state)


def _features(dense=(), ids=(), id_counts=()):
    return ranker_pb2.Features(dense=dense, ids=ids, id_counts=id_counts)


def _v(model, candidates, context=None):
    """V of one request whose context is empty unless given."""
    context = context or _features()
    batch = features.batch_from_request(model.model_config, context, candidates)
    with torch.no_grad():
        return model.instance_vector(batch).numpy()


def _layer_norm(x, weight, bias, eps):
    """LN with `eps` as the config stores it: a float32."""
    eps = float(np.float32(eps))
    return (x - x.mean()) / np.sqrt(x.var() + eps) * weight + bias


class CategoricalTest(unittest.TestCase):

    def _row_index_model(self,
                         bucket_rule,
                         pooling=config_pb2.SUM,
                         max_ids=0,
                         allow_empty=False):
        """A 5-bucket field whose row r is [r, 10 r]: V shows the rows used."""
        model = _model([
            config.categorical_field("f", CANDIDATE, 5, 2, bucket_rule, pooling,
                                     max_ids, allow_empty)
        ])
        _set(model, {"fields.f.embedding": [[r, 10 * r] for r in range(5)]})
        return model

    def test_modulo_gives_a_non_negative_row_like_python(self):
        model = self._row_index_model(config_pb2.MODULO)
        ids = [7, -1, -7, INT64_MIN, INT64_MAX, 0]
        v = _v(model, [_features(ids=[i]) for i in ids])
        np.testing.assert_array_equal(
            v[:, 0], [2, 4, 3, INT64_MIN % 5, INT64_MAX % 5, 0])

    def test_identity_uses_the_id_as_the_row(self):
        model = self._row_index_model(config_pb2.IDENTITY)
        np.testing.assert_array_equal(
            _v(model, [_features(ids=[3])])[0], [3, 30])

    def test_sum_adds_the_rows(self):
        model = self._row_index_model(config_pb2.MODULO,
                                      config_pb2.SUM,
                                      max_ids=3)
        v = _v(model, [_features(ids=[1, 3, 8], id_counts=[3])])
        np.testing.assert_array_equal(v[0], [1 + 3 + 3, 70])

    def test_mean_averages_the_rows_and_no_ids_give_zeros(self):
        model = self._row_index_model(config_pb2.MODULO,
                                      config_pb2.MEAN,
                                      max_ids=4,
                                      allow_empty=True)
        v = _v(model, [
            _features(ids=[1, 4], id_counts=[2]),
            _features(id_counts=[0]),
            _features(ids=[2])
        ])
        np.testing.assert_array_equal(v, [[2.5, 25], [0, 0], [2, 20]])


class DenseFieldTest(unittest.TestCase):

    def test_order_is_non_finite_policy_transform_batch_norm_clamp(self):
        field = config.dense_field("x",
                                   CANDIDATE,
                                   1,
                                   config_pb2.REPLACE_WITH_ZERO,
                                   config_pb2.SIGNED_LOG1P,
                                   batch_norm=config.batch_norm(eps=0.25,
                                                                affine=True),
                                   clamp_min=-5,
                                   clamp_max=5)
        model = _model([field])
        # (log-value - 0.5) / sqrt(0 + 0.25) * 2 + 1
        _set(
            model, {
                "fields.x.batch_norm.running_mean": [0.5],
                "fields.x.batch_norm.running_var": [0.0],
                "fields.x.batch_norm.weight": [2.0],
                "fields.x.batch_norm.bias": [1.0]
            })
        inputs = [
            math.expm1(0.75), -math.expm1(3.0), math.nan, math.inf,
            math.expm1(5.0)
        ]
        v = _v(model, [_features(dense=[x]) for x in inputs])[:, 0]
        expected = [
            2.0,  # 0.75 -> 0.5 -> 2
            -5.0,  # -3 -> -7 -> -13, clamped after the batch norm
            -1.0,  # NaN -> 0 -> -1 -> -1
            -1.0,  # +Inf -> 0 as well
            5.0,  # 5 -> 9 -> 19, clamped
        ]
        np.testing.assert_allclose(v, expected, rtol=1e-6)

    def test_batch_norm_without_affine_has_unit_scale_and_no_shift(self):
        model = _model([
            config.dense_field("x",
                               CANDIDATE,
                               2,
                               batch_norm=config.batch_norm(0.5))
        ])
        _set(
            model, {
                "fields.x.batch_norm.running_mean": [1.0, -1.0],
                "fields.x.batch_norm.running_var": [3.5, 0.5]
            })
        np.testing.assert_allclose(
            _v(model, [_features(dense=[5.0, 1.0])])[0], [4 / 2, 2 / 1])

    def test_affine_scales_then_shifts_then_clamps(self):
        model = _model(
            [config.dense_field("x", CANDIDATE, 2, affine=True, clamp_max=4)])
        _set(model, {
            "fields.x.scale": [2.0, 3.0],
            "fields.x.shift": [1.0, -1.0]
        })
        np.testing.assert_allclose(
            _v(model, [_features(dense=[1.0, 2.0])])[0], [3.0, 4.0])


class InputNormTest(unittest.TestCase):

    def test_an_input_norm_replaces_only_its_fields_slice(self):
        fields = [
            config.dense_field("a", CONTEXT, 1),
            config.dense_field("b", CANDIDATE, 2),
            config.dense_field("c", CANDIDATE, 2)
        ]
        model = _model(
            fields, input_norms=[config.input_norm("ab", ["a", "b"], eps=0.5)])
        _set(
            model, {
                "input_norms.ab.weight": [1.0, 2.0, 3.0],
                "input_norms.ab.bias": [0.0, 0.0, 1.0]
            })
        v = _v(model, [_features(dense=[4.0, 7.0, 8.0, 9.0])],
               context=_features(dense=[1.0]))
        expected_ab = _layer_norm(np.array([1.0, 4.0, 7.0]), [1, 2, 3],
                                  [0, 0, 1], 0.5)
        np.testing.assert_allclose(v[0], list(expected_ab) + [8.0, 9.0])

    def test_layer_norm_is_torchs_with_biased_variance(self):
        x = torch.randn(4, 7, dtype=torch.float64)
        weight = torch.randn(7, dtype=torch.float64)
        bias = torch.randn(7, dtype=torch.float64)
        np.testing.assert_allclose(
            reference.layer_norm(x, weight, bias, 1e-3),
            torch.nn.functional.layer_norm(x, (7,), weight, bias, 1e-3))

    def test_field_layer_norm_normalizes_each_field_on_its_own(self):
        fields = [
            config.dense_field("a", CANDIDATE, 2),
            config.dense_field("b", CANDIDATE, 3)
        ]
        model = _model(fields,
                       input_norm=config_pb2.FIELD_LAYER_NORM,
                       input_norm_eps=1e-5)
        v = torch.tensor([[1.0, 3.0, 10.0, 20.0, 60.0]], dtype=torch.float64)
        with torch.no_grad():
            normalized = model.masknet.input_norm(v).numpy()[0]
        np.testing.assert_allclose(
            normalized[:2], _layer_norm(np.array([1.0, 3.0]), 1, 0, 1e-5))
        np.testing.assert_allclose(
            normalized[2:], _layer_norm(np.array([10.0, 20.0, 60.0]), 1, 0,
                                        1e-5))


class MaskNetWiringTest(unittest.TestCase):
    """The blocks, serial and parallel, against the formulas in numpy."""

    def _model(self, mode, mask_input):
        fields = [
            config.dense_field("a", CONTEXT, 3),
            config.dense_field("b", CANDIDATE, 3)
        ]
        blocks = [
            config.mask_block(4, aggregation_size=5, hidden_bias=True),
            config.mask_block(5,
                              aggregation_size=3,
                              activation=config_pb2.ACTIVATION_NONE,
                              input_norm=config_pb2.LAYER_NORM,
                              input_norm_eps=1e-3)
        ]
        model = _model(fields,
                       blocks,
                       mode,
                       input_norm=config_pb2.LAYER_NORM,
                       input_norm_eps=0.1,
                       mask_input=mask_input)
        fixtures.randomize_weights(model, np.random.default_rng(1))
        return model

    @staticmethod
    def _block(w, k, net, mask_input, relu, block_norm_eps=None):

        def p(name):
            return w[f"masknet.blocks.{k}.{name}"]

        x = net
        if block_norm_eps is not None:
            x = _layer_norm(net, p("input_norm.weight"), p("input_norm.bias"),
                            block_norm_eps)
        a = np.maximum(
            p("mask.aggregation.weight") @ mask_input +
            p("mask.aggregation.bias"), 0)
        mask = p("mask.projection.weight") @ a + p("mask.projection.bias")
        h = p("hidden.weight") @ (x * mask)
        if f"masknet.blocks.{k}.hidden.bias" in w:
            h = h + p("hidden.bias")
        y = _layer_norm(h, p("layer_norm.weight"), p("layer_norm.bias"), 1e-5)
        return np.maximum(y, 0) if relu else y

    def _check(self, mode, mask_input):
        model = self._model(mode, mask_input)
        w = {name: t.numpy() for name, t in model.state_dict().items()}
        v = np.array([0.5, -1.0, 2.0, 0.1, 3.0, -2.0])
        vn = _layer_norm(v, w["masknet.input_norm.weight"],
                         w["masknet.input_norm.bias"], 0.1)
        mask_v = vn if mask_input == config_pb2.MASK_INPUT_NORMALIZED else v
        y1 = self._block(w, 0, vn, mask_v, relu=True)
        if mode == config_pb2.SERIAL:
            expected = self._block(w,
                                   1,
                                   y1,
                                   mask_v,
                                   relu=False,
                                   block_norm_eps=1e-3)
        else:
            expected = np.concatenate([
                y1,
                self._block(w, 1, vn, mask_v, relu=False, block_norm_eps=1e-3)
            ])
        with torch.no_grad():
            actual = model.masknet(torch.from_numpy(v[None, :]))[0].numpy()
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)

    def test_serial_chains_outputs_and_masks_always_read_v(self):
        self._check(config_pb2.SERIAL, config_pb2.MASK_INPUT_RAW)

    def test_parallel_concatenates_blocks_that_all_read_v(self):
        self._check(config_pb2.PARALLEL, config_pb2.MASK_INPUT_RAW)

    def test_normalized_mask_input_reads_the_shared_input_norm(self):
        self._check(config_pb2.SERIAL, config_pb2.MASK_INPUT_NORMALIZED)
        self._check(config_pb2.PARALLEL, config_pb2.MASK_INPUT_NORMALIZED)

    def test_reduction_factor_sets_the_aggregation_tensor_shapes(self):
        fields = [config.dense_field("a", CANDIDATE, 6)]
        blocks = [
            config.mask_block(4,
                              reduction_factor=0.5,
                              reduction_base=config_pb2.MASKED_INPUT_WIDTH),
            config.mask_block(4,
                              reduction_factor=0.5,
                              reduction_base=config_pb2.MASK_INPUT_WIDTH)
        ]
        state = _model(fields, blocks, config_pb2.SERIAL).state_dict()
        # Block 1 masks y0 (m = 4): MASKED_INPUT_WIDTH would give t = 2;
        # MASK_INPUT_WIDTH gives 3.
        self.assertEqual(
            list(state["masknet.blocks.0.mask.aggregation.weight"].shape),
            [3, 6])
        self.assertEqual(
            list(state["masknet.blocks.1.mask.aggregation.weight"].shape),
            [3, 6])
        self.assertEqual(
            list(state["masknet.blocks.1.mask.projection.weight"].shape),
            [4, 3])


class TopTest(unittest.TestCase):

    def test_dense_layer_is_activation_of_batch_norm_of_affine_map(self):
        fields = [config.dense_field("a", CANDIDATE, 2)]
        mlp = [
            config.dense_layer(2,
                               batch_norm=config.batch_norm(eps=0.5,
                                                            affine=True))
        ]
        model = _model(fields, mlp=mlp)
        _set(
            model, {
                "mlp.0.weight": [[1.0, 2.0], [-1.0, 0.0]],
                "mlp.0.bias": [0.5, 0.0],
                "mlp.0.batch_norm.running_mean": [0.5, 1.0],
                "mlp.0.batch_norm.running_var": [3.5, 0.5],
                "mlp.0.batch_norm.weight": [2.0, 1.0],
                "mlp.0.batch_norm.bias": [0.0, 0.0]
            })
        with torch.no_grad():
            y = model.mlp(torch.tensor([[1.0, 1.0]],
                                       dtype=torch.float64))[0].numpy()
        # [3.5, -1] -> BN [(3.5 - 0.5) / 2 * 2, (-1 - 1) / 1] = [3, -2]
        # -> ReLU [3, 0]
        np.testing.assert_allclose(y, [3.0, 0.0])

    def _constant_logit_model(self, logit, rate):
        tasks = [
            config.task_head("plain"),
            config.task_head("sampled", negative_sampling_rate=rate)
        ]
        model = _model([config.dense_field("a", CANDIDATE, 2)], tasks=tasks)
        _set(
            model, {
                "tasks.plain.0.weight": [[0.0, 0.0]],
                "tasks.plain.0.bias": [logit],
                "tasks.sampled.0.weight": [[0.0, 0.0]],
                "tasks.sampled.0.bias": [logit]
            })
        return model

    def test_calibration_for_negative_sampling(self):
        model = self._constant_logit_model(math.log(3), 0.25)  # p = 0.75
        with torch.no_grad():
            scores = model(_features(),
                           [_features(dense=[1.0, 2.0])])[0].numpy()
        # p' = p r / (1 - p + p r) = 0.1875 / 0.4375
        np.testing.assert_allclose(scores, [0.75, 3 / 7])

    def test_calibration_adds_log_r_to_the_logit(self):
        model = self._constant_logit_model(0.0, 0.1)
        with torch.no_grad():
            scores = model(_features(),
                           [_features(dense=[1.0, 2.0])])[0].numpy()
        np.testing.assert_allclose(scores,
                                   [0.5, 1 / (1 + math.exp(-math.log(0.1)))])


class ModuleTest(unittest.TestCase):

    def _every_option_model(self):
        fields = [
            config.dense_field("type", CONTEXT, 2, affine=True),
            config.dense_field("d",
                               CANDIDATE,
                               2,
                               batch_norm=config.batch_norm(affine=True)),
            config.dense_field("e",
                               CANDIDATE,
                               2,
                               batch_norm=config.batch_norm()),
            config.categorical_field("c", CANDIDATE, 7, 3),
        ]
        blocks = [
            config.mask_block(4,
                              aggregation_size=3,
                              hidden_bias=True,
                              input_norm=config_pb2.LAYER_NORM),
            config.mask_block(4,
                              aggregation_size=3,
                              input_norm=config_pb2.FIELD_LAYER_NORM)
        ]
        return _model(
            fields,
            blocks,
            input_norm=config_pb2.FIELD_LAYER_NORM,
            mlp=[config.dense_layer(3, batch_norm=config.batch_norm())],
            tasks=[config.task_head("click", [2])],
            input_norms=[config.input_norm("de", ["d", "e"])])

    def test_state_dict_keys_are_the_format_tensor_names(self):

        def block(k, *names):
            return [f"masknet.blocks.{k}.{name}" for name in names]

        expected = [
            "fields.type.scale",
            "fields.type.shift",
            "fields.d.batch_norm.running_mean",
            "fields.d.batch_norm.running_var",
            "fields.d.batch_norm.weight",
            "fields.d.batch_norm.bias",
            "fields.e.batch_norm.running_mean",
            "fields.e.batch_norm.running_var",
            "fields.c.embedding",
            "input_norms.de.weight",
            "input_norms.de.bias",
            *[
                f"masknet.input_norm.{f}.{p}" for f in ("type", "d", "e", "c")
                for p in ("weight", "bias")
            ],
            *block(0, "input_norm.weight", "input_norm.bias",
                   "mask.aggregation.weight", "mask.aggregation.bias",
                   "mask.projection.weight", "mask.projection.bias",
                   "hidden.weight", "hidden.bias", "layer_norm.weight",
                   "layer_norm.bias"),
            *[
                f"masknet.blocks.1.input_norm.{f}.{p}"
                for f in ("type", "d", "e", "c")
                for p in ("weight", "bias")
            ],
            *block(1, "mask.aggregation.weight", "mask.aggregation.bias",
                   "mask.projection.weight", "mask.projection.bias",
                   "hidden.weight", "layer_norm.weight", "layer_norm.bias"),
            "mlp.0.weight",
            "mlp.0.bias",
            "mlp.0.batch_norm.running_mean",
            "mlp.0.batch_norm.running_var",
            "tasks.click.0.weight",
            "tasks.click.0.bias",
            "tasks.click.1.weight",
            "tasks.click.1.bias",
        ]
        self.assertEqual(sorted(self._every_option_model().state_dict()),
                         sorted(expected))

    def test_fields_named_like_module_attributes_work(self):
        model = _model([
            config.dense_field("type", CANDIDATE, 2),
            config.categorical_field("training", CANDIDATE, 3, 2)
        ])
        model.eval()
        self.assertIsInstance(model.fields["type"], reference.DenseFieldEncoder)
        self.assertIn("fields.training.embedding", model.state_dict())

    def test_context_features_are_shared_by_all_candidates(self):
        model = self._every_option_model()
        fixtures.randomize_weights(model, np.random.default_rng(2))
        context = _features(dense=[0.3, -0.2])
        candidates = [
            _features(dense=[1.0, 2.0, 3.0, 4.0], ids=[i]) for i in range(3)
        ]
        with torch.no_grad():
            together = model(context, candidates)
            alone = torch.cat([model(context, [c]) for c in candidates])
        np.testing.assert_allclose(together, alone, rtol=1e-12)

    def test_float32_agrees_with_float64(self):
        model = self._every_option_model()
        fixtures.randomize_weights(model, np.random.default_rng(3))
        context = _features(dense=[0.3, -0.2])
        candidates = [
            _features(dense=[1.0, 2.0, 3.0, 4.0], ids=[i]) for i in range(5)
        ]
        with torch.no_grad():
            in_float64 = model(context, candidates)
            in_float32 = model.float()(context, candidates)
        self.assertEqual(in_float32.dtype, torch.float32)
        np.testing.assert_allclose(in_float32, in_float64, atol=1e-5)

    def test_no_candidates_give_an_empty_answer(self):
        scores = self._every_option_model()(_features(dense=[0.3, -0.2]), [])
        self.assertEqual(list(scores.shape), [0, 1])


if __name__ == "__main__":
    unittest.main()
