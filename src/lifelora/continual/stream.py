"""A dataset cut into time periods, seen through one task: which samples each period trains, validates
and tests on, how an adapter is built, trained and evaluated there. The engine and the strategies only
talk to a `Stream`, so PESO and its baselines run the same on next-item and click-through.

Next-item (PESO's protocol): within each period, per user, the last interaction is the test target, the
second-last the validation target, the earlier ones training targets; histories reach back into earlier
periods. Click-through: each period's samples in time order, the first 80% for training, the next 10%
for validation, the last 10% for testing. Every period draws fixed seeded subsets (`subset.train`
training samples, `subset.eval` tested, `continual.valid_samples` validated; seed `subset.seed` + period).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from lifelora.adapters import Adapter
from lifelora.continual.config import ContinualConfig, ContinualCTRConfig, ContinualNextItemConfig
from lifelora.continual.lens import ClickLenses, PeriodLenses, SequenceLenses
from lifelora.continual.strategies import SamplePool
from lifelora.data.periods import interaction_periods, period_statistics
from lifelora.data.sequential import NextItemSamples, block_leave_one_out
from lifelora.errors import LifeloraError
from lifelora.metrics.ctr import ctr_metrics
from lifelora.metrics.ranking import ranking_metrics
from lifelora.precision import autocast
from lifelora.tasks.subsets import subset_rows
from lifelora.training import TrainHook, mean_loss

SPLIT_SHARES = (0.8, 0.1, 0.1)  # click-through: train / valid / test within a period, in time order


class Stream(ABC):
    """The periods of one dataset for one task; subclasses supply the task's samples and model calls."""

    def __init__(self, task: Any, cfg: ContinualConfig, log: Callable[[str], object] = print):
        self.task, self.cfg, self.log = task, cfg, log
        self.data = task.data
        self.spec = cfg.continual.periods
        self.periods = interaction_periods(self.data, self.spec)
        self._subsets: dict[tuple[int, str], Any] = {}
        self.period = 0  # the period whose lens routes a personalized adapter (`use_period`)
        self.run_dir = Path(".")  # where per-period lenses are kept (the runner sets the run's)

    @property
    def n_periods(self) -> int:
        return self.spec.n_periods

    def statistics(self) -> pl.DataFrame:
        """The per-period table of the PESO paper, with the task's training/validation/test counts."""
        counts = [
            {
                "period": p,
                **{f"{s}_samples": self.size(self.targets(p, s)) for s in ("train", "valid", "test")},
            }
            for p in range(self.n_periods)
        ]
        table = period_statistics(self.data, self.spec).drop("samples")
        return table.join(pl.DataFrame(counts).cast({"period": pl.Int32}), on="period")

    # --- samples -------------------------------------------------------------------------------------

    @abstractmethod
    def targets(self, period: int, split: str) -> Any: ...

    def size(self, samples: Any) -> int:
        return len(samples)

    @abstractmethod
    def take(self, samples: Any, rows: np.ndarray) -> Any: ...

    @abstractmethod
    def concat(self, parts: Sequence[Any]) -> Any: ...

    def subset(self, period: int, split: str) -> Any:
        """The period's fixed seeded subset of `split` (the whole split when it is smaller)."""
        key = (period, split)
        if key not in self._subsets:
            n = {
                "train": self.cfg.subset.train,
                "valid": self.cfg.continual.valid_samples,
                "test": self.cfg.subset.eval,
            }[split]
            samples = self.targets(period, split)
            if self.size(samples) == 0:
                raise LifeloraError(f"period {period} of {self.data.name} has no {split} samples")
            self._subsets[key] = self.take(
                samples, subset_rows(self.size(samples), n, self.cfg.subset.seed + period)
            )
        return self._subsets[key]

    def use_period(self, period: int) -> None:
        """The engine enters `period`: a personalized adapter routes with that period's lens from now on
        (`continual.lens`; frozen: always the named one). A lens still to train trains here, before the
        engine seeds the period's training: its own seeding must not move the adapter's random stream (a
        resumed run loads it instead)."""
        self.period = period
        if self.lenses is not None:
            self.lenses.at(period)

    @cached_property
    def lenses(self) -> PeriodLenses | None:
        named = self.task.lens(self.cfg)
        return None if named is None else self._period_lenses(named, self.run_dir / "lenses")

    @abstractmethod
    def _period_lenses(self, named: Any, directory: Path) -> PeriodLenses: ...

    @property
    def lens(self) -> Any:
        """The lens routing the personalized adapter now (None for other adapters)."""
        return None if self.lenses is None else self.lenses.at(self.period)

    def pool(self) -> SamplePool:
        return SamplePool(partial(self.subset, split="train"), self.concat, self.size, self.take)

    def returning(self, samples: Any) -> np.ndarray:
        """Per sample: its user interacted in an earlier period (a returning, "dormant" user)."""
        users, rows = self._users_and_rows(samples)
        offset = self.data.users["seq_offset"].to_numpy().astype(np.int64)
        return self.periods[offset[users]] < self.periods[rows]

    @abstractmethod
    def _users_and_rows(self, samples: Any) -> tuple[np.ndarray, np.ndarray]: ...

    # --- model -------------------------------------------------------------------------------------

    @abstractmethod
    def build(self, seed: int) -> Adapter: ...

    @abstractmethod
    def examples(self, samples: Any) -> Any: ...

    @abstractmethod
    def loss_fn(self) -> Callable: ...

    @abstractmethod
    def fit(
        self, adapter: Adapter, samples: Any, lr_scale: float, seed: int, run_dir: Path,
        hooks: Sequence[TrainHook], stage: str,
    ) -> dict:  # fmt: skip
        ...

    def settings(self, lr_scale: float, seed: int):
        """The period's training settings: D1's, the learning rate scaled, no mid-period checkpoints (a
        continual run resumes period by period)."""
        train = self.cfg.train
        return train.model_copy(update={"lr": train.lr * lr_scale, "seed": seed, "checkpoint_every": None})

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
        examples, size = self.examples(samples), self.cfg.train.batch_size
        model.eval()
        for start in range(0, min(len(examples), batches * size), size):
            batch = examples.collate(list(range(start, min(start + size, len(examples)))))
            with autocast(self.cfg.train.precision, next(model.parameters()).device):
                self.loss_fn()(model, batch)
        model.train()

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, samples: Any, out_dir: Path, name: str) -> dict:
        """The task's metrics on `samples`, overall and for returning and new users separately."""


