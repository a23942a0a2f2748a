"""DIN (Zhou et al. 2018) as ReLLa/RecLoRA use it: target attention without softmax over an
item+rating history, then an MLP whose last hidden layer is the vector that routes RecLoRA.

History items are represented by their item-id embedding (with the rating), as in ReLLa's DIN,
or with `history_fields: all` by all their item fields; the target's fields enter the MLP."""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F

from lifelora.lens.din.config import LensModelConfig
from lifelora.lens.din.features import ITEM_FIELDS, LensBatch


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        layers += [nn.Linear(d_in, d_out), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class TargetAttention(nn.Module):
    """weight(t, h) = MLP([t, h, t−h, t⊙h]); pooled = Σ mask·weight·h (no softmax, as in DIN).

    The first layer's weight W = [W_t | W_h | W_d | W_p] is applied block-wise,
    (W_t + W_d)·t + (W_h − W_d)·h + W_p·(t⊙h), which equals W·[t, h, t−h, t⊙h] without
    materialising the 4·D-wide concatenation for every history position.
    """

    def __init__(self, dim: int, units: list[int]):
        super().__init__()
        width = units[0] if units else 1
        self.first = nn.Linear(4 * dim, width)
        rest = [nn.ReLU(), *mlp(units, dropout=0.0), nn.Linear(units[-1], 1)] if units else []
        self.rest = nn.Sequential(*rest)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w_t, w_h, w_d, w_p = self.first.weight.chunk(4, dim=1)
        per_target = F.linear(target, w_t + w_d, self.first.bias).unsqueeze(1)
        per_item = F.linear(history, w_h - w_d) + F.linear(target.unsqueeze(1) * history, w_p)
        weights = self.rest(per_target + per_item).squeeze(-1)
        weights = weights * mask.to(weights.dtype)
        return torch.einsum("bk,bkd->bd", weights, history)


class DIN(nn.Module):
    def __init__(self, config: LensModelConfig, field_sizes: dict[str, int], user_fields: list[str]):
        super().__init__()
        self.config = config
        self.user_fields = list(user_fields)
        e = config.embed_dim
        self.user_embeddings = nn.ModuleList(
            nn.Embedding(field_sizes[f"user.{f}"], e, padding_idx=0) for f in self.user_fields
        )
        self.item_embeddings = nn.ModuleList(
            nn.Embedding(field_sizes[f"item.{f}"], e, padding_idx=0) for f in ITEM_FIELDS
        )
        if config.use_ratings:
            self.rating_embedding = nn.Embedding(field_sizes["rating"], e, padding_idx=0)
        history_width = len(ITEM_FIELDS) if config.history_fields == "all" else 1
        history_width += 1 if config.use_ratings else 0
        self.history_proj = nn.Sequential(nn.Linear(e * history_width, e), nn.ReLU())
        self.attention = TargetAttention(e, config.attention_units)
        in_dim = e * (len(self.user_fields) + len(ITEM_FIELDS) + 1)
        self.mlp = mlp([in_dim, *config.mlp_units], config.dropout)
        self.head = nn.Linear(config.mlp_units[-1], 1)

    @property
    def hidden_size(self) -> int:
        return self.config.mlp_units[-1]

    def hidden(self, batch: LensBatch) -> torch.Tensor:
        """The [B, hidden_size] vector RecLoRA's gates read."""
        users = torch.cat(
            [emb(batch.user_fields[:, i]) for i, emb in enumerate(self.user_embeddings)], dim=-1
        )
        target_fields = [emb(batch.item_fields[:, i]) for i, emb in enumerate(self.item_embeddings)]
        history, query = self._history_and_query(batch, target_fields)
        pooled = self.attention(query, history, batch.history_mask)
        return self.mlp(torch.cat([users, *target_fields, pooled], dim=-1))

    def _history_and_query(
        self, batch: LensBatch, target_fields: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.history_fields == "id":
            parts = [self.item_embeddings[0](batch.history_items[..., 0])]
            query_parts = None
        else:
            parts = [emb(batch.history_items[..., i]) for i, emb in enumerate(self.item_embeddings)]
            query_parts = list(target_fields)
        if self.config.use_ratings:
            parts.append(self.rating_embedding(batch.history_ratings))
            if query_parts is not None:  # the target has no rating yet: the zero "unknown" code
                query_parts.append(torch.zeros_like(target_fields[0]))
        history = self.history_proj(torch.cat(parts, dim=-1))
        query = target_fields[0] if query_parts is None else self.history_proj(torch.cat(query_parts, dim=-1))
        return history, query

    def forward(self, batch: LensBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B], hidden [B, H])."""
        hidden = self.hidden(batch)
        return self.head(hidden).squeeze(-1), hidden
