"""Training SASRec through the one training loop: a sample is one user's whole training sequence (all but
its last two items, the most recent `max_len` + 1), every position a target, in one causal pass; after
every `eval_every` epochs validation NDCG@10 over the full catalogue keeps the best weights (run_dir/lens)
and stops after `patience` validations without a better one. Then valid and test are ranked in full.

Speed on a CPU (ML-1M: ~650k target positions an epoch, each scored against all 3,883 items) comes
from three things, measured on a 2-core AVX512-BF16 machine: packing several users into one row of
`max_len` (half the transformer's positions), compiling the loss (torch.compile fuses the softmax and
layer-norm passes; about 1.5× eager) and, with `precision: auto`, bf16 autocast where it is native.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples, leave_one_out
from lifelora.errors import LifeloraError
from lifelora.io import read_json, write_json
from lifelora.lens.base import seen_and_users
from lifelora.lens.sasrec.config import SASRecConfig
from lifelora.lens.sasrec.lens import SASRecLens
from lifelora.lens.sasrec.network import id_windows
from lifelora.metrics.full_ranking import evaluate_split, rank_samples, split_metrics
from lifelora.report import plot_curve
from lifelora.run import seed_everything
from lifelora.training import train_model
from lifelora.training.hooks import TrainContext, TrainHook

SELECT_ON = ("seen_removed", "ndcg@10")  # the validation metric that picks the best epoch


class UserSequences(torch.utils.data.Dataset):
    """Every user with at least one training transition, as the last `max_len` + 1 items of its training
    sequence (ids = item_idx + 1). A sample is one user; `collate` packs a batch's sequences into as few
    rows of at most `max_len` as it can (first fit, longest first), which halves the positions the
    transformer runs over on ML-1M against one left-padded row per user.

    A batch: `users` [B]; `ids`, `positions`, `segments` [R, T] for `SASRec.forward`; `targets_at` the
    flat indices of the N positions with a next item, `targets` [N] those items (item_idx); with
    `negatives`, one uniformly sampled other item per target (the BCE loss)."""

    def __init__(
        self, data: PreparedData, max_len: int, negatives: bool = False, ends: NextItemSamples | None = None
    ):
        # the validation target sits right after the training sequence: its history is that sequence
        # (`ends`: other sequence ends, e.g. a continual period's, each sequence the items before one)
        ends = leave_one_out(data, "valid") if ends is None else ends
        ends = ends.subset(np.flatnonzero(ends.position >= 2))
        if len(ends) == 0:
            raise LifeloraError(f"{data.name}: no user has two training interactions to learn from")
        self.windows = id_windows(data, ends, max_len + 1).numpy()
        self.inputs = (self.windows > 0).sum(axis=1) - 1  # positions with a next item, per user
        self.max_len, self.n_items, self.negatives = max_len, data.items.height, negatives

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, row: int) -> int:
        return row

    def _pack(self, users: np.ndarray) -> list[list[int]]:
        rows, free = [], []
        for user in users[np.argsort(-self.inputs[users], kind="stable")]:
            need = self.inputs[user]
            fit = next((r for r, room in enumerate(free) if room >= need), None)
            if fit is None:
                fit = len(rows)
                rows.append([])
                free.append(self.max_len)
            rows[fit].append(user)
            free[fit] -= need
        return rows

    def collate(self, users: list[int]) -> dict[str, torch.Tensor]:
        rows = self._pack(np.asarray(users))
        width = max(int(self.inputs[members].sum()) for members in rows)
        ids = np.zeros((len(rows), width), np.int64)
        positions = np.zeros((len(rows), width), np.int64)
        segments = np.broadcast_to(-1 - np.arange(width), (len(rows), width)).copy()
        targets_at, targets = [], []
        for r, members in enumerate(rows):
            end = width
            for user in members:
                n = self.inputs[user]
                sequence = self.windows[user, -(n + 1) :]
                ids[r, end - n : end] = sequence[:-1]
                positions[r, end - n : end] = np.arange(self.max_len - n, self.max_len)
                segments[r, end - n : end] = user
                targets_at.append(r * width + np.arange(end - n, end))
                targets.append(sequence[1:] - 1)
                end -= n
        batch = {
            "users": torch.as_tensor(users),
            "ids": torch.from_numpy(ids),
            "positions": torch.from_numpy(positions),
            "segments": torch.from_numpy(segments),
            "targets_at": torch.from_numpy(np.concatenate(targets_at)),
            "targets": torch.from_numpy(np.concatenate(targets)),
        }
        if self.negatives:
            negative = torch.randint(0, self.n_items - 1, batch["targets"].shape)
            batch["negatives"] = negative + (negative >= batch["targets"]).long()  # never the target
        return batch


def _loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], kind: str) -> torch.Tensor:
    hidden = model(batch["ids"], batch["positions"], batch["segments"])
    hidden = hidden.flatten(0, 1).index_select(0, batch["targets_at"])
    if kind == "ce":
        return F.cross_entropy(model.logits(hidden).float(), batch["targets"])
    positive = (hidden * model.item_emb(batch["targets"] + 1)).sum(-1).float()
    negative = (hidden * model.item_emb(batch["negatives"] + 1)).sum(-1).float()
    return F.binary_cross_entropy_with_logits(
        positive, torch.ones_like(positive)
    ) + F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))


def sasrec_loss(kind: str, compile: bool) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
    """The training loss `loss_fn(model, batch)`: `ce` (softmax over all items) or `bce` (one sampled
    negative), compiled when `compile` (the batch shapes vary: compiled once for dynamic shapes)."""

    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return _loss(model, batch, kind)

    return torch.compile(loss, dynamic=True) if compile else loss


class RankingValidation(TrainHook):
    """Every `eval_every` epochs (and after the last): validation ranking metrics into curve.json, the
    best lens by seen-removed NDCG@10 saved to run_dir/lens, and a stop after `patience` validations
    without a better one or past `max_minutes`. `n_users` (per epoch) turns throughput into epoch_s."""

    def __init__(
        self,
        lens: SASRecLens,
        data: PreparedData,
        n_users: int,
        run_dir: Path,
        log=print,
        samples: NextItemSamples | None = None,
    ):
        self.lens, self.data, self.n_users, self.run_dir, self.log = lens, data, n_users, run_dir, log
        self.samples = leave_one_out(data, "valid") if samples is None else samples
        self.started = time.perf_counter()
        self.curve: list[dict] = []
        self.best, self.best_epoch, self.validations_since_best = -1.0, 0, 0

    def epoch_end(self, ctx: TrainContext) -> bool:
        cfg, epoch = self.lens.config.train, ctx.epoch + 1
        epoch_s = round(self.n_users / ctx.samples_per_s, 2) if ctx.samples_per_s else None
        row = {"epoch": epoch, "train_loss": ctx.epoch_loss, "epoch_s": epoch_s}
        if epoch % cfg.eval_every and epoch < cfg.epochs:
            self.curve.append(row)
            return False
        metrics = validation_metrics(self.lens, self.data, self.samples)
        value = metrics[SELECT_ON[0]][SELECT_ON[1]]
        row |= {
            "elapsed_s": round(time.perf_counter() - self.started, 1),
            "valid_ndcg@10": metrics["all_items"]["ndcg@10"],
            "valid_ndcg@10_seen_removed": value,
            "valid_hit@10_seen_removed": metrics["seen_removed"]["hit@10"],
        }
        self.curve.append(row)
        write_json(self.run_dir / "curve.json", self.curve)
        self.log(
            f"epoch {epoch}: train loss {ctx.epoch_loss:.4f} ({epoch_s} s), valid NDCG@10 "
            f"{row['valid_ndcg@10']:.4f}, seen removed {value:.4f} [{row['elapsed_s']:.0f} s]"
        )
        if value > self.best:
            self.best, self.best_epoch, self.validations_since_best = value, epoch, 0
            self.lens.save(self.run_dir / "lens")
        else:
            self.validations_since_best += 1
        if self.validations_since_best >= cfg.patience:
            self.log(f"early stop: no better validation NDCG@10 for {cfg.patience} validation(s)")
            return True
        if cfg.max_minutes is not None and row["elapsed_s"] >= 60 * cfg.max_minutes:
            self.log(f"stop: past max_minutes={cfg.max_minutes} (best epoch {self.best_epoch})")
            return True
        return False


def validation_metrics(lens: SASRecLens, data: PreparedData, samples: NextItemSamples) -> dict:
    """NDCG@10 and HR@10 of `samples`, every item ranked, with and without the seen items."""
    return split_metrics(rank_samples(lens.scorer(data), *seen_and_users(data), samples, None), (10,))


def fit(
    config: SASRecConfig,
    data: PreparedData,
    run_dir: Path,
    log=print,
    ends: NextItemSamples | None = None,
    valid: NextItemSamples | None = None,
    start: SASRecLens | None = None,
) -> tuple[SASRecLens, dict]:
    """Train with early stopping; the best validation epoch's lens ends up in `run_dir/lens`.

    Default: leave-one-out (sequences end before each user's validation target). A continual period
    passes its own sequence `ends` and `valid` targets, and `start`, a lens to go on training from.
    Seeded once, here (model init, then dropout and negatives draw one stream); the user order depends
    on the seed and the epoch only (the loop's sampler)."""
    cfg = config.train
    seed_everything(cfg.seed)
    lens = SASRecLens.create(config, data)
    if start is not None:
        lens.model.load_state_dict(start.model.state_dict())
    users = UserSequences(data, config.model.max_len, negatives=cfg.loss == "bce", ends=ends)
    validation = RankingValidation(lens, data, len(users), run_dir, log, samples=valid)
    loss = sasrec_loss(cfg.loss, cfg.compile)
    done = train_model(lens.model, users, users.collate, loss, cfg, run_dir, hooks=[validation], log=log)
    epoch_s = [row["epoch_s"] for row in validation.curve if row["epoch_s"]]
    summary = {
        "best_epoch": validation.best_epoch,
        "epochs_run": done["epochs_run"],
        "train_users": len(users),
        "epoch_s": round(float(np.median(epoch_s)), 2) if epoch_s else None,
        "train_seconds": done["seconds"],
    }
    return SASRecLens.load(run_dir / "lens"), summary


def train_sasrec(config: SASRecConfig, data: PreparedData, run_dir: Path, log=print) -> dict:
    """The whole `lens train` job for SASRec: fit, then rank valid and test in full (metrics with and
    without seen items, ranked_SPLIT.parquet lists), metrics.json and a learning-curve plot."""
    start = time.perf_counter()
    lens, summary = fit(config, data, run_dir, log=log)
    score = lens.scorer(data)
    ks, top_k = config.eval.ks, config.eval.top_k
    metrics = {
        split: evaluate_split(score, *seen_and_users(data), leave_one_out(data, split), ks, top_k, run_dir)
        for split in ("valid", "test")
    }
    result = {
        "dataset": data.name,
        "kind": "sasrec",
        "loss": config.train.loss,
        **summary,
        "seconds": round(time.perf_counter() - start, 1),
        "metrics": metrics,
    }
    write_json(run_dir / "metrics.json", result)
    curve = [row for row in read_json(run_dir / "curve.json") if "valid_ndcg@10" in row]
    plot_curve(
        curve,
        run_dir / "curve.png",
        f"SASRec on {data.name}",
        series=(
            ("train_loss", f"train loss ({config.train.loss.upper()})"),
            ("valid_ndcg@10_seen_removed", "valid NDCG@10 (seen removed)"),
        ),
        best=summary["best_epoch"],
    )
    return result
