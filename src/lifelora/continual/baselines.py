"""Non-LLM rows of a continual next-item table, on the same tested users as the strategies: the most
popular items, counted over everything a model after block t may have seen (every interaction of the
blocks up to t but block t's held-out validation and test targets), ranked over the whole catalogue.
Seed-independent, so computed once per run (`baselines/<name>/block-<t>.json` and its ranked outcomes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lifelora.data.sequential import block_leave_one_out
from lifelora.io import write_json, write_parquet
from lifelora.metrics.ranking import ranking_metrics, target_ranks

BASELINES = ("popularity",)


def baseline_dir(run_dir: Path, name: str) -> Path:
    return run_dir / "baselines" / name


def seen_counts(stream, period: int) -> np.ndarray:
    """[n_items] interaction counts of the blocks up to `period`, its held-out targets left out."""
    data, periods = stream.data, stream.periods
    offset = data.users["seq_offset"].to_numpy().astype(np.int64)
    keep = periods <= period
    for split in ("valid", "test"):
        held = block_leave_one_out(data, periods, period, split)
        keep[offset[held.user_idx] + held.position] = False
    items = data.sequences["item_idx"].to_numpy()[keep]
    return np.bincount(items, minlength=data.items.height)


def evaluate_popularity(stream, run_dir: Path, log=print) -> None:
    """The most-popular ranking after each block on that block's tested users (once per run)."""
    directory = baseline_dir(run_dir, "popularity")
    ks = tuple(stream.cfg.eval.ks)
    for period in range(stream.n_periods):
        path = directory / f"block-{period}.json"
        if path.is_file():
            continue
        samples = stream.subset(period, "test")
        counts = seen_counts(stream, period).astype(np.float64)
        ranks = target_ranks(np.broadcast_to(counts, (len(samples), counts.size)), samples.target)
        write_parquet(
            directory / f"ranked_block-{period}.parquet",
            pl.DataFrame({"user_idx": samples.user_idx, "rank": ranks}),
        )
        write_json(path, {"model": "popularity", "block": period, **ranking_metrics(ranks, ks=ks)})
        log(f"popularity on block {period}: ndcg@10 {ranking_metrics(ranks, ks=(10,))['ndcg@10']:.4f}")
