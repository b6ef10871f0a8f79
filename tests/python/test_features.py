"""Tests of masknet_tools.features: request validation as the server does it."""

import math
import unittest

import numpy as np

from masknet_tools import config
from masknet_tools import features
from masknet_tools.protos import config_pb2
from masknet_tools.protos import ranker_pb2

CONTEXT, CANDIDATE = config_pb2.CONTEXT, config_pb2.CANDIDATE


def _schema():
    """Context: u (dense 2), g (categorical).

    Candidate: x (dense 1, NaN allowed), t (0-3 ids), k (IDENTITY, 4 rows).
    """
    return config_pb2.ModelConfig(fields=[
        config.dense_field("u", CONTEXT, 2),
        config.categorical_field("g", CONTEXT, 10, 2),
        config.dense_field("x", CANDIDATE, 1, config_pb2.REPLACE_WITH_ZERO),
        config.categorical_field("t",
                                 CANDIDATE,
                                 10,
                                 2,
                                 pooling=config_pb2.MEAN,
                                 max_ids=3,
                                 allow_empty=True),
        config.categorical_field(
            "k", CANDIDATE, 4, 2, bucket_rule=config_pb2.IDENTITY),
    ])


def _features(dense=(), ids=(), id_counts=()):
    return ranker_pb2.Features(dense=dense, ids=ids, id_counts=id_counts)


class BatchFromRequestTest(unittest.TestCase):

    def test_context_values_are_repeated_for_every_candidate(self):
        batch = features.batch_from_request(_schema(), _features(
            [1.5, 2.5], [7]), [
                _features([0.5], [1, 2, 3], [2, 1]),
                _features([math.nan], [3], [0, 1])
            ])
        self.assertEqual(batch.size, 2)
        np.testing.assert_array_equal(batch.dense["u"],
                                      [[1.5, 2.5], [1.5, 2.5]])
        np.testing.assert_array_equal(batch.ids["g"], [[7], [7]])
        np.testing.assert_array_equal(batch.counts["t"], [2, 0])
        np.testing.assert_array_equal(batch.ids["t"][0], [1, 2])
        np.testing.assert_array_equal(batch.ids["k"], [[3], [3]])
        self.assertTrue(math.isnan(batch.dense["x"][1, 0]))

    def test_empty_id_counts_mean_one_id_per_field(self):
        batch = features.batch_from_request(_schema(), _features([0, 0], [7]),
                                            [_features([0.5], [4, 2])])
        np.testing.assert_array_equal(batch.counts["t"], [1])
        np.testing.assert_array_equal(batch.ids["t"], [[4]])
        np.testing.assert_array_equal(batch.ids["k"], [[2]])

    def test_make_features_is_the_inverse(self):
        schema = _schema()
        made = features.make_features(schema, CANDIDATE, {
            "x": [0.25],
            "t": [],
            "k": [3]
        })
        self.assertEqual(made, _features([0.25], [3], [0, 1]))
        made = features.make_features(schema, CANDIDATE, {
            "x": [0.25],
            "t": [5],
            "k": [3]
        })
        self.assertEqual(made, _features([0.25], [5, 3]))
        made = features.make_features(schema,
                                      CANDIDATE, {
                                          "x": [0.25],
                                          "t": [5],
                                          "k": [3]
                                      },
                                      explicit_counts=True)
        self.assertEqual(made, _features([0.25], [5, 3], [1, 1]))


class ValidationTest(unittest.TestCase):

    def assertRejected(self, candidate, message, context=None):
        with self.assertRaisesRegex(features.RequestError, message):
            features.batch_from_request(_schema(), context or
                                        _features([0, 0], [1]),
                                        [_features([0.5], [1, 2]), candidate])

    def test_wrong_number_of_dense_values_names_the_candidate(self):
        self.assertRejected(_features([0.5, 1.0], [1, 2]),
                            "candidate 1: 2 dense values, expected 1")

    def test_wrong_number_of_id_counts(self):
        self.assertRejected(_features([0.5], [1, 2], [1]),
                            "candidate 1: 1 id_counts, expected 2")

    def test_id_counts_that_do_not_sum_to_the_ids(self):
        self.assertRejected(_features([0.5], [1, 2], [2, 1]),
                            "2 ids, but id_counts sum to 3")

    def test_too_many_ids(self):
        self.assertRejected(_features([0.5], [1, 2, 3, 4, 1], [4, 1]),
                            "field 't' has 4 ids, at most 3")

    def test_no_ids_where_not_allowed(self):
        self.assertRejected(_features([0.5], [1], [1, 0]),
                            "field 'k' has no ids")

    def test_identity_id_out_of_range(self):
        self.assertRejected(_features([0.5], [1, 4]),
                            r"field 'k' has an id outside \[0, 4\)")
        self.assertRejected(_features([0.5], [1, -1]),
                            "field 'k' has an id outside")

    def test_non_finite_value_of_a_rejecting_field_names_the_context(self):
        self.assertRejected(_features([0.5], [1, 2]),
                            "context: field 'u' has a NaN",
                            context=_features([0, math.inf], [1]))


if __name__ == "__main__":
    unittest.main()
