"""Settings of the shared LoRA: PEFT's LoRA fields (shared by every adapter kind) and the config of one
shared PEFT LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoraSettings(BaseModel):
    """PEFT's LoRA fields, shared by every adapter kind; `target_modules` follows PEFT's matching
    rules (names or a regex)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = ["q_proj", "v_proj"]


class SharedLoraConfig(LoraSettings):
    """One shared PEFT LoRA."""

    kind: Literal["lora"] = "lora"
    modules_to_save: list[str] | None = None
