"""What every task's run config shares: where the data and the model come from, the lens that routes a
routed adapter (required then), and the two names every command reads (`name`, `scoring_precision`).
A task's config subclasses `RunConfig` and adds its `task`, `adapter`, `prompt`, `subset`, `train` and
`eval` sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifelora.adapters import is_routed


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    untrained: ClassVar[str] = "zero-shot"  # the run's name when `adapter` is null
    lens_kind: ClassVar[str] = "lens"  # what kind of lens run routes the task's routed adapters

    dataset: str = Field("ml-100k", description="the embedded demo dataset by default")
    preset: str = "rella"
    data_dir: Path | None = None
    model: str = Field("smollm2-135m", description="embedded name, Hugging Face id or local directory")
    lens: Path | None = Field(
        None,
        description="lens run directory whose vectors route a personalized adapter (a continual run whose "
        "lens evolves may name a lens config instead: it trains its own lens per period)",
    )

    adapter: Any
    train: Any
    eval: Any

    @model_validator(mode="after")
    def _routed_needs_a_lens(self) -> RunConfig:
        if self.adapter is not None and is_routed(self.adapter) and self.lens is None:
            raise ValueError(
                f"adapter kind {self.adapter.kind} needs lens: a {self.lens_kind} run directory (--lens RUN)"
            )
        return self

    @property
    def name(self) -> str:
        return self.adapter.kind if self.adapter else self.untrained

    @property
    def scoring_precision(self) -> str:
        return self.eval.precision or self.train.precision
