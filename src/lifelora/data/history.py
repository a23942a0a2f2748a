"""Which history items a sample shows: ReLLa's semantic retrieval (top-K history items most similar to
the target, back in time order) or the K most recent. Output = positions into the user's sequence,
-1 for padding, the form `PreparedData.indexed_history` reads. Semantic retrieval takes item vectors
from any source ([n_items, d], unit length; `lifelora.llm.item_embeddings` makes them from the LLM).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.numpy import save_file

from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.io import atomic_path

RETRIEVERS = ("semantic", "recent")


def recent_positions(samples: pl.DataFrame, k: int) -> np.ndarray:
    """The K most recent earlier interactions, in time order, left-padded with -1."""
    hist_len = samples["hist_len"].to_numpy()[:, None]
    positions = hist_len - k + np.arange(k)[None, :]
    return np.where(positions >= 0, positions, -1).astype(np.int32)


def semantic_positions(
    data: PreparedData, samples: pl.DataFrame, embeddings: np.ndarray, k: int
) -> np.ndarray:
    """Per sample, the K earlier history items most similar to the target, in time order (-1 = padding).

    One matrix product per user: targets × the user's whole sequence, future positions masked; in fp32
    even under a caller's autocast (bf16 reorders near-tied neighbours: other prompts on other CPUs).
    """
    if embeddings.shape[0] != len(data.items):
        raise LifeloraError(
            f"item embeddings cover {embeddings.shape[0]} items, the dataset has {len(data.items)}"
        )
    vectors = torch.from_numpy(embeddings)
    sequence_items = data.sequences["item_idx"].to_numpy()
    offsets = data.users["seq_offset"].to_numpy()
    user_idx = samples["user_idx"].to_numpy()
    targets = samples["item_idx"].to_numpy()
    hist_len = samples["hist_len"].to_numpy()
    out = np.full((samples.height, k), -1, dtype=np.int32)
    order = np.argsort(user_idx, kind="stable")
    bounds = np.flatnonzero(np.diff(user_idx[order])) + 1
    with torch.autocast("cpu", enabled=False):
        for rows in np.split(order, bounds):
            if rows.size == 0:
                continue
            user = user_idx[rows[0]]
            length = int(hist_len[rows].max())
            history = sequence_items[offsets[user] : offsets[user] + length].astype(np.int64)
            sims = vectors[torch.from_numpy(targets[rows].astype(np.int64))] @ vectors[history].T
            future = torch.arange(length)[None, :] >= torch.from_numpy(hist_len[rows])[:, None]
            sims = sims.masked_fill(future, float("-inf"))
            take = min(k, length)
            # a stable sort, not topk: equal similarities keep their earliest positions on every machine
            top = sims.sort(dim=1, descending=True, stable=True).indices[:, :take]
            top = torch.where(torch.gather(future, 1, top), torch.full_like(top, -1), top)
            top = top.sort(dim=1).values  # -1 padding first, then time order
            out[rows, k - take :] = top.numpy()
    return out


def history_positions(
    retriever: str, data: PreparedData, samples: pl.DataFrame, k: int, embeddings: np.ndarray | None = None
) -> np.ndarray:
    if retriever == "recent":
        return recent_positions(samples, k)
    if retriever == "semantic":
        if embeddings is None:
            raise LifeloraError("semantic retrieval needs item embeddings")
        return semantic_positions(data, samples, embeddings, k)
    raise LifeloraError(f"unknown retriever {retriever!r}; choose one of {', '.join(RETRIEVERS)}")


def save_history_index(
    retriever: str, data: PreparedData, k: int, path: Path, embeddings: np.ndarray | None = None
) -> Path:
    """Positions for every split in one safetensors file: what a SIM lens reads as `history_index`."""
    tensors = {
        split: np.ascontiguousarray(history_positions(retriever, data, data.split(split), k, embeddings))
        for split in data.split_names
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"retriever": retriever, "k": str(k), "dataset": data.name})
    return path
