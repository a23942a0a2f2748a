"""Settings of the shared LoRA: PEFT's LoRA fields (shared by every adapter kind) and the config of one
shared PEFT LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LoraSettings(BaseModel):
    """PEFT's LoRA fields, shared by every adapter kind; `target_modules` follows PEFT's matching
    rules (names or a regex)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = ["q_proj", "v_proj"]
    trainable_token_indices: list[int] | None = Field(
        None,
        description="vocabulary ids whose rows of the input embedding and the LM head train beside the "
        "LoRA (new tokens, such as item codes); every other row stays the backbone's",
    )

    @field_validator("trainable_token_indices")
    @classmethod
    def _sorted_ids(cls, ids: list[int] | None) -> list[int] | None:
        """Sorted and unique, so a config read back from a saved adapter compares equal."""
        if ids and min(ids) < 0:
            raise ValueError("token ids are not negative")
        return sorted(set(ids)) if ids else None


class SharedLoraConfig(LoraSettings):
    """One shared PEFT LoRA. `modules_to_save` trains whole modules (e.g. ["embed_tokens", "lm_head"]:
    every row); with a tied LM head PEFT trains one copy that both use (`ensure_weight_tying`)."""

    kind: Literal["lora"] = "lora"
    modules_to_save: list[str] | None = None
