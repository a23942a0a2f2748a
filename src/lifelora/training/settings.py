"""The one schema of training settings, shared by the LLM adapters and (with its own defaults) the lens."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1, description="per process, per micro-batch")
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear",
        description="after the warm-up: linear decay to 0, cosine decay to 0 (PESO's release), or a "
        "constant learning rate",
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (None: no clipping)")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto (bf16 where native), bf16 or fp32"
    )
    checkpoint_every: int | None = Field(
        100, ge=1, description="optimizer steps between checkpoints (None: no mid-run checkpoints)"
    )
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = Field(42, description="data order (the caller seeds model init and dropout)")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="stop after this much training time (at an optimizer step; evaluation and "
        "checkpoints not counted), for runs compared at equal wall time; the schedule still spans "
        "`epochs` (use schedule: constant)",
    )
