"""Single-target next-item metrics (leave-one-out): the 0-based rank of each held-out item, then HR, NDCG,
recall and MRR at cut-offs, as SASRec/TIGER papers report them.

Ties are counted pessimistically: the target ranks below every other item with the same score, so a
model that scores everything alike gets the worst rank, not an average one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lifelora.errors import LifeloraError

NOT_FOUND = np.iinfo(np.int64).max  # the rank of a target missing from a top-K list


def _targets(targets: np.ndarray, n: int) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64).ravel()
    if targets.shape[0] != n:
        raise LifeloraError(f"ranking: {n} score rows but {targets.shape[0]} targets")
    if n == 0:
        raise LifeloraError("ranking: no targets to rank")
    return targets


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """0-based rank of each row's target among all items ([n, n_items] scores, higher is better).

    `exclude` = (rows, items) pairs removed from the ranking (their score set to -inf), e.g. the items a
    user has already seen; a pair naming the row's own target is ignored, the target is never removed.
    Ties: pessimistic (every other item with the target's score counts as ranked above it)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise LifeloraError(f"ranking: scores must be [n, n_items], got shape {scores.shape}")
    targets = _targets(targets, scores.shape[0])
    if targets.min() < 0 or targets.max() >= scores.shape[1]:
        raise LifeloraError(f"ranking: a target is outside the {scores.shape[1]} items")
    rows = np.arange(scores.shape[0])
    target_scores = scores[rows, targets]
    if np.isnan(target_scores).any():
        raise LifeloraError("ranking: a target's score is NaN")
    if exclude is not None:
        ex_rows, ex_items = (np.asarray(a, dtype=np.int64).ravel() for a in exclude)
        if ex_rows.shape != ex_items.shape:
            raise LifeloraError("ranking: exclude needs as many rows as items")
        n, n_items = scores.shape
        if ((ex_rows < 0) | (ex_rows >= n) | (ex_items < 0) | (ex_items >= n_items)).any():
            raise LifeloraError("ranking: an excluded (row, item) pair is outside the scores")
        keep = ex_items != targets[ex_rows]
        scores = scores.copy()
        scores[ex_rows[keep], ex_items[keep]] = -np.inf
    above = (scores > target_scores[:, None]).sum(axis=1)
    tied = (scores == target_scores[:, None]).sum(axis=1) - 1  # not the target itself
    return (above + tied).astype(np.int64)


def top_k_items(scores: np.ndarray, k: int) -> np.ndarray:
    """The `k` best items of each row, best first ([n, min(k, n_items)] item ids); equal scores go by
    item id, so the lists are deterministic (a full stable sort: seconds for thousands of users)."""
    return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k]


def ranks_from_lists(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its row's ranked list ([n, K] item ids, -1 = padding);
    `NOT_FOUND` (int64 max) where the target is not in the list."""
    ranked = np.asarray(ranked)
    if ranked.ndim != 2:
        raise LifeloraError(f"ranking: ranked lists must be [n, K], got shape {ranked.shape}")
    targets = _targets(targets, ranked.shape[0])
    hits = ranked == targets[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1), NOT_FOUND).astype(np.int64)


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = (5, 10), cutoff: int | None = None) -> dict:
    """hit@k, ndcg@k and recall@k per cut-off, MRR and the number of users, averaged over users.

    With one target per user recall@k equals hit@k (reported under both names, as papers use either).
    `mrr` is the full-ranking MRR; when the ranks come from top-K lists (`cutoff=K`, targets beyond it
    `NOT_FOUND`) the true rank of a miss is unknown, so the key is `mrr@K` and misses count 0."""
    ranks = np.asarray(ranks, dtype=np.int64).ravel()
    if ranks.size == 0:
        raise LifeloraError("ranking metrics: no users to evaluate")
    if ranks.min() < 0:
        raise LifeloraError("ranking metrics: ranks are 0-based and cannot be negative")
    if not ks or min(ks) < 1:
        raise LifeloraError(f"ranking metrics: cut-offs must be positive, got {list(ks)}")
    if cutoff is not None and max(ks) > cutoff:
        raise LifeloraError(f"ranking metrics: cut-off {max(ks)} is beyond the ranked lists' length {cutoff}")
    found = ranks < (cutoff if cutoff is not None else NOT_FOUND)
    gain = np.zeros(ranks.size)
    gain[found] = 1.0 / np.log2(ranks[found] + 2.0)
    reciprocal = np.zeros(ranks.size)
    reciprocal[found] = 1.0 / (ranks[found] + 1.0)
    metrics: dict = {}
    for k in ks:
        hit = ranks < k
        metrics[f"hit@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, gain, 0.0).mean())
        metrics[f"recall@{k}"] = metrics[f"hit@{k}"]
    metrics["mrr" if cutoff is None else f"mrr@{cutoff}"] = float(reciprocal.mean())
    metrics["users"] = int(ranks.size)
    return metrics


def metric_gains(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user value of `metric` (`hit@K` or `ndcg@K`) of a single target at 0-based `ranks` (a miss:
    `NOT_FOUND` or any rank ≥ K)."""
    name, _, k = metric.partition("@")
    if name not in ("hit", "ndcg") or not k.isdigit():
        raise LifeloraError(f"metric {metric!r}: per-user values exist for hit@K and ndcg@K only")
    ranks = np.asarray(ranks, dtype=np.int64)
    return (ranks < int(k)).astype(np.float64) if name == "hit" else ndcg_gains(ranks, int(k))


def ndcg_gains(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of a single target at 0-based `ranks` (`NOT_FOUND` or beyond k: 0): what paired
    comparisons of two models on the same users average."""
    ranks = np.asarray(ranks, dtype=np.int64)
    return np.where(ranks < k, 1.0 / np.log2(np.minimum(ranks, k) + 2.0), 0.0)
