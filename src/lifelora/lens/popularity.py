"""The most-popular baseline on the leave-one-out next-item samples: the floor a sequential lens must
clear. Items are scored by how often they occur among the training interactions, the same list for
every user (less what the user has seen, in the seen-removed metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples, leave_one_out
from lifelora.io import write_json, write_yaml
from lifelora.lens.base import seen_and_users
from lifelora.metrics.full_ranking import evaluate_split


def training_item_counts(data: PreparedData) -> np.ndarray:
    """[n_items] interaction counts over every user's sequence except its last two interactions (the
    validation and test targets), so neither held-out item leaks into the scores."""
    lengths = data.users["seq_len"].to_numpy().astype(np.int64)
    position = np.arange(data.sequences.height) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    training = position < np.repeat(lengths - 2, lengths)
    items = data.sequences["item_idx"].to_numpy()[training]
    return np.bincount(items, minlength=data.items.height).astype(np.int64)


def popularity_scorer(data: PreparedData) -> Callable[[NextItemSamples], np.ndarray]:
    """A score function for `lens.next_item`: every sample gets the training counts as scores."""
    counts = training_item_counts(data).astype(np.float32)

    def score(samples: NextItemSamples) -> np.ndarray:
        return np.broadcast_to(counts, (len(samples), counts.size))

    return score


def run_popularity(
    data: PreparedData, run_dir: Path, ks: Sequence[int] = (5, 10, 20), top_k: int = 100
) -> dict:
    """Evaluate the baseline on the valid and test targets; writes config.yaml, metrics.json and
    ranked_{valid,test}.parquet into `run_dir`."""
    start = time.perf_counter()
    config = {"kind": "popularity", "dataset": data.name, "ks": list(ks), "top_k": top_k}
    write_yaml(run_dir / "config.yaml", config | {"fingerprint": data.meta["fingerprint"]})
    score = popularity_scorer(data)
    metrics = {
        split: evaluate_split(score, *seen_and_users(data), leave_one_out(data, split), ks, top_k, run_dir)
        for split in ("valid", "test")
    }
    result = {**config, "seconds": round(time.perf_counter() - start, 1), "metrics": metrics}
    write_json(run_dir / "metrics.json", result)
    return result
