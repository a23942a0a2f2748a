"""The baselines that need no regularizer: `pretrain` (trained on D1, then frozen), `finetune` (a
single evolving adapter, warm-started each period: PESO with λ = 0), `retrain` (a fresh adapter on
every period so far) and `replay` (the new period plus a fixed-size buffer of earlier samples)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from lifelora.adapters import Adapter
from lifelora.continual.strategies.base import PeriodContext, SamplePool, Strategy, StrategyConfig


class PretrainConfig(StrategyConfig):
    name: Literal["pretrain"] = "pretrain"


class Pretrain(Strategy):
    config_class = PretrainConfig

    def trains(self, period: int) -> bool:
        return period == 0


class FinetuneConfig(StrategyConfig):
    name: Literal["finetune"] = "finetune"


class Finetune(Strategy):
    config_class = FinetuneConfig


class RetrainConfig(StrategyConfig):
    name: Literal["retrain"] = "retrain"


class Retrain(Strategy):
    """Upper reference of what the data so far allows, at the cost of training on all of it again."""

    config_class = RetrainConfig

    def lr_scale(self, period: int, later: float) -> float:
        return 1.0  # a fresh adapter each time: D1's rate

    def begin_period(self, ctx: PeriodContext) -> Adapter:
        ctx.adapter.unload()
        return ctx.fresh()

    def training_samples(self, period: int, pool: SamplePool, seed: int) -> Any:
        return pool.concat([pool.train(p) for p in range(period + 1)])


class ReplayConfig(StrategyConfig):
    name: Literal["replay"] = "replay"
    buffer: int = Field(256, ge=1, description="earlier training samples mixed into each later period")


class Replay(Strategy):
    """The buffer is a seeded uniform draw over every earlier period's training samples, redrawn each
    period, so each earlier period is represented in proportion to its size."""

    config_class = ReplayConfig

    def training_samples(self, period: int, pool: SamplePool, seed: int) -> Any:
        current = pool.train(period)
        if period == 0:
            return current
        earlier = pool.concat([pool.train(p) for p in range(period)])
        return pool.concat([current, pool.draw(earlier, self.config.buffer, seed + period)])