class NextItemStream(Stream):
    def targets(self, period: int, split: str) -> NextItemSamples:
        return block_leave_one_out(self.data, self.periods, period, split)

    def take(self, samples: NextItemSamples, rows: np.ndarray) -> NextItemSamples:
        return samples.subset(rows)

    def concat(self, parts: Sequence[NextItemSamples]) -> NextItemSamples:
        return NextItemSamples.concat(list(parts))

    def _users_and_rows(self, samples: NextItemSamples) -> tuple[np.ndarray, np.ndarray]:
        offset = self.data.users["seq_offset"].to_numpy().astype(np.int64)
        return samples.user_idx, offset[samples.user_idx] + samples.position

    def _period_lenses(self, named: Any, directory: Path) -> PeriodLenses:
        return SequenceLenses(self.data, self.periods, self.cfg.continual.lens, named, directory, self.log)

    def build(self, seed: int) -> Adapter:
        from lifelora.tasks.next_item.jobs import build

        return build(self.task, self.cfg.model_copy(update={"train": self.settings(1.0, seed)}), self.lens)

    def examples(self, samples: NextItemSamples):
        return self.task.examples_of(self.cfg, samples, self.lens)

    def loss_fn(self) -> Callable:
        from lifelora.tasks.next_item.jobs import code_loss

        return partial(code_loss, temperature=self.cfg.prompt.temperature)

    def fit(self, adapter, samples, lr_scale, seed, run_dir, hooks, stage) -> dict:
        from lifelora.tasks.next_item.jobs import fit

        cfg = self.cfg.model_copy(update={"train": self.settings(lr_scale, seed)})
        return fit(self.task, adapter, cfg, run_dir, lens=self.lens, hooks=hooks, stage=stage,
                   examples=self.examples(samples))  # fmt: skip

    def evaluate(self, model, samples, out_dir, name) -> dict:
        from lifelora.tasks.next_item.jobs import evaluate_examples

        metrics, ranks = evaluate_examples(self.task, model, self.cfg, self.examples(samples), out_dir, name)
        cutoff = self.cfg.eval.beams if self.cfg.eval.decoding == "beam" else None
        returning = self.returning(samples)
        for group, mask in (("returning", returning), ("new", ~returning)):
            if mask.any():
                sub = ranking_metrics(ranks[mask], ks=tuple(self.cfg.eval.ks), cutoff=cutoff)
                metrics[group] = {k: v for k, v in sub.items() if not k.startswith("recall")}
        return metrics


