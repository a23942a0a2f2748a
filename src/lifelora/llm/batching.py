"""Token batches for a causal LM: left padding (the last column is where the answer or the next token
goes) and position ids that ignore it."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


def positions_of(mask: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Position ids that ignore left padding: every prompt's first real token sits at `start`."""
    return (mask.cumsum(-1) - 1).clamp(min=0) + start
