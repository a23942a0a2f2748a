"""Lens hyperparameters; defaults follow ReLLa/RecLoRA's DIN on ML-1M (embed 64, history 60, MLP 3×256)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from lifelora.io import history_index_file
from lifelora.lens.base import LensTrainSettings


class LensModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embed_dim: int = Field(64, ge=1)
    history_length: int = Field(60, ge=1)
    use_ratings: bool = Field(True, description="embed the ratings of history items (ablation: false)")
    history_fields: Literal["id", "all"] = Field(
        "id",
        description="history items by their id embedding (ReLLa's DIN) or by all item fields "
        "(id, genre, decade), the attention query then projected into the same space",
    )
    attention_units: list[int] = [64]
    mlp_units: list[int] = Field([256, 256, 256], min_length=1, description="the last is the hidden size")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class LensTrainConfig(LensTrainSettings):
    """The shared training settings with the lens's defaults (one large batch per step, constant learning
    rate, no clipping, no mid-run checkpoints), plus validation and early stopping."""

    epochs: int = Field(
        10,
        ge=1,
        validation_alias=AliasChoices("epochs", "max_epochs"),
        description="at most (early stopping); `max_epochs` is accepted as its old name",
    )
    batch_size: int = Field(1024, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "fp32", description="bf16 autocast measured ~15x slower for this small model on an AVX2 CPU"
    )
    eval_batch_size: int = Field(8192, ge=1)
    patience: int = Field(2, ge=1, description="epochs without a better validation AUC before stopping")
    max_train_samples: int | None = Field(None, ge=1, description="train on the first N (quick runs)")


class LensConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = "ml-100k"
    preset: str = "rella"
    data_dir: Path | None = Field(None, description="prepared dataset directory (default: the cache)")
    kind: Literal["din", "sim"] = "din"
    history_index: Path | None = Field(
        None,
        description="SIM: safetensors with int32 [n_split, K] history positions per split "
        "(default: what `lifelora retrieve DATASET --k HISTORY_LENGTH` writes)",
    )
    model: LensModelConfig = LensModelConfig()
    train: LensTrainConfig = LensTrainConfig()

    @model_validator(mode="after")
    def _sim_history_index(self) -> LensConfig:
        if self.kind == "sim" and self.history_index is None:
            self.history_index = history_index_file(self.dataset, "semantic", self.model.history_length)
        elif self.history_index is not None:
            self.history_index = self.history_index.expanduser()
        return self
