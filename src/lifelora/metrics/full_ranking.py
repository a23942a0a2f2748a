"""Full-ranking next-item evaluation shared by the sequential lenses and their baselines: every sample's
target ranked among all catalogue items, with the user's already-seen items kept in and removed, and the
per-user top-K lists kept for inspection and for the LLM stages that re-rank them.

It reads no dataset: the caller gives the scores, which items each sample's user has seen
(`data.sequential.seen_before`) and the users' raw ids. Samples are any object with `user_idx`,
`position`, `target`, `split`, `subset(rows)` and a length (`data.sequential.NextItemSamples`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lifelora.errors import LifeloraError
from lifelora.io import write_parquet
from lifelora.metrics.ranking import ranking_metrics, target_ranks, top_k_items

ScoreFn = Callable[[Any], np.ndarray]  # samples -> [n, n_items] scores, higher is better
SeenFn = Callable[[Any], np.ndarray]  # samples -> [n, n_items] bool: the items each user saw before
VARIANTS = ("all_items", "seen_removed")  # the metric groups: every item ranked, or seen items removed


def rank_samples(
    score: ScoreFn, seen: SeenFn, users: np.ndarray, samples: Any, top_k: int | None, chunk: int = 1024
) -> pl.DataFrame:
    """One row per sample: user (`users[user_idx]`), target, the target's 0-based rank among all items (`rank`) and among
    the items the user has not seen before it (`rank_seen_removed`), and both top-`top_k` lists (none
    when `top_k` is None: validation during training needs the ranks only).

    Scored `chunk` samples at a time, so memory stays at chunk × n_items. Ties count pessimistically
    (lifelora.metrics.ranking); a seen item equal to the target is never removed from its ranking."""
    if len(samples) == 0:
        raise LifeloraError(f"no {samples.split} samples to rank")
    parts = []
    for start in range(0, len(samples), chunk):
        part = samples.subset(np.arange(start, min(start + chunk, len(samples))))
        scores = score(part)
        before = seen(part)
        found = {
            "rank": target_ranks(scores, part.target),
            "rank_seen_removed": target_ranks(scores, part.target, before),
        }
        if top_k is not None:
            masked = scores.copy()
            masked[before] = -np.inf
            found["top_k"] = top_k_items(scores, top_k).astype(np.int32)
            found["top_k_seen_removed"] = top_k_items(masked, top_k).astype(np.int32)
        parts.append(found)
    columns = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return pl.DataFrame(
        {
            "user_idx": samples.user_idx,
            "user": users[samples.user_idx],
            "position": samples.position,
            "target": samples.target,
        }
        | {key: list(value) if value.ndim == 2 else value for key, value in columns.items()}
    )


def split_metrics(ranked: pl.DataFrame, ks: Sequence[int]) -> dict[str, dict]:
    """Full-ranking metrics of a `rank_samples` frame: {"all_items": {...}, "seen_removed": {...}}."""
    return {
        "all_items": ranking_metrics(ranked["rank"].to_numpy(), ks),
        "seen_removed": ranking_metrics(ranked["rank_seen_removed"].to_numpy(), ks),
    }


def evaluate_split(
    score: ScoreFn,
    seen: SeenFn,
    users: np.ndarray,
    samples: Any,
    ks: Sequence[int],
    top_k: int,
    out_dir: Path | None = None,
) -> dict[str, dict]:
    """Metrics of one split; with `out_dir`, its ranked lists go to `out_dir/ranked_SPLIT.parquet`."""
    ranked = rank_samples(score, seen, users, samples, top_k)
    if out_dir is not None:
        write_parquet(out_dir / f"ranked_{samples.split}.parquet", ranked)
    return split_metrics(ranked, ks)
