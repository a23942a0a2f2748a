"""Ranking for one user: candidate items scored with the user's shared prompt prefix computed once, and
one instance's personalized LoRA exported as a plain PEFT adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.tasks.base import Task
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.ctr.scoring import score_candidates


def sample_candidates(data: PreparedData, user: int, n: int, seed: int) -> np.ndarray:
    """`n` random items the user never interacted with (all of them when there are fewer)."""
    unseen = data.unseen_items(user)
    return np.random.default_rng(seed).choice(unseen, size=min(n, len(unseen)), replace=False)


def popular_candidates(data: PreparedData, user: int, n: int) -> np.ndarray:
    """The `n` items with the most interactions that the user never interacted with, most popular first."""
    counts = np.bincount(data.sequences["item_idx"].to_numpy(), minlength=data.items.height)
    unseen = data.unseen_items(user)
    return unseen[np.argsort(-counts[unseen], kind="stable")[:n]]


def candidate_scores(
    task: Task, model, cfg: CTRConfig, user: int, candidates: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """P(yes) of each candidate for a user, scored with the shared prefix computed once.

    The text history is the user's most recent K items (it must not depend on the candidate for the
    prefix to be shared)."""
    if task.lens(cfg) is not None:
        raise LifeloraError(
            "recommend does not rank with a personalized adapter yet: its routing depends on each "
            "candidate, so the prompt prefix cannot be shared; use `lifelora evaluate` to score samples"
        )

    data, builder = task.data, task.builder(cfg.prompt.layout)
    row = data.users.row(user, named=True)
    length = int(row["seq_len"])
    start = max(0, length - cfg.prompt.history)
    seq = data.sequences.slice(int(row["seq_offset"]) + start, length - start)
    prefix, continuations = builder.encode_candidates(
        user, seq["item_idx"].to_numpy(), seq["rating"].to_numpy(), candidates
    )
    return score_candidates(
        model,
        prefix,
        continuations,
        task.backbone.tokenizer.pad_token_id,
        builder.answer_ids,
        batch_size=batch_size,
        precision=cfg.scoring_precision,
    )


def rank_candidates(
    task: Task, model, cfg: CTRConfig, user: int, candidates: np.ndarray, k: int, batch_size: int = 32
) -> pl.DataFrame:
    """Top-k of `candidates` for a user (`candidate_scores`), with their titles."""
    scores = candidate_scores(task, model, cfg, user, candidates, batch_size)
    titles = task.builder(cfg.prompt.layout).titles
    top = np.argsort(-scores, kind="stable")[:k]
    return pl.DataFrame(
        {
            "rank": np.arange(1, len(top) + 1),
            "item_idx": candidates[top],
            "title": [titles[int(c)] for c in candidates[top]],
            "score": scores[top],
        }
    )


def export_user(
    task: Task, model, cfg: CTRConfig, user: int, split: str, out: Path, item: int | None = None
) -> dict:
    """One instance's personalized LoRA as a plain PEFT adapter directory.

    The routing vector belongs to an instance (a user with a target item and a history), so the
    instance is the user's latest sample in `split`, or the latest one with `item` as target."""
    samples = task.data.split(split)
    titles = task.builder(cfg.prompt.layout).titles
    mask = samples["user_idx"].to_numpy() == user
    if item is not None:
        mask &= samples["item_idx"].to_numpy() == item
    rows = np.flatnonzero(mask)
    if len(rows) == 0:
        target = "" if item is None else f" with target item {titles[item]!r}"
        name = task.data.users["user"][user]
        raise LifeloraError(f"user {name!r} has no sample in the {split} split{target}")
    row = rows[-1:]  # samples are in time order: the latest
    routing = task.lens(cfg).routing(task.data, samples[row])[0]
    model.export_instance(routing, out, base_model_name=task.backbone.base_model_name)
    sample = samples.row(int(row[0]), named=True)
    return {
        "split": split,
        "row": int(row[0]),
        "item": titles[sample["item_idx"]],
        "out": str(out),
    }
