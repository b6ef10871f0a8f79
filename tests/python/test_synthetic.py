"""Tests of masknet_tools.synthetic: determinism, rates, interaction labels."""

import unittest

import numpy as np
import torch

from masknet_tools import features
from masknet_tools import metrics
from masknet_tools import synthetic
from masknet_tools.protos import config_pb2

_OPTIONS = synthetic.SyntheticOptions(num_requests=500, seed=7)


def _logistic_auc(train_x, train_y, test_x, test_y):
    """Held-out AUC of a logistic regression fitted by L-BFGS."""
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-9
    x = torch.from_numpy((train_x - mean) / std)
    y = torch.from_numpy(train_y)
    weights = torch.zeros(x.shape[1] + 1,
                          dtype=torch.float64,
                          requires_grad=True)
    optimizer = torch.optim.LBFGS([weights],
                                  max_iter=200,
                                  line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(
            x @ weights[1:] + weights[0], y)
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        scores = torch.from_numpy((test_x - mean) / std) @ weights[1:]
    return metrics.roc_auc(test_y, scores.numpy())


class SyntheticTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.data = synthetic.generate(_OPTIONS)

    def test_is_deterministic_in_the_seed(self):
        again = synthetic.generate(_OPTIONS)
        for task in synthetic.TASKS:
            np.testing.assert_array_equal(again.labels[task],
                                          self.data.labels[task])
        np.testing.assert_array_equal(again.candidate["engagement_counts"],
                                      self.data.candidate["engagement_counts"])

    def test_base_rates_are_realistic(self):
        for task in synthetic.TASKS:
            with self.subTest(task):
                self.assertTrue(0.03 < self.data.labels[task].mean() < 0.3)

    def test_engagement_counts_are_heavy_tailed_and_sometimes_missing(self):
        likes = self.data.candidate["engagement_counts"][:, 0]
        self.assertGreater(np.nanmax(likes), 50 * np.nanmedian(likes))
        self.assertTrue(np.isnan(likes).any())

    def test_labels_depend_on_interactions_more_than_on_raw_features(self):
        # Raw features a linear model can use: both embeddings, country one-hot,
        # topic counts, log age, media, log counts, log follows.
        data, rows = self.data, np.arange(self.data.num_rows)
        requests = data.request_of
        topics = np.zeros((data.num_rows, _OPTIONS.num_topics))
        for slot in range(synthetic.MAX_TOPICS):
            present = slot < data.candidate["tweet_topics_count"]
            topics[rows[present], data.candidate["tweet_topics"][present,
                                                                 slot]] += 1
        raw = np.concatenate([
            data.context["viewer_embedding"][requests],
            data.candidate["author_embedding"],
            np.eye(_OPTIONS.num_countries)[data.context["viewer_country"]
                                           [requests]], topics,
            np.log1p(
                data.candidate["tweet_age_hours"]), data.candidate["has_media"],
            np.log1p(np.nan_to_num(data.candidate["engagement_counts"])),
            np.log1p(data.context["viewer_follow_count"][requests])
        ],
                             axis=1)
        interactions = np.stack(list(data.interactions.values()), axis=1)
        train, test = requests < 400, requests >= 400
        labels = data.labels["click"]
        raw_auc = _logistic_auc(raw[train], labels[train], raw[test],
                                labels[test])
        interaction_auc = _logistic_auc(interactions[train], labels[train],
                                        interactions[test], labels[test])
        self.assertGreater(interaction_auc, raw_auc + 0.08)

    def test_rank_request_carries_the_same_inputs_as_field_batch(self):
        model_config = config_pb2.ModelConfig(
            fields=synthetic.schema_fields(_OPTIONS))
        request = self.data.rank_request(3, "home_timeline")
        rows = np.flatnonzero(self.data.request_of == 3)
        self.assertEqual([c.id for c in request.candidates], rows.tolist())
        from_request = features.batch_from_rank_request(model_config, request)
        direct = self.data.field_batch(rows)
        for name in direct.dense:
            np.testing.assert_array_equal(from_request.dense[name],
                                          direct.dense[name])
        for name in direct.ids:
            np.testing.assert_array_equal(from_request.counts[name],
                                          direct.counts[name])
            for row in range(len(rows)):
                count = int(direct.counts[name][row])
                np.testing.assert_array_equal(
                    from_request.ids[name][row, :count],
                    direct.ids[name][row, :count])


if __name__ == "__main__":
    unittest.main()
