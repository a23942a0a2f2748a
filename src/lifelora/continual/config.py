"""Configuration of a continual run (`lifelora continual -c CONFIG`): a task's run config (next-item or
click-through: model, adapter, prompt, per-period subsets, training of D1, evaluation) plus a
`continual` section (periods, strategies, the later periods' learning rate, evaluation matrix, seeds)."""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lifelora.continual.strategies import AnyStrategyConfig, FinetuneConfig, PesoConfig, PretrainConfig
from lifelora.data.periods import PeriodSpec
from lifelora.tasks.registry import config_class, task_class


def _default_strategies() -> list:
    return [PretrainConfig(), FinetuneConfig(), PesoConfig()]


class ContinualSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    periods: PeriodSpec = Field(default_factory=PeriodSpec, description="fractions or calendar boundaries")
    strategies: list[AnyStrategyConfig] = Field(default_factory=_default_strategies, min_length=1)
    later_lr: float = Field(
        0.1, gt=0, description="learning rate of periods 2.. as a fraction of the first's (PESO: 0.1)"
    )
    later_lr_for: Literal["carried", "all"] = Field(
        "carried",
        description="carried: only adapters carried from the last period train at later_lr (a fresh "
        "branch or a retrained adapter starts at D1's rate); all: every strategy's later periods "
        "(PESO's release)",
    )
    min_period_items: int = Field(
        1,
        ge=1,
        description="users with fewer interactions in a period neither train, validate nor test there "
        "(PESO's release: 3)",
    )
    select: Literal["valid_loss", "last"] = Field(
        "valid_loss", description="keep each period's epoch with the lowest validation loss, or the last"
    )
    valid_samples: int = Field(64, ge=1, description="validation targets per period for `select`")
    first_train: int | None = Field(
        None,
        ge=1,
        description="D1's training subset (targets, or windows in the sequence layout); default: "
        "subset.train, as every later period",
    )
    matrix: Literal["same", "next", "full"] = Field(
        "next",
        description="same: the model after period t on block t only (PESO's release); next: on blocks t "
        "and t+1; full: on every block (the period × period matrix that backward transfer and "
        "forgetting need)",
    )
    lens: Literal["frozen", "finetune", "retrain"] = Field(
        "frozen",
        description="the lens routing a personalized adapter (SASRec for next-item, DIN/SIM for "
        "click-through): frozen (as trained), or trained per period, from scratch on the data so far "
        "(retrain) or from the last period's lens on the new period (finetune)",
    )
    seeds: list[int] = Field([42], min_length=1, description="training seeds (adapter init, dropout, order)")
    retrain_elsewhere: bool = Field(
        False,
        description="a finished period whose adapter is not on disk (results travel without adapters) is "
        "trained again, seeded, to the same weights on the same kind of machine only; true: also on "
        "another kind, accepting a different model beside the earlier periods' results",
    )
    baselines: list[Literal["popularity", "sasrec"]] = Field(
        [],
        description="next-item: non-LLM rows on the same tested users (popularity: the most popular items "
        "of the blocks so far; sasrec: SASRec trained on D1, then fine-tuned on each block, as the adapters "
        "evolve)",
    )
    baseline_sasrec: str | None = Field(
        None,
        description="the sasrec baseline's lens config (a shipped name like lens/sasrec-video-games.yaml, "
        "or a path; default: SASRec's defaults)",
    )

    @field_validator("strategies")
    @classmethod
    def _unique_titles(cls, value: list) -> list:
        titles = [s.title for s in value]
        repeated = sorted({t for t in titles if titles.count(t) > 1})
        if repeated:
            raise ValueError(f"strategy {repeated[0]!r} appears twice; give one of them a `label`")
        return value


class ContinualRun(BaseModel):
    """The `continual` section that turns any task's run config into a continual run's config."""

    continual: ContinualSettings = Field(default_factory=ContinualSettings)

    @model_validator(mode="after")
    def _training_needed(self):
        if getattr(self, "adapter", None) is None:
            raise ValueError("adapter: a continual run trains an adapter; null is not allowed here")
        known = task_class(self.task).continual_baselines
        unknown = [b for b in self.continual.baselines if b not in known]
        if unknown:
            raise ValueError(
                f"continual.baselines: {unknown[0]!r} is not a baseline of task {self.task} "
                f"({', '.join(known) or 'it has none'})"
            )
        return self


ContinualConfig = ContinualRun  # in type hints: a task's run config with a continual section


@cache
def continual_config_class(task: str) -> type[ContinualRun]:
    """The continual config of a task: its run config plus the `continual` section. `subset.train` is
    then drawn per period and `subset.eval` per tested block."""
    base = config_class(task)
    return type(f"Continual{base.__name__}", (base, ContinualRun), {"__module__": __name__})


ContinualNextItemConfig = continual_config_class("next-item")
ContinualCTRConfig = continual_config_class("ctr")