class CTRStream(Stream):
    @cached_property
    def _period_of_sample(self) -> np.ndarray:
        from lifelora.data.periods import sample_periods

        return sample_periods(self.data, self.spec, self.periods)

    def targets(self, period: int, split: str) -> pl.DataFrame:
        rows = np.flatnonzero(self._period_of_sample == period)
        ends = np.floor(np.cumsum(SPLIT_SHARES) * len(rows)).astype(np.int64)
        part = {"train": rows[: ends[0]], "valid": rows[ends[0] : ends[1]], "test": rows[ends[1] :]}[split]
        return self.data.samples[part]

    def size(self, samples: pl.DataFrame) -> int:
        return samples.height

    def take(self, samples: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
        return samples[rows]

    def concat(self, parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
        return pl.concat(list(parts))

    def _users_and_rows(self, samples: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        users = samples["user_idx"].to_numpy().astype(np.int64)
        offset = self.data.users["seq_offset"].to_numpy().astype(np.int64)
        return users, offset[users] + samples["hist_len"].to_numpy()

    def _period_lenses(self, named: Any, directory: Path) -> PeriodLenses:
        return ClickLenses(self.data, self.targets, self.cfg.continual.lens, named, directory, self.log)

    def build(self, seed: int) -> Adapter:
        from lifelora.tasks.ctr.jobs import build

        return build(self.task, self.cfg.model_copy(update={"train": self.settings(1.0, seed)}), self.lens)

    def examples(self, samples: pl.DataFrame):
        routing = None if self.lens is None else self.task.routing_of(self.lens, samples)
        return self.task.examples_of(self.cfg, samples, routing)

    def loss_fn(self) -> Callable:
        from lifelora.tasks.ctr.jobs import answer_loss

        return answer_loss

    def fit(self, adapter, samples, lr_scale, seed, run_dir, hooks, stage) -> dict:
        from lifelora.tasks.ctr.jobs import fit

        cfg = self.cfg.model_copy(update={"train": self.settings(lr_scale, seed)})
        return fit(
            self.task, adapter, cfg, run_dir, hooks=hooks, stage=stage, examples=self.examples(samples)
        )

    def evaluate(self, model, samples, out_dir, name) -> dict:
        from lifelora.tasks.ctr.jobs import score_examples

        cfg = self.cfg.model_copy(update={"eval": self.cfg.eval.model_copy(update={"split": name})})
        metrics, scores = score_examples(self.task, model, cfg, self.examples(samples), out_dir)
        labels, users = samples["label"].to_numpy(), samples["user_idx"].to_numpy()
        returning = self.returning(samples)
        for group, mask in (("returning", returning), ("new", ~returning)):
            if mask.any() and len(np.unique(labels[mask])) == 2:
                metrics[group] = ctr_metrics(labels[mask], scores[mask], users[mask])
        return metrics


def open_stream(cfg: ContinualConfig, log: Callable[[str], object] = print) -> Stream:
    """The task (backbone, codes or item vectors) and its stream for a continual config."""
    from lifelora.data.store import open_prepared

    data = open_prepared(cfg.dataset, cfg.preset, cfg.data_dir, prepare_missing=True)
    if isinstance(cfg, ContinualNextItemConfig):
        from lifelora.tasks.next_item.task import NextItemTask

        return NextItemStream(NextItemTask(data, cfg.model, cfg.semantic_ids, log=log), cfg, log)
    if isinstance(cfg, ContinualCTRConfig):
        from lifelora.tasks.ctr.task import CTRTask

        return CTRStream(CTRTask(data, cfg.model, log=log), cfg, log)
    raise LifeloraError(f"no continual stream for {type(cfg).__name__}")
