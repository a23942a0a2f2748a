"""Cumulative strategies: one new adapter branch per period, summed with the frozen branches of the
periods before it, so what a period learned is never overwritten (`sumlora`), and SD-LoRA's variant
whose past branches keep their directions but learn their magnitudes (`sdlora`).

Branches: period 0's is `default`, period t's is `period-{t}`; the newest is the one trained. A new
branch takes the newest branch's config, except trainable token rows: PEFT cannot sum token rows over
LoRA branches, so for every kind the rows stay in the branch that trained them (period 0's), frozen like
the rest of it, and `keep="latest"` never removes that branch (its rows are the item tokens' embeddings).

The past branches' saved files alone give the model (no strategy state is needed to rebuild it), so an
adapter saved after a period evaluates, exports and resumes as any other adapter does.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import parametrize

from lifelora.adapters import Adapter, LoraAdapter
from lifelora.continual.strategies.base import PeriodContext, Strategy, StrategyConfig
from lifelora.errors import LifeloraError

Keep = Literal["all", "latest"]


def period_branch(period: int) -> str:
    return f"period-{period}"


def add_period_branch(adapter: Adapter, period: int, *, keep: Keep = "all", inherit: bool = False) -> str:
    """Freeze every branch, drop the older frozen ones with keep="latest" (not one holding token rows),
    add a trainable branch for `period` (copied from the newest with `inherit`) and return its name."""
    adapter.freeze()
    latest = adapter.branches[-1]
    if keep == "latest":
        for branch in adapter.branches[:-1]:
            if not adapter.config(branch).trainable_token_indices:
                adapter.remove_branch(branch)
    name = period_branch(period)
    config = adapter.config(latest).model_copy(update={"trainable_token_indices": None})
    adapter.add_branch(name, config, trainable=True)
    if inherit:
        source = adapter.branch_parameters(latest)
        with torch.no_grad():
            for key, p in adapter.branch_parameters(name).items():
                p.copy_(source[key])
    return name


def require_lora(adapter: Adapter, strategy: str) -> None:
    if not isinstance(adapter, LoraAdapter):
        raise LifeloraError(f"strategy {strategy!r} works on adapter kind 'lora' only, not {adapter.kind!r}")


def lora_layers(adapter: Adapter, branch: str) -> dict[str, nn.Module]:
    """PEFT's LoRA linear layers that hold `branch`, by the adapted module's stable name (its path in
    the backbone, as in `branch_parameters`: `model.layers.0.self_attn.q_proj`)."""
    from peft.tuners.lora import LoraLayer

    from lifelora.adapters.lora.model import PREFIX

    return {
        name.removeprefix(PREFIX): module
        for name, module in adapter.model.named_modules()
        if isinstance(module, LoraLayer)
        and isinstance(module.get_base_layer(), nn.Linear)
        and branch in module.lora_A
    }


class _CumulativeConfig(StrategyConfig):
    keep: Keep = Field(
        "all", description="all: every past branch stays, summed; latest: only the newest past one"
    )
    inherit: bool = Field(
        False, description="start each new branch as a copy of the newest (else fresh: B = 0)"
    )


class SumLoraConfig(_CumulativeConfig):
    name: Literal["sumlora"] = "sumlora"


class SumLora(Strategy):
    """Past periods are kept exactly (frozen branches); only the new period's branch learns, so the
    cost of not forgetting is a growing sum of LoRAs (or one past branch with keep="latest")."""

    config_class = SumLoraConfig

    @property
    def keep(self) -> Keep:
        return getattr(self.config, "keep", "all")

    @property
    def inherit(self) -> bool:
        return getattr(self.config, "inherit", False)

    def lr_scale(self, period: int, later: float) -> float:
        """A fresh branch starts from zero, as period 0's did: D1's rate (as `retrain`); an inherited one
        continues trained weights: the later periods' rate."""
        return later if period > 0 and self.inherit else 1.0

    def begin_period(self, ctx: PeriodContext) -> Adapter:
        add_period_branch(ctx.adapter, ctx.period, keep=self.keep, inherit=self.inherit)
        return ctx.adapter


