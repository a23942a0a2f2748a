"""Click-through metrics under the names the field uses: AUC, LogLoss, ACC, gAUC (scikit-learn inside)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from lifelora.errors import LifeloraError


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).ravel(), np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise LifeloraError(f"metrics: {labels.size} labels but {scores.size} scores")
    if labels.size == 0:
        raise LifeloraError("metrics: no samples to evaluate")
    if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
        raise LifeloraError("metrics: scores must be probabilities in [0, 1]")
    return labels, scores


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Per-group AUC weighted by the group's sample count; groups with one class only are skipped."""
    labels, scores = _check(labels, scores)
    groups = np.asarray(groups).ravel()
    order = np.argsort(groups, kind="stable")
    boundaries = np.flatnonzero(np.diff(groups[order])) + 1
    total, weight = 0.0, 0
    for idx in np.split(order, boundaries):
        group_labels = labels[idx]
        if group_labels.min() == group_labels.max():
            continue
        total += roc_auc_score(group_labels, scores[idx]) * idx.size
        weight += idx.size
    return total / weight if weight else float("nan")


def ctr_metrics(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    """AUC, LogLoss and ACC (threshold 0.5); gAUC when `groups` (user ids) are given."""
    labels, scores = _check(labels, scores)
    if labels.min() == labels.max():
        raise LifeloraError("metrics: AUC needs both positive and negative labels")
    metrics = {
        "AUC": float(roc_auc_score(labels, scores)),
        "LogLoss": float(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "ACC": float(accuracy_score(labels, scores > 0.5)),
    }
    if groups is not None:
        metrics["gAUC"] = float(group_auc(labels, scores, groups))
    return metrics
