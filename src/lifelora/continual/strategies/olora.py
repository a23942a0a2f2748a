"""O-LoRA (Wang et al., 2023): the cumulative branches of `sumlora` (keep all, each new branch fresh),
plus a loss term that pushes the new branch's input subspace (the rows of its A) orthogonal to every
past branch's, so the new branch learns in directions the past ones do not read:

    weight · Σ_modules Σ_past ‖A_new A_pastᵀ‖²_F

(O-LoRA's released code sums absolute values; the squared Frobenius norm is the paper's form and smooth.)
A personalized bank's A [N, r, d_in] counts as its N·r rows.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from lifelora.adapters import Adapter
from lifelora.continual.strategies.base import PeriodContext, StrategyConfig
from lifelora.continual.strategies.cumulative import SumLora
from lifelora.training import TrainContext, TrainHook


class OLoraConfig(StrategyConfig):
    name: Literal["olora"] = "olora"
    weight: float = Field(0.5, ge=0, description="λ of the orthogonality term (O-LoRA: 0.5)")


def a_factors(adapter: Adapter, branch: str) -> dict[str, torch.Tensor]:
    """The branch's A per adapted module, as rows [*, d_in] (live parameters, not copies)."""
    return {
        name.split(".lora_A")[0]: p.reshape(-1, p.shape[-1])
        for name, p in adapter.branch_parameters(branch).items()
        if ".lora_A" in name
    }


def orthogonality(new: dict[str, torch.Tensor], past: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_modules ‖A_new Pᵀ‖²_F, P = the module's past A's stacked (= the sum over past branches)."""
    terms = [(new[m].float() @ p.float().T).pow(2).sum() for m, p in past.items() if m in new]
    if not terms:
        raise ValueError("no adapted module is shared by the new branch and the past ones")
    return torch.stack(terms).sum()


class OrthogonalityHook(TrainHook):
    """weight · `orthogonality(new, past)` added to every micro-batch's loss; logs the term's value."""

    def __init__(self, new: dict[str, torch.Tensor], past: dict[str, torch.Tensor], weight: float):
        self.new, self.past, self.weight = new, past, weight
        self._value: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return "orthogonality"

    def loss_term(self, ctx: TrainContext) -> torch.Tensor:
        term = self.weight * orthogonality(self.new, self.past)
        self._value = term.detach()
        return term

    def step_metrics(self, ctx: TrainContext) -> dict[str, float]:
        value, self._value = self._value, None
        return {} if value is None else {"orthogonality": float(value)}


class OLora(SumLora):
    config_class = OLoraConfig

    def hooks(self, ctx: PeriodContext) -> list[TrainHook]:
        adapter = ctx.adapter
        *past_branches, new = adapter.branches
        if not past_branches or self.config.weight == 0:
            return []
        past: dict[str, list[torch.Tensor]] = {}
        for branch in past_branches:  # frozen: fixed copies, stacked once per module
            for module, a in a_factors(adapter, branch).items():
                past.setdefault(module, []).append(a.detach())
        stacked = {module: torch.cat(parts) for module, parts in past.items()}
        return [OrthogonalityHook(a_factors(adapter, new), stacked, self.config.weight)]
