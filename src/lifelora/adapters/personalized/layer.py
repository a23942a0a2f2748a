"""A linear layer with a bank of N meta-LoRAs, mixed per instance in a few batched matrix products.

For a batch x [B, L, d_in] with mixing weights w [B, N] (one row per instance, shared by its tokens):

- factors:  A_p = Σ w_i A_i, B_p = Σ w_i B_i per instance (two small einsums), then two batched
  products x A_pᵀ B_pᵀ: the per-token cost of a rank-r LoRA plus N·r·(d_in + d_out) per instance.
- products: Σ w_i B_i A_i x = B_cat · diag(w ⊗ 1_r) · A_cat x: one rank-N·r LoRA with the
  rank-r blocks of its hidden activations scaled by w.

Routing may also give one vector per token (h [B, L, d], weights w [B, L, N]). Products take it at no
extra cost, since the scaling already happens per token on the hidden activations; factors would have to
merge one LoRA per token (N·r·(d_in + d_out) each), so they refuse it rather than silently averaging.

Neither form loops over samples or meta-LoRAs. A `PersonalizedLinear` holds one bank per adapter branch
and adds every bank's delta to its base layer's output.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lifelora.adapters.personalized.config import PersonalizedConfig
from lifelora.adapters.personalized.routing import banks_disabled, current_routing
from lifelora.errors import LifeloraError

_FACTORS_PER_TOKEN = (
    "mixing: factors merges one LoRA per instance and cannot route each token ([batch, tokens, d]); "
    "use mixing: products"
)


class Gate(nn.Module):
    """LayerNorm → Linear(d_h, 60) → ReLU → Dropout(0.1) → Linear(60, N), as in RecLoRA's code."""

    def __init__(self, routing_dim: int, n_loras: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(routing_dim),
            nn.Linear(routing_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_loras),
        )

    def forward(self, routing: torch.Tensor) -> torch.Tensor:
        return self.net(routing)


