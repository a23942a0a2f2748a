"""Item vectors from the backbone: the mean of its final hidden states over each item's description,
reduced by PCA and L2-normalised (cosine similarity = dot product); cached per (model, dataset).

ReLLa's semantic retrieval (`lifelora.data.history`) ranks a user's history by these vectors, and the
semantic IDs of next-item are quantized from them: they decide what the model is asked, so they are
computed in fp32 whatever the run trains at (autocast off, fp32 weights), the same on every CPU. Under
bf16 they reorder near-tied neighbours, and a machine with native bf16 would build other prompts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tqdm.auto import tqdm

from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.io import atomic_path, lifelora_home
from lifelora.llm.backbone import model_key
from lifelora.llm.item_text import item_descriptions

# How the vectors are made, part of the cache key: a cache made another way is never reused (the first
# release computed them under the run's autocast, bf16 on CPUs with native bf16).
METHOD = "mean-fp32"


def embeddings_path(model_name: str, data: PreparedData, pca_dim: int) -> Path:
    items_key = f"{data.name}-{len(data.items)}items-{METHOD}-pca{pca_dim}"
    return lifelora_home() / "embeddings" / model_key(model_name) / f"{items_key}.safetensors"


@torch.no_grad()
def mean_hidden_states(backbone, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean of the final hidden states over each text's tokens (padding excluded), in fp32."""
    tokenizer, model = backbone.tokenizer, backbone.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = base.get_decoder() if hasattr(base, "get_decoder") else base.model
    parameter = next(body.parameters())
    if parameter.dtype != torch.float32:
        raise LifeloraError(
            f"item embeddings are computed in fp32; {backbone.name} is loaded in {parameter.dtype}"
        )
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="item embeddings", unit="batch", leave=False):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True)
        with torch.autocast(parameter.device.type, enabled=False):
            hidden = body(
                input_ids=batch["input_ids"].to(parameter.device),
                attention_mask=batch["attention_mask"].to(parameter.device),
            ).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.device, torch.float32)
        out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu().numpy())
    return np.concatenate(out)


def reduce(vectors: np.ndarray, pca_dim: int) -> np.ndarray:
    """PCA to at most `pca_dim` components, then unit length."""
    from sklearn.decomposition import PCA

    dim = min(pca_dim, vectors.shape[0], vectors.shape[1])
    reduced = PCA(n_components=dim, svd_solver="full").fit_transform(vectors.astype(np.float64))
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    return np.ascontiguousarray(reduced / np.maximum(norms, 1e-12), dtype=np.float32)


def item_embeddings(backbone, data: PreparedData, pca_dim: int = 512, log=print) -> np.ndarray:
    """[n_items, ≤ pca_dim] unit vectors, computed once per (model, dataset) and cached."""
    path = embeddings_path(backbone.name, data, pca_dim)
    if path.is_file():
        return load_file(str(path))["embeddings"]
    log(f"embedding {len(data.items):,} item descriptions with {backbone.name} (cached afterwards)")
    texts = item_descriptions(data.items, data.name)
    vectors = reduce(mean_hidden_states(backbone, texts), pca_dim)
    with atomic_path(path) as tmp:
        save_file(
            {"embeddings": np.ascontiguousarray(vectors)},
            str(tmp),
            metadata={"model": backbone.name, "dataset": data.name, "method": METHOD},
        )
    return vectors
