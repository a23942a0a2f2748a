"""Continual-learning metrics over an accuracy matrix R[t, j]: the score on period j's test set after
training on period t (NaN where not evaluated). Definitions follow GEM (Lopez-Paz & Ranzato 2017),
Chaudhry et al. 2018 and Avalanche.

NaN policy: ACC, BWT, FWT and the per-period terms of forgetting need every cell they name, so one NaN
makes them NaN. Only "mean over periods" summaries (`mean_over_periods`, `diagonal_mean`, `next_mean`)
and forgetting's best-past maximum (the best score that was actually observed) skip NaN cells.
"""

from __future__ import annotations

import numpy as np

from lifelora.errors import LifeloraError


def _matrix(R: np.ndarray) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise LifeloraError(
            f"continual metrics: R must be a non-empty square 2-D matrix, got shape {R.shape}"
        )
    return R


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN, without a warning, when there are none."""
    values = np.asarray(values, dtype=np.float64)
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def average_accuracy(R: np.ndarray, t: int | None = None) -> float:
    """GEM's ACC after period t (default the last): mean of R[t, j] over j <= t."""
    R = _matrix(R)
    P = R.shape[0]
    t = P - 1 if t is None else t
    if not 0 <= t < P:
        raise LifeloraError(f"continual metrics: period t={t} is outside 0..{P - 1}")
    return float(R[t, : t + 1].mean())


def diagonal(R: np.ndarray) -> np.ndarray:
    """R[t, t] for each period t: the score on the period just trained on."""
    return np.diag(_matrix(R)).copy()


def mean_over_periods(values: np.ndarray, start: int = 1) -> float:
    """NaN-skipping mean of a per-period vector from index `start` (PESO reports periods 1..P-1)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise LifeloraError(f"continual metrics: per-period values must be 1-D, got shape {values.shape}")
    return _nanmean(values[start:])


def backward_transfer(R: np.ndarray) -> float:
    """GEM BWT = 1/(P-1) * sum over j < P-1 of (R[P-1, j] - R[j, j]); NaN when P == 1."""
    R = _matrix(R)
    P = R.shape[0]
    if P == 1:
        return float("nan")
    j = np.arange(P - 1)
    return float((R[P - 1, j] - R[j, j]).mean())


def forward_transfer(R: np.ndarray, baseline: np.ndarray) -> float:
    """GEM FWT = 1/(P-1) * sum over j >= 1 of (R[j-1, j] - baseline[j]); NaN when P == 1."""
    R = _matrix(R)
    P = R.shape[0]
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (P,):
        raise LifeloraError(f"continual metrics: baseline must have length {P}, got shape {b.shape}")
    if P == 1:
        return float("nan")
    j = np.arange(1, P)
    return float((R[j - 1, j] - b[j]).mean())


def forgetting(R: np.ndarray) -> float:
    """Chaudhry et al.'s average forgetting at the end: mean over j < P-1 of
    max_{l in j..P-2} R[l, j] - R[P-1, j] (Avalanche: best past score minus current).
    The maximum skips NaN cells but needs one observed; R[P-1, j] must be present. NaN when P == 1."""
    R = _matrix(R)
    P = R.shape[0]
    if P == 1:
        return float("nan")
    terms = []
    for j in range(P - 1):
        past = R[j : P - 1, j]
        past = past[~np.isnan(past)]
        best = past.max() if past.size else np.nan
        terms.append(best - R[P - 1, j])
    return float(np.mean(terms))


def transfer_summary(R: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, float]:
    """All of the above in one dict: acc_final, diagonal_mean (periods 1..), next_mean (R[t, t+1] over
    t = 0..P-2, NaN-skipping), bwt, fwt (only when a baseline is given) and forgetting."""
    R = _matrix(R)
    summary = {
        "acc_final": average_accuracy(R),
        "diagonal_mean": mean_over_periods(diagonal(R), start=1),
        "next_mean": _nanmean(np.diag(R, k=1)),
        "bwt": backward_transfer(R),
    }
    if baseline is not None:
        summary["fwt"] = forward_transfer(R, baseline)
    summary["forgetting"] = forgetting(R)
    return summary
