"""Settings of RecLoRA's personalized adapter: PEFT's LoRA fields plus the meta-LoRA bank and gate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PersonalizedConfig(BaseModel):
    """N meta-LoRAs per target module mixed per instance by `softmax(gate(h) / T)` (REFERENCE.md)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["personalized"] = "personalized"
    r: int = Field(8, ge=1)
    lora_alpha: float = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | str = ["q_proj", "v_proj"]
    n_loras: int = Field(16, ge=1, le=256, description="meta-LoRAs per target module (N)")
    temperature: float = Field(5.0, gt=0, le=1000, description="softmax temperature of the gate (T)")
    mixing: Literal["factors", "products"] = Field(
        "factors",
        description="factors: A_p = Σ w_i A_i, B_p = Σ w_i B_i (the released code); "
        "products: ΔW = Σ w_i B_i A_i (the paper's summaries)",
    )
    routing: Literal["lens", "uniform"] = Field(
        "lens", description="uniform: w = 1/N for every instance (the no-routing ablation)"
    )
    routing_dim: int | None = Field(
        None, ge=1, description="size of the routing vector h (default: the lens's hidden size)"
    )
    gate_hidden: int = Field(60, ge=1)
    gate_dropout: float = Field(0.1, ge=0, lt=1)

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r
