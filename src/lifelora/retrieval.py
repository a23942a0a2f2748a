"""Which history items a sample shows: ReLLa's semantic retrieval (top-K history items most similar to
the target, back in time order) or the K most recent. Output = positions into the user's sequence,
-1 for padding, the form `PreparedData.indexed_history` reads.

Item vectors: mean of the backbone's final hidden states over a short item description, reduced by PCA
and L2-normalised (cosine similarity = dot product); cached per (model, dataset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.io import atomic_path, lifelora_home

RETRIEVERS = ("semantic", "recent")


def embeddings_path(model_name: str, data: PreparedData, pca_dim: int) -> Path:
    from lifelora.llm.backbone import model_key

    items_key = f"{data.name}-{len(data.items)}items-pca{pca_dim}"
    return lifelora_home() / "embeddings" / model_key(model_name) / f"{items_key}.safetensors"


@torch.no_grad()
def mean_hidden_states(
    backbone, texts: list[str], batch_size: int = 64, precision: str = "auto"
) -> np.ndarray:
    """Mean of the final hidden states over each text's tokens (padding excluded)."""
    from lifelora.llm.scoring import autocast

    tokenizer, model = backbone.tokenizer, backbone.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="item embeddings", unit="batch", leave=False):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        with autocast(precision):
            hidden = body(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(torch.float32)
        out.append(((hidden.float() * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def reduce(vectors: np.ndarray, pca_dim: int) -> np.ndarray:
    """PCA to at most `pca_dim` components, then unit length."""
    from sklearn.decomposition import PCA

    dim = min(pca_dim, vectors.shape[0], vectors.shape[1])
    reduced = PCA(n_components=dim, random_state=0).fit_transform(vectors.astype(np.float64))
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return np.ascontiguousarray(reduced / np.maximum(norms, 1e-12), dtype=np.float32)


def item_embeddings(backbone, data: PreparedData, pca_dim: int = 512, log=print) -> np.ndarray:
    """[n_items, ≤ pca_dim] unit vectors, computed once per (model, dataset) and cached."""
    from lifelora.llm.prompts import item_descriptions, template_for

    path = embeddings_path(backbone.name, data, pca_dim)
    if path.is_file():
        return load_file(str(path))["embeddings"]
    log(f"embedding {len(data.items):,} item descriptions with {backbone.name} (cached afterwards)")
    texts = item_descriptions(data.items, template_for(data.name, data.users))
    vectors = reduce(mean_hidden_states(backbone, texts), pca_dim)
    with atomic_path(path) as tmp:
        save_file(
            {"embeddings": np.ascontiguousarray(vectors)},
            str(tmp),
            metadata={"model": backbone.name, "dataset": data.name},
        )
    return vectors


def recent_positions(samples: pl.DataFrame, k: int) -> np.ndarray:
    """The K most recent earlier interactions, in time order, left-padded with -1."""
    hist_len = samples["hist_len"].to_numpy()[:, None]
    positions = hist_len - k + np.arange(k)[None, :]
    return np.where(positions >= 0, positions, -1).astype(np.int32)


def semantic_positions(
    data: PreparedData, samples: pl.DataFrame, embeddings: np.ndarray, k: int
) -> np.ndarray:
    """Per sample, the K earlier history items most similar to the target, in time order (-1 = padding).

    One matrix product per user: targets × the user's whole sequence, future positions masked.
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
    for rows in np.split(order, bounds):
        if rows.size == 0:
            continue
        user = user_idx[rows[0]]
        length = int(hist_len[rows].max())
        history = torch.from_numpy(sequence_items[offsets[user] : offsets[user] + length].astype(np.int64))
        sims = vectors[torch.from_numpy(targets[rows].astype(np.int64))] @ vectors[history].T
        future = torch.arange(length)[None, :] >= torch.from_numpy(hist_len[rows])[:, None]
        sims = sims.masked_fill(future, float("-inf"))
        take = min(k, length)
        top = sims.topk(take, dim=1).indices
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
    from lifelora.data.prepare import SPLITS

    tensors = {
        split: np.ascontiguousarray(history_positions(retriever, data, data.split(split), k, embeddings))
        for split in SPLITS
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"retriever": retriever, "k": str(k), "dataset": data.name})
    return path
