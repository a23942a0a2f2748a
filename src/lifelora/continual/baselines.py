"""Non-LLM rows of a continual next-item table, on the same tested users as the strategies, ranked over
the whole catalogue: the most popular items, counted over everything a model after block t may have seen
(every interaction of the blocks up to t but block t's held-out validation and test targets), and SASRec
evolving with the blocks as the adapters do (`lens.periods.SequenceLenses`, mode finetune: trained on D1,
then each block goes on from the last one's lens on that block's active users).
Computed once per run (`baselines/<name>/block-<t>.json` and its ranked outcomes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lifelora.data.sequential import block_leave_one_out
from lifelora.io import write_json, write_parquet
from lifelora.metrics.ranking import ranking_metrics, target_ranks

BASELINES = ("popularity", "sasrec")


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


def evaluate_baselines(stream, run_dir: Path, log=print) -> None:
    """Each of `continual.baselines` after each block on that block's tested users (once per run)."""
    for name in stream.cfg.continual.baselines:
        directory = baseline_dir(run_dir, name)
        score = _popularity if name == "popularity" else _sasrec(stream, directory, log)
        for period in range(stream.n_periods):
            path = directory / f"block-{period}.json"
            if path.is_file():
                continue
            samples = stream.subset(period, "test")
            ranks = target_ranks(score(stream, period, samples), samples.target)
            write_parquet(
                directory / f"ranked_block-{period}.parquet",
                pl.DataFrame({"user_idx": samples.user_idx, "rank": ranks}),
            )
            metrics = ranking_metrics(ranks, ks=tuple(stream.cfg.eval.ks))
            write_json(path, {"model": name, "block": period, **metrics})
            log(f"{name} on block {period}: ndcg@10 {ranking_metrics(ranks, ks=(10,))['ndcg@10']:.4f}")


def _popularity(stream, period: int, samples) -> np.ndarray:
    counts = seen_counts(stream, period).astype(np.float64)
    return np.broadcast_to(counts, (len(samples), counts.size))


def _sasrec(stream, directory: Path, log):
    """Scores of SASRec after the asked block, evolving block by block (each trained once, then loaded)."""
    from lifelora.lens.periods import SequenceLenses

    named = stream.task.lens_from_config(stream.cfg.continual.baseline_sasrec)
    lenses = SequenceLenses(stream.data, stream.periods, "finetune", named, directory, log)
    return lambda stream, period, samples: lenses.at(period).scores(stream.data, samples)
