"""The task protocol: what a recommendation task supplies so that one loop (`tasks.jobs`), one command
line and one continual engine run it. A task holds what every run on one dataset and one backbone
shares (data, backbone, prompt builders, lenses) and takes a run's config in each call.

A task supplies: its config class and names; the examples of a split or of any rows (a period's) and
their loss; how its examples are evaluated (and which per-row outcome a subgroup is measured from); how
it recommends for one user; which lens routes it; what its report rows show; and, for continual runs,
how a period's samples are cut. Everything else is generic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel

from lifelora.adapters import is_routed
from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.lens.periods import PeriodLenses
from lifelora.tasks.subsets import subset_rows


@dataclass
class Recommendation:
    """One user's top items: a table with `rank`, `title` and the task's score column."""

    table: pl.DataFrame
    title: str
    score: str  # the score column's name
    score_format: str = "{:.4f}"


class Task(ABC):
    name: ClassVar[str]  # the registry's name, a config's `task:`
    config_class: ClassVar[type[BaseModel]]
    label: ClassVar[str] = ""  # what a run's title and directory call the task ("" for click-through)
    unit: ClassVar[str] = "samples"  # what one training example is, in log lines
    loss_name: ClassVar[str] = "loss"  # the training curve's label
    columns: ClassVar[tuple[str, ...]]  # the metric columns of one run's table
    headline: ClassVar[tuple[str, ...]]  # the metrics a continual report leads with, the first ranking
    evaluate_merged: ClassVar[bool] = False  # evaluate on LoRA weights merged into the base (long decoding)
    options: ClassVar[dict[str, str]] = {}  # command-line options of this task only: flag → config key
    continual_baselines: ClassVar[tuple[str, ...]] = ()  # non-LLM rows a continual run may add (ranked)
    recommends_together: ClassVar[bool] = False  # `recommend_many` runs a batch of users in one pass
    learns_from_negatives: ClassVar[bool] = False  # a shown item the user skipped is a training example

    data: PreparedData
    backbone: Any
    log: Callable[[str], object]

    @classmethod
    @abstractmethod
    def open(cls, cfg: Any, data: PreparedData, log=print, run: Path | None = None) -> Task:
        """The task for a run config on `data`; with `run`, what that trained run saved (`save_run`)."""

    # --- the lens ---------------------------------------------------------------------------------------

    def lens(self, cfg: Any, trained: bool = True) -> Any | None:
        """The frozen lens routing the run's adapter (None when its kind is not routed). With
        `trained=False` (a continual run whose lens evolves: only the named lens's architecture and
        training settings are used) `lens` may also name a lens config, which gives an untrained lens."""
        if cfg.adapter is None or not is_routed(cfg.adapter):
            return None
        lenses = self.__dict__.setdefault("_lenses", {})  # per task object; subclasses keep their __init__
        path = Path(cfg.lens)
        if path.suffix in (".yaml", ".yml"):
            if trained:
                raise LifeloraError(
                    f"lens: {cfg.lens} is a lens config, and routing needs a trained {cfg.lens_kind} run "
                    "directory (a config serves only a continual run whose lens evolves: continual.lens "
                    "finetune or retrain)"
                )
            if path not in lenses:
                lenses[path] = self.lens_from_config(str(path))
            return lenses[path]
        if path not in lenses:
            lens = self.load_lens(path)
            lens.check_matches(self.data)
            lenses[path] = lens
        return lenses[path]

    @abstractmethod
    def load_lens(self, path: Path) -> Any:
        """The task's kind of lens, read from a lens run directory."""

    def lens_from_config(self, config: str | None) -> Any:
        """An untrained lens of the task's kind on this data, from a lens config (a shipped name or a path;
        None: the lens's defaults); a task whose lenses are not built from configs says so."""
        raise LifeloraError(
            f"lens: {config}: the {self.name} task builds no lens from a config; name a lens run"
        )

    # --- training -----------------------------------------------------------------------------------------

    def adapter_config(self, cfg: Any) -> BaseModel:
        """The adapter to attach for the run (the task may add what it trains besides LoRA)."""
        return cfg.adapter

    def before_adapter(self, cfg: Any) -> None:  # noqa: B027 (most tasks need nothing here)
        """Make what the run needs from the bare backbone while it is still bare."""

    @abstractmethod
    def samples(self, cfg: Any, split: str, n: int | None) -> Any:
        """A fixed seeded subset of `n` rows of `split` (None: all)."""

    def subset(self, cfg: Any, samples: Any, n: int | None, seed: int) -> Any:
        """A fixed seeded subset of `n` of `samples` (all when None or more), in their order; a task whose
        training examples group several rows may draw the groups instead."""
        return self.take(samples, subset_rows(self.size(samples), n, seed))

    @abstractmethod
    def examples_of(self, cfg: Any, samples: Any, lens: Any | None = None) -> torch.utils.data.Dataset:
        """Examples (a Dataset with `collate`) of any rows, routed by `lens` when one is given."""

    def examples(self, cfg: Any, split: str, n: int | None, lens: Any | None = None):
        return self.examples_of(cfg, self.samples(cfg, split, n), lens)

    @abstractmethod
    def loss(self, cfg: Any) -> Callable[[torch.nn.Module, dict], torch.Tensor]:
        """The training loss of one collated batch."""

    def describe(self, cfg: Any) -> str:
        """What the training log line says about the examples' shape."""
        return ""

    def amount(self, examples: Any) -> str:
        """How much `examples` is, for the training log line."""
        return f"{len(examples):,} {self.data.name} {self.unit}"

    # --- evaluation -----------------------------------------------------------------------------------

    @abstractmethod
    def evaluate_examples(
        self, model: torch.nn.Module, cfg: Any, examples: Any, out_dir: Path | None, name: str
    ) -> tuple[dict, np.ndarray]:
        """The metrics of `examples` and each row's outcome (a score, a rank); with `out_dir`, the rows'
        predictions written there under `name`."""

    @abstractmethod
    def group_metrics(self, cfg: Any, samples: Any, outcome: np.ndarray, mask: np.ndarray) -> dict | None:
        """The metrics of the rows in `mask` (None when they are undefined there)."""

    def paired_difference(self, ours: Path, theirs: Path, name: str, metric: str) -> dict | None:
        """`metric` of one model minus another's on the same rows, with its paired 95% interval and p-value,
        from what `evaluate_examples` wrote under `name` into each directory (None: no paired test of
        `metric` for this task)."""
        return None

    def run_summary(self, cfg: Any) -> dict:
        """What a run's metrics.json records besides the generic fields."""
        return {}

    def save_run(self, run_dir: Path) -> None:  # noqa: B027 (most tasks keep only the adapter)
        """What a trained run keeps besides its adapter, for `open(..., run=)` to read back."""

    @abstractmethod
    def recommend(self, model: torch.nn.Module, cfg: Any, user: str, k: int, options: dict) -> Recommendation:
        """The top-`k` items for one user (raw id); `options` are the command's task-specific ones."""

    def recommend_many(
        self, model: torch.nn.Module, cfg: Any, users: Sequence[str], k: int, options: dict
    ) -> list[Recommendation]:
        """`recommend` for a batch of users (a server's micro-batch): one at a time unless the task batches."""
        return [self.recommend(model, cfg, user, k, options) for user in users]

    def score_items(self, model: torch.nn.Module, cfg: Any, user: str, items: Sequence[str]) -> np.ndarray:
        """Each item's probability that the user likes it (a task that only ranks has no such score)."""
        raise LifeloraError(f"the {self.name} task ranks items for a user; it does not score given items")

    # --- periods (continual) ----------------------------------------------------------------------------

    @abstractmethod
    def period_samples(self, periods: np.ndarray, period: int, split: str) -> Any:
        """A period's training, validation or test rows, given each interaction's period."""

    @abstractmethod
    def period_lenses(self, periods: np.ndarray, mode: str, named: Any, directory: Path, log) -> PeriodLenses:
        """The lens per period (`continual.lens`: frozen, finetune, retrain)."""

    @abstractmethod
    def users_and_rows(self, samples: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per row: its user and the global position of its target in the sequences table."""

    @staticmethod
    def size(samples: Any) -> int:
        return len(samples)

    @staticmethod
    @abstractmethod
    def take(samples: Any, rows: np.ndarray) -> Any: ...

    @staticmethod
    @abstractmethod
    def concat(parts: Sequence[Any]) -> Any: ...


class SampleRows:
    """The period bookkeeping of a task whose samples are rows of the prepared samples table (a polars
    frame with `user_idx` and `hist_len`): mix it in before `Task`."""

    data: PreparedData

    def users_and_rows(self, samples: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        users = samples["user_idx"].to_numpy().astype(np.int64)
        offset = self.data.users["seq_offset"].to_numpy().astype(np.int64)
        return users, offset[users] + samples["hist_len"].to_numpy()

    @staticmethod
    def size(samples: pl.DataFrame) -> int:
        return samples.height

    @staticmethod
    def take(samples: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
        return samples[rows]

    @staticmethod
    def concat(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
        return pl.concat(list(parts))