class MetaLoraBank(nn.Module):
    """One branch of a personalized layer: N meta-LoRAs and the gate that mixes them per instance
    (or, with mixing products, per token).

    Its state_dict keys (`lora_A`, `lora_B`, `gate.net...`) are the saved file's keys after the layer name."""

    def __init__(
        self, d_in: int, d_out: int, device: torch.device, config: PersonalizedConfig, routing_dim: int
    ):
        super().__init__()
        self.config = config
        self.routing_dim = routing_dim
        n, r = config.n_loras, config.r
        dtype = torch.float32
        # the order of random draws is the saved adapters' contract: A per meta-LoRA, then the gate
        self.lora_A = nn.Parameter(torch.empty(n, r, d_in, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(n, d_out, r, device=device, dtype=dtype))
        for a in self.lora_A:  # each meta-LoRA initialised like PEFT's lora_A (Kaiming-uniform)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.gate = Gate(routing_dim, n, config.gate_hidden, config.gate_dropout).to(device)
        self.dropout = nn.Dropout(config.lora_dropout) if config.lora_dropout > 0 else nn.Identity()

    def mixing_weights(self, routing: torch.Tensor) -> torch.Tensor:
        """Weights w = softmax(gate(h) / T) (or 1/N with uniform routing): [B, N] for one routing
        vector per instance (h [B, d]), [B, T, N] for one per token (h [B, T, d], products only)."""
        if routing.dim() not in (2, 3) or routing.shape[-1] != self.routing_dim:
            raise LifeloraError(
                f"routing vectors must have shape [batch, {self.routing_dim}] or "
                f"[batch, tokens, {self.routing_dim}], got {list(routing.shape)}"
            )
        if routing.dim() == 3 and self.config.mixing == "factors":
            raise LifeloraError(_FACTORS_PER_TOKEN)
        if self.config.routing == "uniform":
            n = self.config.n_loras
            return torch.full((*routing.shape[:-1], n), 1.0 / n, device=routing.device)
        logits = self.gate(routing.to(self.lora_A.dtype).detach())
        return torch.softmax(logits.float() / self.config.temperature, dim=-1)

    def _weights_for(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.mixing_weights(current_routing())
        batch = x.shape[0]
        if batch != weights.shape[0]:  # beams or candidates expanded from each instance
            if batch % weights.shape[0]:
                raise LifeloraError(
                    f"routing has {weights.shape[0]} rows for a batch of {batch}: one row per instance"
                )
            weights = weights.repeat_interleave(batch // weights.shape[0], dim=0)
        if weights.dim() == 3 and weights.shape[1] != x.shape[1]:
            raise LifeloraError(
                f"per-token routing has {weights.shape[1]} tokens but the layer input has {x.shape[1]}: "
                "routing [batch, tokens, d] needs one vector per input token"
            )
        return weights

    def delta(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """scaling · Σ-mixed LoRA(x) for x [B, L, d_in] and weights [B, N] (or [B, L, N], products only).

        `scaling` rides on the [B, N] weights of one factor (for factors, B_p's), not on the [B, L, d_out]
        output: one pass over the output less, ~20% of this delta's forward at 256 × 32 on a CPU."""
        dtype = (
            x.dtype
            if not torch.is_autocast_enabled(x.device.type)
            else torch.get_autocast_dtype(x.device.type)
        )
        a, b = self.lora_A.to(dtype), self.lora_B.to(dtype)
        scaled = (weights * self.config.scaling).to(dtype)
        x = self.dropout(x).to(dtype)
        if self.config.mixing == "factors":
            if weights.dim() != 2:
                raise LifeloraError(_FACTORS_PER_TOKEN)
            a_p = torch.einsum("bn,nrd->brd", weights.to(dtype), a)
            b_p = torch.einsum("bn,nor->bor", scaled, b)
            return torch.bmm(torch.bmm(x, a_p.transpose(1, 2)), b_p.transpose(1, 2))
        n, r, d_in = a.shape
        hidden = torch.matmul(x, a.reshape(n * r, d_in).t())
        scale = scaled.repeat_interleave(r, dim=-1)  # [B, N·r] or [B, L, N·r]
        hidden = hidden * (scale.unsqueeze(1) if scale.dim() == 2 else scale)
        return torch.matmul(hidden, b.permute(1, 0, 2).reshape(b.shape[1], n * r).t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """This bank's delta for x [B, L, d_in], mixed with the current routing vectors (per instance or
        per token)."""
        return self.delta(x, self._weights_for(x))

    @torch.no_grad()
    def instance_lora(self, routing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """One instance's LoRA as plain (A [r', d_in], B [d_out, r'], r'): rank r for factors,
        the exact rank-N·r form for products (weights folded into A)."""
        w = self.mixing_weights(routing.reshape(1, -1))[0].to(self.lora_A.dtype)
        if self.config.mixing == "factors":
            a = torch.einsum("n,nrd->rd", w, self.lora_A)
            b = torch.einsum("n,nor->or", w, self.lora_B)
            return a, b, self.config.r
        n, r, d_in = self.lora_A.shape
        a = (self.lora_A * w.view(n, 1, 1)).reshape(n * r, d_in)
        b = self.lora_B.permute(1, 0, 2).reshape(self.lora_B.shape[1], n * r)
        return a, b, n * r


class PersonalizedLinear(nn.Module):
    """A linear layer plus one meta-LoRA bank per branch (`add_bank`): base(x) + Σ_branches bank(x)."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.banks = nn.ModuleDict()

    def add_bank(self, branch: str, config: PersonalizedConfig, routing_dim: int) -> PersonalizedLinear:
        """Adds the bank `branch`; returns the layer (so a new one is built in one expression)."""
        base = self.base_layer
        self.banks[branch] = MetaLoraBank(
            base.in_features, base.out_features, base.weight.device, config, routing_dim
        )
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if banks_disabled():
            return result
        flat = x.dim() == 2
        xs = x.unsqueeze(1) if flat else x
        for bank in self.banks.values():
            change = bank(xs)
            change = change.squeeze(1) if flat else change
            result = result + change.to(result.dtype)
        return result
