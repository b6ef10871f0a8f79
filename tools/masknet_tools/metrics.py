"""Ranking metrics."""

import numpy as np


def roc_auc(labels, scores):
    """The area under the ROC curve: P(positive's score > negative's score).

    Ties count one half (the Mann-Whitney U statistic with average ranks).

    Args:
      labels: array-like of 0/1 (or booleans).
      scores: array-like of the same length.

    Raises:
      ValueError: the labels are not all 0/1, or lack positives or negatives.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    positive = labels == 1
    num_positive, num_negative = positive.sum(), (~positive).sum()
    if num_positive == 0 or num_negative == 0:
        raise ValueError("AUC needs both positive and negative labels")
    _, inverse, counts = np.unique(scores,
                                   return_inverse=True,
                                   return_counts=True)
    # The 1-based rank of each tie group's last element, then its average.
    last_rank = np.cumsum(counts)
    average_rank = last_rank - (counts - 1) / 2
    ranks = average_rank[inverse]
    u = ranks[positive].sum() - num_positive * (num_positive + 1) / 2
    return float(u / (num_positive * num_negative))
