"""Trainable rows of the input embedding and the LM head for chosen token ids (the item-code tokens of
generative recommendation), beside a personalized adapter's meta-LoRA banks.

Each branch holds a delta [n, d] for its n token ids, zero at first and added to those rows only: every
other row computes exactly what the backbone computes, branches sum as their banks do, and the backbone's
weights never change. A tied LM head (its weight is the input embedding's) reads the embedding's deltas,
so the tie holds; an untied head has its own. Parameter (and saved) names: `{embedding path}.token_delta`
and, when untied, `{head path}.token_delta`. Like the banks, the rows are off inside `disabled_context`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lifelora.adapters.personalized.routing import banks_disabled
from lifelora.errors import LifeloraError


class TokenDelta(nn.Module):
    """One branch's rows: their ids and the delta added to them."""

    def __init__(self, ids: list[int], vocab: int, dim: int, device: torch.device):
        super().__init__()
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long, device=device), persistent=False)
        slot = torch.full((vocab,), -1, dtype=torch.long, device=device)  # each id's row of the delta
        slot[self.ids] = torch.arange(len(ids), device=device)
        self.register_buffer("slot", slot, persistent=False)
        self.token_delta = nn.Parameter(torch.zeros(len(ids), dim, device=device))


class TokenRowsEmbedding(nn.Module):
    """An input embedding plus each branch's delta on its token rows."""

    def __init__(self, base_layer: nn.Embedding):
        super().__init__()
        self.base_layer = base_layer
        self.rows = nn.ModuleDict()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(input_ids)
        if banks_disabled():
            return out
        scale = getattr(self.base_layer, "embed_scale", None)  # scaled embeddings (Gemma) scale the rows
        for rows in self.rows.values():
            slot = rows.slot[input_ids]
            delta = rows.token_delta[slot.clamp(min=0)] * (slot >= 0).unsqueeze(-1)
            out = out + (delta if scale is None else delta * scale).to(out.dtype)
        return out


class TokenRowsHead(nn.Module):
    """An LM head plus each branch's delta on its token rows (the embedding's deltas when tied)."""

    def __init__(self, base_layer: nn.Linear, tied: TokenRowsEmbedding | None):
        super().__init__()
        self.base_layer = base_layer
        self.rows = nn.ModuleDict()  # empty when tied
        self._tied = [tied] if tied is not None else []  # a list: the embedding's deltas are not ours to save

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if banks_disabled():
            return out
        for rows in (self._tied[0] if self._tied else self).rows.values():
            change = F.linear(x, rows.token_delta.to(x.dtype))
            out = out.index_add(-1, rows.ids, change.to(out.dtype))
        return out


def _swap(model: nn.Module, old: nn.Module, new: nn.Module) -> nn.Module:
    name = next(name for name, module in model.named_modules() if module is old)
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    return new


def add_token_rows(model: nn.Module, branch: str, ids: list[int]) -> None:
    """The branch's zero deltas on `ids` in the input embedding and the LM head (wrapped when first asked)."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    layer = embedding.base_layer if isinstance(embedding, TokenRowsEmbedding) else embedding
    vocab, dim = layer.weight.shape
    if max(ids) >= vocab:
        raise LifeloraError(
            f"adapter.trainable_token_indices: id {max(ids)} is past the vocabulary ({vocab} rows); "
            "add the tokens to the backbone first"
        )
    if not isinstance(embedding, TokenRowsEmbedding):
        tied = head is not None and head.weight is embedding.weight
        embedding = _swap(model, embedding, TokenRowsEmbedding(embedding))
        if head is not None:
            head = _swap(model, head, TokenRowsHead(head, embedding if tied else None))
    device = layer.weight.device
    embedding.rows[branch] = TokenDelta(ids, vocab, dim, device)
    if isinstance(head, TokenRowsHead) and not head._tied:
        head.rows[branch] = TokenDelta(ids, head.base_layer.out_features, head.base_layer.in_features, device)


def remove_token_rows(model: nn.Module, branch: str | None = None) -> None:
    """Drop the branch's rows (every branch's when None); wrappers left without rows give their layers back."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if not isinstance(embedding, TokenRowsEmbedding):
        return
    for wrapper in (embedding, head):
        if isinstance(wrapper, TokenRowsEmbedding | TokenRowsHead):
            for name in [branch] if branch is not None else list(wrapper.rows):
                if name in wrapper.rows:
                    del wrapper.rows[name]
    if not embedding.rows:
        _swap(model, embedding, embedding.base_layer)
        if isinstance(head, TokenRowsHead):
            _swap(model, head, head.base_layer)


def token_row_parameters(model: nn.Module, branch: str) -> dict[str, nn.Parameter]:
    """The branch's deltas under stable names (`{layer path}.token_delta`)."""
    return {
        f"{name}.token_delta": module.rows[branch].token_delta
        for name, module in model.named_modules()
        if isinstance(module, TokenRowsEmbedding | TokenRowsHead) and branch in module.rows
    }


@torch.no_grad()
def peft_token_rows(model: nn.Module, branch: str) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The branch's rows as PEFT's trainable tokens: the backbone's rows plus the delta (PEFT replaces rows),
    keyed as PEFT saves them, and its `trainable_token_indices` (a tied head follows the embedding there)."""
    tensors, indices = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, TokenRowsHead) and module._tied and branch in module._tied[0].rows:
            indices[name] = module._tied[0].rows[branch].ids.tolist()
        elif isinstance(module, TokenRowsEmbedding | TokenRowsHead) and branch in module.rows:
            rows = module.rows[branch]
            weight = module.base_layer.weight
            key = f"base_model.model.{name}.token_adapter.trainable_tokens_delta"
            tensors[key] = (weight[rows.ids].float() + rows.token_delta.float()).contiguous()
            indices[name] = rows.ids.tolist()
    return tensors, indices
