"""Settings of RecLoRA's personalized adapter: PEFT's LoRA fields plus the meta-LoRA bank and gate."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lifelora.adapters.lora import LoraSettings


class PersonalizedConfig(LoraSettings):
    """N meta-LoRAs per target module mixed per instance by `softmax(gate(h) / T)` (RecLoRA, arXiv 2408.03533)."""

    kind: Literal["personalized"] = "personalized"
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
