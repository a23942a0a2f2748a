"""SASRec (Kang & McAuley, ICDM 2018): item + learned position embeddings, causal self-attention blocks,
next-item scores as the dot product of the last hidden state with the (shared) item embeddings; and the
trained lens around it: scores, user vectors for routing, safetensors + JSON save/load.

Inputs are left-padded windows of `max_len` item ids shifted by one (0 = padding), so the most recent
item always sits at the last position and gets the last position embedding, whatever the window's width.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from lifelora.data.prepared import PreparedData
from lifelora.data.sequential import NextItemSamples, history_window
from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, read_json, write_json
from lifelora.lens.sasrec_config import SASRecConfig, SASRecModelConfig

STATE_FILE = "sasrec.json"


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


class SASRecLens:
    """A SASRec trained on one prepared dataset: next-item scores and per-sample user vectors.

    A user with no history (cold start) gets the model's output for an all-padding window: one learned
    vector, the same for every such user, and item scores from it (not an error)."""

    def __init__(self, config: SASRecConfig, model: SASRec, fingerprint: str):
        self.config, self.model, self.fingerprint = config, model, fingerprint

    @classmethod
    def create(cls, config: SASRecConfig, data: PreparedData) -> SASRecLens:
        """An untrained lens over the dataset's whole item catalogue."""
        return cls(config, SASRec(config.model, data.items.height), data.meta["fingerprint"])

    @property
    def hidden_size(self) -> int:
        return self.config.model.hidden

    def check_matches(self, data: PreparedData) -> None:
        if data.meta["fingerprint"] != self.fingerprint:
            raise LifeloraError(
                f"{data.directory}: this SASRec was trained on another dataset "
                f"(fingerprint {self.fingerprint}, data {data.meta['fingerprint']})"
            )

    def windows(self, data: PreparedData, samples: NextItemSamples) -> torch.Tensor:
        """The model's input for each sample: its `max_len` most recent history items, ids shifted by 1."""
        self.check_matches(data)
        return id_windows(data, samples, self.config.model.max_len)

    @torch.no_grad()
    def _last_hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The last position's output per window, in batches of windows of similar length, each cut to
        its longest history (left padding never changes a real position's output)."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = torch.zeros(len(ids), self.hidden_size)
        order = torch.argsort((ids > 0).sum(dim=1))
        size = self.config.train.eval_batch_size
        for start in range(0, len(ids), size):
            rows = order[start : start + size]
            batch = ids[rows]
            real = (batch > 0).any(dim=0)
            # all cold start: one padding position gives the same output as a window of them
            first = int(real.int().argmax()) if real.any() else batch.shape[1] - 1
            out[rows] = self.model(batch[:, first:].to(device), last_only=True)[:, -1].float().cpu()
        return out

    def user_vectors(self, data: PreparedData, samples: NextItemSamples) -> torch.Tensor:
        """[n, hidden]: the last position's hidden state over each sample's history window, the vector
        that routes a personalized LoRA (cold start: see the class docstring)."""
        return self._last_hidden(self.windows(data, samples))

    @torch.no_grad()
    def scores(self, data: PreparedData, samples: NextItemSamples) -> np.ndarray:
        """[n, n_items] next-item scores (float32) of each sample's target position."""
        hidden = self.user_vectors(data, samples)
        weight = self.model.item_emb.weight[1:].detach().float().cpu()
        return (hidden @ weight.T).numpy()

    def scorer(self, data: PreparedData) -> Callable[[NextItemSamples], np.ndarray]:
        """`scores` bound to `data`: the score function `lens.next_item` ranks with."""
        return lambda samples: self.scores(data, samples)

    def save(self, directory: Path) -> None:
        with atomic_dir(directory) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"))
            write_json(
                tmp / STATE_FILE,
                {
                    "config": self.config.model_dump(mode="json"),
                    "fingerprint": self.fingerprint,
                    "n_items": self.model.n_items,
                    "hidden_size": self.hidden_size,
                },
            )

    @classmethod
    def load(cls, directory: str | Path) -> SASRecLens:
        """A saved lens: the directory itself or a run directory holding it in `lens/`."""
        directory = Path(directory)
        if (directory / "lens" / STATE_FILE).is_file():
            directory = directory / "lens"
        if not (directory / STATE_FILE).is_file():
            raise LifeloraError(
                f"{directory}: not a SASRec lens (no {STATE_FILE}); train one with `lifelora lens train`"
            )
        state = read_json(directory / STATE_FILE)
        config = SASRecConfig.model_validate(state["config"])
        model = SASRec(config.model, state["n_items"])
        try:
            model.load_state_dict(load_file(str(directory / "model.safetensors")))
        except Exception as exc:  # safetensors and torch raise several types for a bad file
            raise LifeloraError(
                f"{directory / 'model.safetensors'}: cannot load SASRec weights ({exc})"
            ) from None
        model.eval()
        return cls(config, model, state["fingerprint"])
