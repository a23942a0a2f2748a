"""SASRec (Kang & McAuley, ICDM 2018): item + learned position embeddings, causal self-attention blocks,
next-item scores as the dot product of the last hidden state with the (shared) item embeddings.

Inputs are left-padded windows of `max_len` item ids shifted by one (0 = padding), so the most recent
item always sits at the last position and gets the last position embedding, whatever the window's width.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples, history_window
from lifelora.errors import LifeloraError
from lifelora.lens.sasrec.config import SASRecModelConfig


def id_windows(data: PreparedData, samples: NextItemSamples, length: int) -> torch.Tensor:
    """[n, length] int64 model inputs: the `length` items before each sample's target, left-padded,
    ids = item_idx + 1 (0 = padding)."""
    history = history_window(data, samples, length)
    return torch.from_numpy(np.where(history.mask, history.items.astype(np.int64) + 1, 0))


class Block(nn.Module):
    """One pre-norm block: causal multi-head self-attention, then a point-wise ReLU feed-forward.

    Dropout acts on the attention output and in the feed-forward, not on the attention weights as in
    the original: dropout there takes the CPU off its fused attention kernel and was most of the time
    of a training step."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv, self.out = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.ff1, self.ff2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, T, H], or with `last_only` [B, 1, H]: only the last position's output (what scoring needs)."""
        b, t, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        if last_only:
            q, mask, x = q[:, :, -1:], mask[:, :, -1:], x[:, -1:]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(b, -1, h)))
        return x + self.drop(self.ff2(self.drop(F.relu(self.ff1(self.norm2(x))))))


class SASRec(nn.Module):
    """Hidden states [B, T, H] of id windows [B, T ≤ max_len] (ids = item_idx + 1, 0 = padding).

    By default each row is one left-padded sequence. Training packs several users' sequences into a
    row instead: `segments` [B, T] then names each position's sequence (attention stays within it) and
    `positions` [B, T] its position embedding (a sequence's last item always gets the last one)."""

    def __init__(self, config: SASRecModelConfig, n_items: int):
        super().__init__()
        self.n_items, self.max_len = n_items, config.max_len
        self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.hidden, config.heads, config.dropout) for _ in range(config.blocks)
        )
        self.norm = nn.LayerNorm(config.hidden)
        # small embeddings (std 0.02, about pmixer's Xavier init on ML-1M): the untrained logits are near
        # zero, so training starts at a cross-entropy of log(n_items)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """[B, T, H]; with `last_only`, [B, 1, H], the last position's, its last block run for it alone."""
        t = ids.shape[1]
        if t > self.max_len:
            raise LifeloraError(f"SASRec: a window of {t} items is longer than max_len {self.max_len}")
        columns = torch.arange(t, device=ids.device)
        real = ids > 0
        if positions is None:
            positions = (columns + self.max_len - t).expand_as(ids)
        if segments is None:  # one sequence per row; each padding position a sequence of its own
            segments = torch.where(real, 0, -1 - columns)
        x = self.item_emb(ids) * self.item_emb.embedding_dim**0.5 + self.pos_emb(positions)
        x = self.drop(x) * real.unsqueeze(-1)  # padding enters as zeros
        # causal within each sequence; a padding position sees only itself (no empty attention row)
        mask = (segments.unsqueeze(2) == segments.unsqueeze(1)) & (columns.unsqueeze(1) >= columns)
        for depth, block in enumerate(self.blocks, 1):
            x = block(x, mask.unsqueeze(1), last_only=last_only and depth == len(self.blocks))
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item [..., n_items] for hidden states [..., H]."""
        return hidden @ self.item_emb.weight[1:].T
