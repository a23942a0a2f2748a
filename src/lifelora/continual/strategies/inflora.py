"""InfLoRA (Liang & Li, CVPR 2024): each period's new branch gets a designed, frozen A whose rows span
the directions of the period's inputs that no earlier period's inputs occupy, and trains only B, so
the new branch reads (almost) nothing of what earlier periods' inputs look like and leaves the outputs
the earlier periods were trained on (nearly) alone.

Per adapted module, with H the period's inputs to the layer (one column per token) and M the stored
subspace of earlier periods' inputs (orthonormal columns):
- begin_period t: C = H Hᵀ on up to `batches` training batches of period t, C' = (I − MMᵀ) C (I − MMᵀ);
  A ← the top-r eigenvectors of C' as rows, taken inside M's orthogonal complement (so A M = 0, and
  never one of M's own directions, which C' maps to 0 too), frozen; B = 0, trained.
- end_period t (period 0 too, on D1): C again with the trained model; M grows by the leading
  eigenvectors of C' until M ∪ new keeps `threshold` of C's energy (GPM's criterion: nothing is added
  when M already keeps that much).

Branches accumulate as in `sumlora` (keep all, fresh). Adapter kind `lora` only. Tokens are counted as
the layers see them, padding included. Memory: one d_in × d_in fp32 matrix per adapted module while
collecting (q/k/v of a layer see the same inputs and each keeps its own copy).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from lifelora.adapters import Adapter
from lifelora.continual.strategies.base import PeriodContext, StrategyConfig
from lifelora.continual.strategies.cumulative import SumLora, add_period_branch, lora_layers, require_lora


class InfLoraConfig(StrategyConfig):
    name: Literal["inflora"] = "inflora"
    threshold: float = Field(
        0.95, gt=0, le=1, description="energy of a period's inputs the stored subspace keeps when it grows"
    )
    batches: int = Field(32, ge=1, description="training batches whose layer inputs are collected")


@torch.no_grad()
def input_covariances(
    layers: dict[str, nn.Module], forward: Callable[[int], None], batches: int
) -> dict[str, torch.Tensor]:
    """Σ x xᵀ (fp32) over every token's input x to each layer, on `forward(batches)`'s batches."""
    covariances: dict[str, torch.Tensor] = {}

    def capture(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].detach()
            x = x.reshape(-1, x.shape[-1]).float()
            if name in covariances:
                covariances[name].addmm_(x.T, x)
            else:
                covariances[name] = x.T @ x

        return hook

    handles = [layer.get_base_layer().register_forward_pre_hook(capture(n)) for n, layer in layers.items()]
    try:
        forward(batches)
    finally:
        for handle in handles:
            handle.remove()
    return covariances


def complement(subspace: torch.Tensor | None, dim: int, device: torch.device) -> torch.Tensor:
    """An orthonormal basis [dim, dim − k] of the directions orthogonal to the subspace's k columns."""
    if subspace is None or subspace.shape[1] == 0:
        return torch.eye(dim, device=device)
    q, _ = torch.linalg.qr(subspace.to(device), mode="complete")
    return q[:, subspace.shape[1] :]


def residual_directions(
    covariance: torch.Tensor, subspace: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors [d, d − k] and eigenvalues (descending) of (I − MMᵀ) C (I − MMᵀ) within M's
    complement (its other eigenvectors are M's own, eigenvalue 0)."""
    q = complement(subspace, covariance.shape[0], covariance.device)
    inner = q.T @ covariance @ q
    values, vectors = torch.linalg.eigh((inner + inner.T) / 2)
    return q @ vectors.flip(1), values.flip(0).clamp(min=0)


def grown(covariance: torch.Tensor, subspace: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """M plus the fewest residual directions with which it keeps `threshold` of C's energy tr(C)."""
    directions, values = residual_directions(covariance, subspace)
    old = subspace.to(covariance.device) if subspace is not None else directions[:, :0]
    total = torch.trace(covariance)
    need = threshold * total - (total - values.sum())  # what the stored directions leave to the new ones
    if need <= 0 or len(values) == 0:
        return old
    count = min(int((torch.cumsum(values, 0) < need).sum()) + 1, len(values))
    return torch.cat([old, directions[:, :count]], dim=1)


class InfLora(SumLora):
    config_class = InfLoraConfig

    def __init__(self, config: InfLoraConfig):
        super().__init__(config)
        self.subspace: dict[str, torch.Tensor] = {}  # module → M [d_in, k], orthonormal columns

    def begin_period(self, ctx: PeriodContext) -> Adapter:
        adapter = ctx.adapter
        require_lora(adapter, self.title)
        covariances = input_covariances(lora_layers(adapter, adapter.branches[-1]), ctx.forward, self.batches)
        new = add_period_branch(adapter, ctx.period)
        with torch.no_grad():
            for module, layer in lora_layers(adapter, new).items():
                a, b = layer.lora_A[new].weight, layer.lora_B[new].weight
                rows = torch.zeros_like(a)
                if module in covariances:
                    directions, _ = residual_directions(covariances[module], self.subspace.get(module))
                    found = directions[:, : a.shape[0]].T
                    rows[: found.shape[0]] = found.to(a.dtype)
                    if found.shape[0] < a.shape[0]:
                        ctx.log(
                            f"{self.title}: {module} has {found.shape[0]} free directions for rank {a.shape[0]}"
                        )
                a.copy_(rows)
                a.requires_grad_(False)
                b.zero_()
        return adapter

    def end_period(self, ctx: PeriodContext) -> None:
        adapter = ctx.adapter
        require_lora(adapter, self.title)
        covariances = input_covariances(lora_layers(adapter, adapter.branches[-1]), ctx.forward, self.batches)
        for module, covariance in covariances.items():
            self.subspace[module] = grown(covariance, self.subspace.get(module), self.config.threshold)

    @property
    def batches(self) -> int:
        return self.config.batches

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {module: m.contiguous() for module, m in self.subspace.items() if m.shape[1]}

    def load_state_dict(self, state: dict[str, torch.Tensor], adapter: Adapter) -> None:
        require_lora(adapter, self.title)
        self.subspace = dict(state)