class SdLoraConfig(_CumulativeConfig):
    name: Literal["sdlora"] = "sdlora"


def frobenius(b: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """‖B A‖_F from r × r products only: ‖BA‖² = tr(BᵀB · AAᵀ)."""
    b, a = b.detach().double(), a.detach().double()
    return ((b.T @ b) * (a @ a.T)).sum().clamp(min=0).sqrt()


class Magnitude(nn.Module):
    """The parametrization B ↦ B · m / ‖B A‖_F: with A and B frozen the norm is a constant, and
    scaling B scales the branch's ΔW = scaling · B A, so ΔW = m · (its unit direction) · scaling."""

    def __init__(self, norm: torch.Tensor):
        super().__init__()
        self.register_buffer("norm", norm, persistent=False)
        self.magnitude = nn.Parameter(norm.clone())

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        return b * (self.magnitude / self.norm)


class SdLora(SumLora):
    """SD-LoRA: a past branch keeps its direction B_i A_i / ‖B_i A_i‖_F and learns its magnitude m_i,
    so later periods can re-weigh what earlier ones learned without rewriting it.

    One magnitude per (past branch, adapted module), as SD-LoRA's per-layer scalars: the norms of ΔW
    differ a lot between modules, and one scalar per branch would rescale them all together. m_i starts
    at ‖B_i A_i‖_F, so a period starts from the model the last one left.

    The magnitudes live on the past `lora_B` weights as a `torch.nn.utils.parametrize` parametrization
    during the period (PEFT's forward and its merge read the parametrized weight), and `end_period`
    folds them into B_i (B_i ← m_i B_i / ‖B_i A_i‖_F): the saved branches are plain PEFT files that give
    the trained model by themselves, and the next period's m_i start at the folded norms, which is the
    same model and the same gradients as carrying m_i over (up to m_i's sign, folded into B_i).
    Adapter kind `lora` only. Do not save the adapter between `begin_period` and `end_period`: PEFT would
    write the parametrization's keys.
    """

    config_class = SdLoraConfig

    def __init__(self, config: SdLoraConfig):
        super().__init__(config)
        self._live: dict[tuple[str, str], nn.Module] = {}  # (branch, module) → its parametrized lora_B
        self.magnitudes: dict[str, torch.Tensor] = {}  # "branch/module" → m at the last end_period

    def begin_period(self, ctx: PeriodContext) -> Adapter:
        adapter = ctx.adapter
        require_lora(adapter, self.title)
        self._fold()
        super().begin_period(ctx)
        for branch in adapter.branches[:-1]:
            for module, layer in lora_layers(adapter, branch).items():
                b = layer.lora_B[branch]
                norm = frobenius(b.weight, layer.lora_A[branch].weight).to(b.weight.dtype)
                if norm == 0:  # no direction (a branch that never trained): it stays zero
                    continue
                parametrize.register_parametrization(b, "weight", Magnitude(norm))
                self._live[branch, module] = b
        return adapter

    def end_period(self, ctx: PeriodContext) -> None:
        require_lora(ctx.adapter, self.title)
        self._fold()

    @torch.no_grad()
    def _fold(self) -> None:
        """B_i ← m_i B_i / ‖B_i A_i‖_F, the parametrizations removed (and m_i recorded)."""
        if not self._live:
            return
        self.magnitudes = {}
        for (branch, module), b in self._live.items():
            self.magnitudes[f"{branch}/{module}"] = b.parametrizations.weight[0].magnitude.detach().clone()
            parametrize.remove_parametrizations(b, "weight", leave_parametrized=True)
        self._live = {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The magnitudes the last period ended with (a record: the saved branches hold them already)."""
        return dict(self.magnitudes)

    def load_state_dict(self, state: dict[str, torch.Tensor], adapter: Adapter) -> None:
        require_lora(adapter, self.title)
        self._live = {}
        self.magnitudes = dict(state)
