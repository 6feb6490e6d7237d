"""Average precision of scores for binary labels, as sklearn's average_precision_score and
torchmetrics' binary_average_precision compute it: the sum over distinct scores s, from the
highest, of (recall(>= s) - recall(> s)) * precision(>= s); items with equal scores enter together."""

from __future__ import annotations

import numpy as np


def average_precision(scores, labels) -> float:
    """scores and labels of one length (labels boolean or 0/1); at least one positive."""
    scores, labels = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    positives = labels.sum()
    if positives == 0:
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_pos = np.cumsum(labels)[last_of_each_score]
    precision = true_pos / (last_of_each_score + 1)
    recall = true_pos / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))
