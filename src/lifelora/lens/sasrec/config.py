"""SASRec hyperparameters; defaults follow Kang & McAuley (2018) on ML-1M (hidden 64, 2 blocks, window
200) trained with the full-softmax cross-entropy of SASRec+ (Klenitskiy & Vasilev, RecSys '23)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifelora.lens.base import LensTrainSettings


class SASRecModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_len: int = Field(200, ge=1, description="history window: the most recent items the model sees")
    hidden: int = Field(64, ge=1, description="item/position embedding and hidden-state size")
    blocks: int = Field(2, ge=1, description="causal self-attention blocks")
    heads: int = Field(1, ge=1, description="attention heads (must divide hidden)")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> SASRecModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        return self


class SASRecTrainConfig(LensTrainSettings):
    """The shared training settings with SASRec's defaults (batches of 128 users, each user's whole
    training sequence one sample, constant learning rate, no mid-run checkpoints), plus the loss,
    validation and early stopping."""

    epochs: int = Field(200, ge=1, description="at most (early stopping)")
    batch_size: int = Field(128, ge=1, description="users per batch")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast where native (AVX512-BF16/AMX, CUDA); scoring is fp32"
    )
    loss: Literal["ce", "bce"] = Field(
        "ce",
        description="ce: softmax cross-entropy over all items (SASRec+, the strong form); "
        "bce: the original binary loss with one sampled negative per position",
    )
    compile: bool = Field(
        True, description="torch.compile the loss (fuses the full-softmax passes; needs a C++ compiler)"
    )
    patience: int = Field(10, ge=1, description="validations without a better NDCG@10 before stopping")
    eval_every: int = Field(1, ge=1, description="epochs between validations")
    eval_batch_size: int = Field(1024, ge=1, description="users per scoring batch")
    max_minutes: float | None = Field(
        None, gt=0, description="stop after the first validation past this much training time"
    )


class SASRecEvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = Field([5, 10, 20], min_length=1, description="cut-offs of hit/ndcg/recall")
    top_k: int = Field(100, ge=1, description="length of the ranked lists saved per user")


class SASRecConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["sasrec"] = "sasrec"
    dataset: str = "ml-1m"
    preset: str = "rella"
    data_dir: Path | None = Field(None, description="prepared dataset directory (default: the cache)")
    model: SASRecModelConfig = SASRecModelConfig()
    train: SASRecTrainConfig = SASRecTrainConfig()
    eval: SASRecEvalConfig = SASRecEvalConfig()
