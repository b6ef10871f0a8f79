"""Tests of masknet_tools.metrics."""

import unittest

from masknet_tools import metrics


class RocAucTest(unittest.TestCase):

    def test_perfect_and_reversed_rankings(self):
        self.assertEqual(metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]),
                         1.0)
        self.assertEqual(metrics.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]),
                         0.0)

    def test_counts_pairs_and_ties_count_one_half(self):
        # Pairs (positive, negative): (0.5, 0.2) win, (0.5, 0.5) tie,
        # (0.5, 0.9) loss, (0.8, 0.2) win, (0.8, 0.5) win, (0.8, 0.9) loss:
        # 3.5 of 6.
        self.assertAlmostEqual(
            metrics.roc_auc([1, 0, 1, 0, 0], [0.5, 0.2, 0.8, 0.5, 0.9]),
            3.5 / 6)

    def test_needs_both_labels(self):
        with self.assertRaises(ValueError):
            metrics.roc_auc([1, 1], [0.1, 0.2])
        with self.assertRaises(ValueError):
            metrics.roc_auc([0, 2], [0.1, 0.2])


if __name__ == "__main__":
    unittest.main()
