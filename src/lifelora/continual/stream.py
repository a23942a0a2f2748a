"""A dataset cut into time periods, seen through one task: which samples each period trains, validates
and tests on, how an adapter is built, trained and evaluated there. The engine and the strategies only
talk to a `Stream`, and the stream only to the task protocol (`lifelora.tasks.base`), so PESO and its
baselines run the same on any task.

How a period's samples are cut is the task's (`Task.period_samples`): next-item follows PESO's protocol
(per user, the period's last interaction tests, the second-last validates, the earlier ones train;
histories reach back into earlier periods), click-through takes each period's samples in time order (80%
train, 10% validation, 10% test). Every period draws fixed seeded subsets (`subset.train` training
samples, `subset.eval` tested, `continual.valid_samples` validated; seed `subset.seed` + period).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from lifelora.adapters import Adapter
from lifelora.continual.config import ContinualConfig
from lifelora.continual.strategies import SamplePool
from lifelora.data.periods import interaction_periods, period_statistics
from lifelora.errors import LifeloraError
from lifelora.lens.periods import PeriodLenses
from lifelora.precision import autocast
from lifelora.tasks import jobs
from lifelora.tasks.base import Task
from lifelora.training import TrainHook, mean_loss


class Stream:
    """The periods of one dataset for one task."""

    def __init__(self, task: Task, cfg: ContinualConfig, log: Callable[[str], object] = print):
        self.task, self.cfg, self.log = task, cfg, log
        self.data = task.data
        self.spec = cfg.continual.periods
        self.periods = interaction_periods(self.data, self.spec)
        self._subsets: dict[tuple[int, str], Any] = {}
        self.period = 0  # the period whose lens routes a routed adapter (`use_period`)
        self.run_dir = Path(".")  # where per-period lenses are kept (the runner sets the run's)

    @property
    def n_periods(self) -> int:
        return self.spec.n_periods

    def statistics(self) -> pl.DataFrame:
        """The per-period table of the PESO paper, with the task's training/validation/test counts."""
        counts = [
            {
                "period": p,
                **{f"{s}_samples": self.task.size(self.targets(p, s)) for s in ("train", "valid", "test")},
            }
            for p in range(self.n_periods)
        ]
        table = period_statistics(self.data, self.spec).drop("samples")
        if self.spec.given is not None:  # given periods' timestamps are an order, not dates
            table = table.drop("first_timestamp", "last_timestamp")
        return table.join(pl.DataFrame(counts).cast({"period": pl.Int32}), on="period")

    # --- samples -------------------------------------------------------------------------------------

    def targets(self, period: int, split: str) -> Any:
        """The period's `split` samples of the users with at least `continual.min_period_items`
        interactions in it."""
        samples = self.task.period_samples(self.periods, period, split)
        least = self.cfg.continual.min_period_items
        if least <= 1:
            return samples
        users, _ = self.task.users_and_rows(samples)
        in_period = np.bincount(
            self.data.sequence_users()[self.periods == period], minlength=self.data.users.height
        )
        return self.task.take(samples, np.flatnonzero(in_period[users] >= least))

    def subset(self, period: int, split: str) -> Any:
        """The period's fixed seeded subset of `split` (the whole split when it is smaller)."""
        key = (period, split)
        if key not in self._subsets:
            first = self.cfg.continual.first_train if period == 0 else None
            n = {
                "train": first or self.cfg.subset.train,
                "valid": self.cfg.continual.valid_samples,
                "test": self.cfg.subset.eval,
            }[split]
            samples = self.targets(period, split)
            if self.task.size(samples) == 0:
                raise LifeloraError(f"period {period} of {self.data.name} has no {split} samples")
            self._subsets[key] = self.task.subset(self.cfg, samples, n, self.cfg.subset.seed + period)
        return self._subsets[key]

    def use_period(self, period: int) -> None:
        """The engine enters `period`: a routed adapter routes with that period's lens from now on
        (`continual.lens`; frozen: always the named one). A lens still to train trains here, before the
        engine seeds the period's training: its own seeding must not move the adapter's random stream (a
        resumed run loads it instead)."""
        self.period = period
        if self.lenses is not None:
            self.lenses.at(period)

    @cached_property
    def lenses(self) -> PeriodLenses | None:
        mode = self.cfg.continual.lens
        named = self.task.lens(self.cfg, trained=mode == "frozen")
        if named is None:
            return None
        return self.task.period_lenses(self.periods, mode, named, self.run_dir / "lenses", self.log)

    @property
    def lens(self) -> Any:
        """The lens routing the adapter now (None for adapters that are not routed)."""
        return None if self.lenses is None else self.lenses.at(self.period)

    def pool(self) -> SamplePool:
        task = self.task
        return SamplePool(partial(self.subset, split="train"), task.concat, task.size, task.take)

    def returning(self, samples: Any) -> np.ndarray:
        """Per sample: its user interacted in an earlier period (a returning, "dormant" user)."""
        users, rows = self.task.users_and_rows(samples)
        offset = self.data.users["seq_offset"].to_numpy().astype(np.int64)
        return self.periods[offset[users]] < self.periods[rows]

    # --- model -------------------------------------------------------------------------------------

    def _period_config(self, lr_scale: float, seed: int) -> ContinualConfig:
        """The period's run config: D1's training, the learning rate scaled, no mid-period checkpoints (a
        continual run resumes period by period)."""
        train = self.cfg.train
        update = {"lr": train.lr * lr_scale, "seed": seed, "checkpoint_every": None}
        return self.cfg.model_copy(update={"train": train.model_copy(update=update)})

    def build(self, seed: int) -> Adapter:
        return jobs.build(self.task, self._period_config(1.0, seed), self.lens)

    def examples(self, samples: Any) -> Any:
        return self.task.examples_of(self.cfg, samples, self.lens)

    def loss_fn(self) -> Callable:
        return self.task.loss(self.cfg)

    def fit(
        self, adapter: Adapter, samples: Any, lr_scale: float, seed: int, run_dir: Path,
        hooks: Sequence[TrainHook], stage: str,
    ) -> dict:  # fmt: skip
        cfg = self._period_config(lr_scale, seed)
        return jobs.fit(self.task, adapter, cfg, run_dir, lens=self.lens, hooks=hooks, stage=stage,
                        examples=self.examples(samples))  # fmt: skip

    def valid_loss(self, model: torch.nn.Module, samples: Any) -> float:
        examples = self.examples(samples)
        loss = mean_loss(
            model,
            examples,
            examples.collate,
            self.loss_fn(),
            self.cfg.eval.batch_size,
            self.cfg.train.precision,
        )
        model.train()
        return loss

    @torch.no_grad()
    def forward(self, model: torch.nn.Module, samples: Any, batches: int) -> None:
        """The model on up to `batches` training batches, for strategies that read activations."""
        examples, size, loss = self.examples(samples), self.cfg.train.batch_size, self.loss_fn()
        model.eval()
        for start in range(0, min(len(examples), batches * size), size):
            batch = examples.collate(list(range(start, min(start + size, len(examples)))))
            with autocast(self.cfg.train.precision, next(model.parameters()).device):
                loss(model, batch)
        model.train()

    def evaluate(self, model: torch.nn.Module, samples: Any, out_dir: Path, name: str) -> dict:
        """The task's metrics on `samples`, overall and for returning and new users separately."""
        model.eval()
        metrics, outcome = self.task.evaluate_examples(model, self.cfg, self.examples(samples), out_dir, name)
        returning = self.returning(samples)
        for group, mask in (("returning", returning), ("new", ~returning)):
            if mask.any() and (grouped := self.task.group_metrics(self.cfg, samples, outcome, mask)):
                metrics[group] = grouped
        return metrics


def open_stream(cfg: ContinualConfig, log: Callable[[str], object] = print) -> Stream:
    """The task (backbone, codes or item vectors) and its stream for a continual config."""
    from lifelora.data.store import open_prepared
    from lifelora.tasks.registry import task_class

    data = open_prepared(cfg.dataset, cfg.preset, cfg.data_dir, prepare_missing=True)
    return Stream(task_class(cfg.task).open(cfg, data, log), cfg, log)
