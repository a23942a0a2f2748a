"""How sure an AUC is: DeLong's variance (the AUC as a two-sample U-statistic; Sun & Xu's fast form with
mid-ranks), its 95% confidence interval, and the paired test of two models scored on the same rows."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata

from lifelora.errors import LifeloraError


def _components(labels: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and its structural components: per positive the share of negatives it outranks (V10),
    per negative the share of positives that outrank it (V01); ties count one half."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = scores[labels], scores[~labels]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise LifeloraError("metrics: an AUC interval needs both positive and negative labels")
    ranks_all = rankdata(np.concatenate([pos, neg]))
    v10 = (ranks_all[:m] - rankdata(pos)) / n
    v01 = 1.0 - (ranks_all[m:] - rankdata(neg)) / m
    return float(v10.mean()), v10, v01


def _half_width(variance: float, level: float) -> float:
    return float(norm.ppf(0.5 + level / 2) * np.sqrt(max(variance, 0.0)))


def auc_interval(labels: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, low, high): DeLong's normal interval, clipped to [0, 1]."""
    auc, v10, v01 = _components(labels, scores)
    if min(len(v10), len(v01)) < 2:
        raise LifeloraError("metrics: an AUC interval needs at least two positives and two negatives")
    half = _half_width(np.var(v10, ddof=1) / len(v10) + np.var(v01, ddof=1) / len(v01), level)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def paired_auc_difference(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, level: float = 0.95
) -> dict[str, float]:
    """AUC(a) − AUC(b) on the same rows with DeLong's paired interval and two-sided p-value: the test
    of whether one model ranks better than the other, which two overlapping intervals do not decide."""
    auc_a, a10, a01 = _components(labels, scores_a)
    auc_b, b10, b01 = _components(labels, scores_b)
    contrast = np.array([1.0, -1.0])
    variance = sum(
        contrast @ np.cov(np.stack(pair)) @ contrast / len(pair[0]) for pair in ((a10, b10), (a01, b01))
    )
    diff, se = auc_a - auc_b, float(np.sqrt(max(variance, 0.0)))
    half = _half_width(variance, level)
    p_value = float(2 * norm.sf(abs(diff) / se)) if se > 0 else float(diff == 0)
    return {"difference": diff, "low": diff - half, "high": diff + half, "p_value": p_value}


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of per-user values (a hit, an NDCG gain): the normal interval of a mean over
    independent users, clipped to [0, 1]."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if len(values) < 2:
        raise LifeloraError("metrics: an interval needs at least two users")
    mean = float(values.mean())
    half = _half_width(np.var(values, ddof=1) / len(values), level)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def paired_mean_difference(
    values_a: np.ndarray, values_b: np.ndarray, level: float = 0.95
) -> dict[str, float]:
    """mean(a) − mean(b) over the same users, with the paired normal interval and two-sided p-value."""
    diff_values = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, dtype=np.float64)
    if diff_values.ndim != 1 or len(diff_values) < 2:
        raise LifeloraError("metrics: a paired difference needs the same two or more users on both sides")
    diff = float(diff_values.mean())
    variance = float(np.var(diff_values, ddof=1) / len(diff_values))
    se = float(np.sqrt(variance))
    half = _half_width(variance, level)
    p_value = float(2 * norm.sf(abs(diff) / se)) if se > 0 else float(diff == 0)
    return {"difference": diff, "low": diff - half, "high": diff + half, "p_value": p_value}
