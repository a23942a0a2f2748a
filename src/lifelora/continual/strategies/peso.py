"""PESO (Proximally rEgularized Single evolving lOra): one adapter carried from period to period, warm
started from its last frozen state and pulled toward it by a proximal term (`proximal.py`). The anchor is
the latest frozen adapter only."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lifelora.adapters import Adapter
from lifelora.continual.strategies.base import PeriodContext, Strategy, StrategyConfig
from lifelora.continual.strategies.proximal import Proximal, ProximalHook, regularized
from lifelora.training import TrainHook


class PesoConfig(StrategyConfig):
    name: Literal["peso"] = "peso"
    proximal: Proximal = Field(
        "softmax_kl",
        description="softmax_kl (PESO's released form), softmax_kl_sized (each factor's KL × its size: a "
        "pull that does not fade with it), l2 ((λ/2)·‖v − v_prev‖², the paper's formula) or frobenius "
        "(the release's L2 ablation: unsquared norms averaged over modules)",
    )
    weight: float = Field(
        5.0, ge=0, description="λ (PESO: 2.0 on Instruments, 5.0 on Movies & TV and Books; 0 = finetune)"
    )


class Peso(Strategy):
    config_class = PesoConfig

    def __init__(self, config: PesoConfig):
        super().__init__(config)
        self.anchor: dict[str, torch.Tensor] = {}

    def hooks(self, ctx: PeriodContext) -> list[TrainHook]:
        if not self.anchor or self.config.weight == 0:
            return []
        live = regularized(ctx.adapter.branch_parameters())
        return [ProximalHook(live, self.anchor, self.config.proximal, self.config.weight)]

    def end_period(self, ctx: PeriodContext) -> None:
        self.anchor = regularized(ctx.adapter.snapshot())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.anchor)

    def load_state_dict(self, state: dict[str, torch.Tensor], adapter: Adapter) -> None:
        self.anchor = dict(state)
