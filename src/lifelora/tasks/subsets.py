"""Fixed seeded subsets of rows, the same for every run with the same seed (few-shot training sets,
evaluated users)."""

from __future__ import annotations

import numpy as np

from lifelora.errors import LifeloraError


def subset_rows(n_rows: int, n: int | None, seed: int) -> np.ndarray:
    """Positions of a fixed random subset of `n` of `n_rows` rows (all when n is None or larger),
    in their original order."""
    if n is None or n >= n_rows:
        return np.arange(n_rows)
    if n < 1:
        raise LifeloraError(f"subset size must be at least 1, got {n}")
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=n, replace=False))
