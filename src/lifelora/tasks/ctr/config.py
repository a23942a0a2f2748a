"""Configuration of an LLM CTR run (`lifelora train` / `evaluate`), PEFT- and transformers-shaped."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from lifelora.adapters import AdapterConfig, SharedLoraConfig
from lifelora.tasks.config import RunConfig
from lifelora.training import TrainSettings


class PromptSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: int = Field(10, ge=0, description="history items shown in the text prompt (K)")
    retriever: Literal["semantic", "recent"] = "semantic"
    layout: Literal["target-last", "rella"] = Field(
        "target-last", description="target-last: instructions before the question (shareable prefix)"
    )
    pca_dim: int = Field(512, ge=1)


class SubsetSettings(BaseModel):
    """Few-shot training subset and fixed evaluation subset (None = the whole split)."""

    model_config = ConfigDict(extra="forbid")

    train: int | None = Field(70_000, ge=1)
    eval: int | None = Field(10_000, ge=1)
    seed: int = 42


class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["valid", "test"] = "test"
    batch_size: int = Field(32, ge=1)
    precision: Literal["auto", "fp32", "bf16"] | None = Field(
        None,
        description="scoring precision (null: the training's); fp32 gives the same scores on every CPU, "
        "whether it has native bf16 or not",
    )


class CTRConfig(RunConfig):
    task: Literal["ctr"] = "ctr"
    adapter: AdapterConfig | None = Field(
        default_factory=SharedLoraConfig, description="lora, personalized, or null = zero-shot"
    )
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    subset: SubsetSettings = Field(default_factory=SubsetSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
