"""What every continual strategy is: a small object the engine asks, period by period, which adapter to
train, on which samples, with which training hooks, and what to remember at the period's end.

The engine owns the loop (`lifelora.continual.engine`): period 0 is the same for every strategy (a fresh
adapter trained on D1), so it is trained once and each strategy starts from its saved adapter with
`end_period(0)`. For period t ≥ 1 the engine calls `begin_period` (warm start by default: the adapter
carried from t−1), `training_samples`, `hooks` (loss terms, gradient edits; the training loop's
`TrainHook`), trains unless `trains(t)` is False, then `end_period` and saves `state_dict()` with the
period's adapter so that a killed run resumes from the last finished period.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from lifelora.adapters import Adapter
from lifelora.training import TrainHook


class StrategyConfig(BaseModel):
    """Fields every strategy has; each strategy's module subclasses it with its own `name` literal."""

    model_config = ConfigDict(extra="forbid")

    name: str
    label: str | None = Field(None, description="the strategy's name in tables and plots (default: name)")

    @property
    def title(self) -> str:
        return self.label or self.name


class SamplePool:
    """The samples a strategy may train on in a period: each period's fixed training subset (already drawn
    by the engine), and ways to combine and draw from them. Samples are the task's own type (next-item
    targets or click-through rows); the pool hides which."""

    def __init__(
        self,
        train: Callable[[int], Any],
        concat: Callable[[Sequence[Any]], Any],
        size: Callable[[Any], int],
        take: Callable[[Any, Any], Any],
    ):
        self.train, self._concat, self.size, self._take = train, concat, size, take

    def concat(self, parts: Sequence[Any]) -> Any:
        return parts[0] if len(parts) == 1 else self._concat(parts)

    def draw(self, samples: Any, n: int, seed: int) -> Any:
        """A seeded random subset of `n` samples (all when there are fewer), in their order."""
        import numpy as np

        total = self.size(samples)
        if n >= total:
            return samples
        rows = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
        return self._take(samples, rows)


@dataclass
class PeriodContext:
    """What a strategy sees of the current period."""

    period: int
    adapter: Adapter
    seed: int
    fresh: Callable[[], Adapter]  # a new adapter on the bare backbone, seeded for this period
    forward: Callable[[int], None]  # run the current model on up to n training batches (no gradient)
    log: Callable[[str], object] = print


class Strategy:
    """Defaults = a single evolving adapter (warm start, no regularizer): PESO with λ = 0."""

    config_class: ClassVar[type[StrategyConfig]]

    def __init__(self, config: StrategyConfig):
        self.config = config

    @property
    def title(self) -> str:
        return self.config.title

    def trains(self, period: int) -> bool:
        return True

    def lr_scale(self, period: int, later: float) -> float:
        """The period's learning rate as a fraction of D1's (`later` = the config's, 0.1 by default)."""
        return 1.0 if period == 0 else later

    def begin_period(self, ctx: PeriodContext) -> Adapter:
        """The adapter period `ctx.period` trains: by default the one carried from the last period."""
        return ctx.adapter

    def training_samples(self, period: int, pool: SamplePool, seed: int) -> Any:
        return pool.train(period)

    def hooks(self, ctx: PeriodContext) -> list[TrainHook]:
        return []

    def end_period(self, ctx: PeriodContext) -> None:
        """After training (or not) in the period: remember what the next period needs."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to save with the period's adapter (an anchor, a subspace): what `end_period` kept."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor], adapter: Adapter) -> None:
        """Restore what `state_dict` gave when a run resumes after a finished period (`adapter`: the
        period's adapter, every branch restored, for strategies that re-wrap it)."""
