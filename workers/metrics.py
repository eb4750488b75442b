"""Validation and test metrics: accuracy (single-label) and macro-F1 (multi-label).

Pure functions over numpy arrays; the training loop turns logits into predictions and calls these.
A multi-label prediction is positive when its logit is > 0, i.e. sigmoid(logit) > 0.5.
"""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """Fraction of examples whose predicted class equals the label; pred, y: (n,) ints."""
    pred = np.asarray(pred).reshape(-1)  # (n,)
    y = np.asarray(y).reshape(-1)  # (n,)
    if pred.shape != y.shape:
        raise ValueError(f"accuracy: {pred.shape[0]} predictions for {y.shape[0]} labels")
    if y.size == 0:
        return float("nan")
    return float(np.mean(pred == y))


def macro_f1(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over labels of F1 = 2 tp / (2 tp + fp + fn); pred, y: (n, c) in {0, 1}.

    A label that is neither present nor predicted in any example (tp + fp + fn = 0) says nothing
    about the model and is left out of the mean; if that holds for every label the score is 1.0
    (nothing to find, nothing falsely found).
    """
    pred = np.asarray(pred).astype(bool)  # (n c)
    y = np.asarray(y) > 0.5  # (n c)
    if pred.shape != y.shape or pred.ndim != 2:
        raise ValueError(f"macro_f1: predictions {pred.shape} do not match labels {y.shape}")
    tp = np.sum(pred & y, axis=0)  # (c,)
    fp = np.sum(pred & ~y, axis=0)  # (c,)
    fn = np.sum(~pred & y, axis=0)  # (c,)
    denom = 2 * tp + fp + fn  # (c,)
    seen = denom > 0
    if not np.any(seen):
        return 1.0
    return float(np.mean(2 * tp[seen] / denom[seen]))


def metric_from_logits(logits: np.ndarray, y: np.ndarray, *, multilabel: bool) -> float:
    """Accuracy of argmax(logits) for single-label tasks, macro-F1 of logits > 0 for multi-label.

    logits: (n d_output); y: (n,) class ids, or (n d_output) 0/1 labels when multilabel.
    """
    logits = np.asarray(logits)  # (n d_output)
    if multilabel:
        return macro_f1(logits > 0.0, y)
    return accuracy(np.argmax(logits, axis=-1), y)


MAJORITY_BASELINE = "majority baseline (train's most frequent class, or each label's majority value, scored on the split)"


def majority_baseline(train_y: np.ndarray, y: np.ndarray, *, multilabel: bool = False) -> float:
    """The task metric of always answering what is most frequent in train, scored on `y`: the share
    of `y` in train's most frequent class (single-label), or the macro-F1 of predicting each label's
    train-majority value (multi-label). The one majority baseline `s4op data info` and `s4op train`
    print (`MAJORITY_BASELINE` names it). train_y, y: (n,) class ids or (n c) 0/1 labels."""
    train_y, y = np.asarray(train_y), np.asarray(y)
    if y.size == 0 or train_y.size == 0:
        return float("nan")
    if multilabel:
        pred = np.broadcast_to(train_y.mean(axis=0) > 0.5, y.shape)  # (n c)
        return macro_f1(pred, y)
    values, counts = np.unique(train_y, return_counts=True)
    return float(np.mean(y == values[np.argmax(counts)]))
