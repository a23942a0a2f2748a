"""Semantic IDs: every item gets a short unique code of integers, learned from its text-embedding vector
(or its collaborative vector: a SASRec lens's item embedding), that a generative recommender decodes level
by level (TIGER, LC-Rec, GRID).

The quantizer gives `levels` integers per item; a final dedup level numbers the items that share those
(in item_idx order), so every full code of `levels + 1` integers names exactly one item.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.numpy import load_file, save_file

from lifelora.data.prepared import PreparedData, fingerprints
from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, lifelora_home, read_json, write_json
from lifelora.lens.sasrec.lens import SASRecLens
from lifelora.llm.backbone import model_key
from lifelora.llm.item_embeddings import item_embeddings
from lifelora.tasks.next_item.quantizers import Quantized, RqvaeConfig, rkmeans, rqvae

MIN_POINTS_PER_CENTROID = 39  # faiss's warning threshold for k-means
MAX_AUTO_CODEBOOK = 256  # TIGER / GRID / LC-Rec's per-level size for large catalogues
HEADROOM = 10  # "auto" wants codebook_size**levels >= HEADROOM × items


class SemanticIdConfig(BaseModel):
    """How item codes are learned. The default quantizer is residual k-means: GRID found it as good as an
    RQ-VAE, and on SmolLM2's ML-1M item vectors (3 × 64) it reconstructs them better (relative error
    0.47 vs 0.52; ML-100K, 3 × 32: 0.52 vs 0.57) in 2 s instead of 13 s, with nothing to tune. The
    RQ-VAE shares fewer codes before dedup (4% vs 10% of ML-1M items; 11% vs 19% on ML-100K), but
    the dedup level needs 4 values either way (`test_real_item_vectors` prints these numbers)."""

    model_config = ConfigDict(extra="forbid")

    quantizer: Literal["rqvae", "rkmeans", "given"] = Field(
        "rkmeans",
        description="given: the prepared data's own codes (PESO's released index, or `data prepare "
        "--codes`), used exactly (the other fields then do not apply)",
    )
    levels: int = Field(3, ge=1, description="quantized levels; the full code adds one dedup level")
    codebook_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="codes per level; auto: see auto_codebook_size (64 for ML-1M, 32 for ML-100K, "
        "256 for large catalogues)",
    )
    max_dedup: int | None = Field(
        None, ge=1, description="most items allowed to share a quantized code (None: no cap)"
    )
    pca_dim: int = Field(512, ge=1, description="item vectors: the backbone's, PCA-reduced to this")
    lens: Path | None = Field(
        None,
        description="a SASRec lens run: quantize its item embeddings (collaborative semantic IDs: items "
        "bought together share codes) instead of the backbone's text vectors; train the lens on the "
        "training split only",
    )
    token_init: Literal["mean", "codebook"] = Field(
        "mean",
        description="where the code tokens' rows start: mean, the average token plus a little noise; "
        "codebook, the quantizer's codebook vectors of each level mapped into the embedding (the dedup "
        "level at the mean)",
    )
    rqvae: RqvaeConfig = Field(default_factory=RqvaeConfig)
    seed: int = 42

    @model_validator(mode="after")
    def _given_codes_have_no_vectors(self) -> SemanticIdConfig:
        if self.quantizer == "given" and (self.lens is not None or self.token_init == "codebook"):
            raise ValueError(
                "quantizer given uses the data's codes: lens and token_init codebook do not apply"
            )
        return self

    def key(self) -> str:
        """A short hash of the settings: the cache directory of codes made with them."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:12]


def auto_codebook_size(n_items: int, levels: int) -> int:
    """The largest power of two that leaves each level-0 code ≥ 39 items on average (at most 256),
    raised to the smallest power of two whose `levels`-th power is ≥ 10 × the catalogue.

    ML-100K (1,682 items) → 32; ML-1M (3,883 items) → 64; 100k items → 256; 10M items and 3 levels → 512.
    """
    per_centroid = max(1, n_items // MIN_POINTS_PER_CENTROID)
    size = min(MAX_AUTO_CODEBOOK, 1 << (per_centroid.bit_length() - 1))
    needed = math.ceil((HEADROOM * n_items) ** (1 / levels) - 1e-9)
    return max(size, 1 << max(0, needed - 1).bit_length())


def items_fingerprint(data: PreparedData) -> str:
    """Which item table codes belong to: the prepared data's fingerprint plus its item count."""
    return f"{data.meta['fingerprint']}-{data.items.height}items"


@dataclass
class ItemCodes:
    """Every item's full code (row = item_idx), the size of each level, and how well they were learned."""

    codes: np.ndarray  # int64 [n_items, levels + 1]; the last column is the dedup level
    level_sizes: list[int]  # [codebook_size] * levels + [largest group]
    fingerprint: str
    config: SemanticIdConfig
    stats: dict
    tensors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # the quantizer's
    directory: Path | None = None  # where it was loaded from or saved to

    def __len__(self) -> int:
        return len(self.codes)

    def save(self, directory: str | Path) -> None:
        """codes.safetensors, quantizer.safetensors and semantic_ids.json, all or nothing."""
        directory = Path(directory)
        with atomic_dir(directory) as tmp:
            save_file({"codes": np.ascontiguousarray(self.codes)}, str(tmp / "codes.safetensors"))
            tensors = {k: np.ascontiguousarray(v) for k, v in self.tensors.items()}
            save_file(tensors, str(tmp / "quantizer.safetensors"))
            write_json(
                tmp / "semantic_ids.json",
                {
                    "config": self.config.model_dump(mode="json"),
                    "level_sizes": self.level_sizes,
                    "fingerprint": self.fingerprint,
                    "stats": self.stats,
                },
            )
        self.directory = directory

    @classmethod
    def load(cls, directory: str | Path) -> ItemCodes:
        directory = Path(directory)
        if not (directory / "semantic_ids.json").is_file():
            raise LifeloraError(f"{directory}: no semantic IDs here (no semantic_ids.json)")
        try:
            state = read_json(directory / "semantic_ids.json")
            config = SemanticIdConfig.model_validate(state["config"])
            level_sizes = [int(s) for s in state["level_sizes"]]
            fingerprint, stats = str(state["fingerprint"]), dict(state["stats"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LifeloraError(f"{directory / 'semantic_ids.json'}: unreadable ({exc})") from None
        try:
            codes = load_file(str(directory / "codes.safetensors"))["codes"].astype(np.int64)
            tensors = load_file(str(directory / "quantizer.safetensors"))
        except Exception as exc:
            raise LifeloraError(f"{directory}: cannot read the codes ({exc}); build them again") from None
        if codes.ndim != 2 or codes.shape[1] != len(level_sizes) or (codes >= level_sizes).any():
            raise LifeloraError(f"{directory}: codes of shape {codes.shape} do not fit {level_sizes}")
        return cls(codes, level_sizes, fingerprint, config, stats, tensors, directory)

    def centroids(self) -> list[np.ndarray | None]:
        """Per level, the vectors its codes stand for (the quantizer's codebook; None for the dedup level),
        where `token_init: codebook` starts the code tokens' rows."""
        books = []
        for level in range(len(self.level_sizes) - 1):
            book = self.tensors.get(f"codebook.{level}", self.tensors.get(f"rqvae.codebooks.{level}.weight"))
            if book is None:
                raise LifeloraError(
                    f"these codes have no codebook for level {level} (quantizer {self.config.quantizer})"
                )
            books.append(np.asarray(book, dtype=np.float32))
        return [*books, None]

    def check_matches(self, data: PreparedData) -> None:
        """Codes index items by item_idx, so they only fit the item table they were made for."""
        theirs = items_fingerprint(data)
        if self.fingerprint not in {
            f"{fingerprint}-{data.items.height}items" for fingerprint in fingerprints(data.meta)
        }:
            where = self.directory or "these semantic IDs"
            raise LifeloraError(
                f"{where}: codes were made for another item table "
                f"(codes {self.fingerprint}, {data.name} at {data.directory}: {theirs})"
            )


def dedup_level(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item's position among the items with the same code (item_idx order), and every group's size."""
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.empty(len(codes), dtype=np.int64)
    position[order] = np.arange(len(codes)) - starts[group[order]]
    return position, counts


def _what_fits(n_items: int, levels: int, size: int, cap: int) -> str:
    """Settings that give `n_items` unique codes with at most `cap` items per quantized code."""
    groups = math.ceil(n_items / cap)  # distinct quantized codes needed
    bigger = 2
    while bigger**levels < groups:
        bigger *= 2
    options = [f"codebook_size={bigger}", f"max_dedup={math.ceil(n_items / size**levels)}"]
    if size > 1:
        deeper = levels
        while size**deeper < groups:
            deeper += 1
        options.insert(0, f"levels={deeper}")
    return " or ".join(options)


def _check_inputs(vectors: np.ndarray, config: SemanticIdConfig, size: int) -> None:
    if vectors.ndim != 2:
        raise LifeloraError(f"item vectors must be 2-D [items, dim], got shape {vectors.shape}")
    if len(vectors) == 0:
        raise LifeloraError("no items to give semantic IDs to (the item table is empty)")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise LifeloraError(
            f"{int(bad.sum())} item vectors contain NaN or infinity (first: item_idx {int(np.argmax(bad))}); "
            "rebuild the item embeddings"
        )
    cap = config.max_dedup
    if cap is not None and size**config.levels * cap < len(vectors):
        raise LifeloraError(
            f"{len(vectors):,} items do not fit {config.levels} levels of {size} codes with max_dedup={cap} "
            f"({size**config.levels * cap:,} codes); use {_what_fits(len(vectors), config.levels, size, cap)}"
        )


def _quantize(vectors: np.ndarray, config: SemanticIdConfig, size: int) -> Quantized:
    if config.quantizer == "rqvae":
        return rqvae(vectors, config.levels, size, config.rqvae, config.seed)
    return rkmeans(vectors, config.levels, size, config.seed)


def build_codes(vectors: np.ndarray, config: SemanticIdConfig, fingerprint: str, log=print) -> ItemCodes:
    """Quantize the item vectors (row = item_idx) and add the dedup level.

    A codebook larger than the catalogue is clamped to the item count (noted in the stats and logged):
    k-means cannot place more centroids than points, and the extra codes would never be used."""
    start = time.perf_counter()
    n_items = len(vectors)
    asked = (
        auto_codebook_size(n_items, config.levels) if config.codebook_size == "auto" else config.codebook_size
    )
    size = max(1, min(asked, n_items))
    _check_inputs(vectors, config, size)
    quantized = _quantize(vectors, config, size)
    position, counts = dedup_level(quantized.codes)
    largest = int(counts.max())
    if config.max_dedup is not None and largest > config.max_dedup:
        raise LifeloraError(
            f"{largest} items share one quantized code, more than max_dedup={config.max_dedup}; "
            f"use max_dedup={largest}, or levels={config.levels + 1} or codebook_size={2 * size} "
            "to split them"
        )
    variance = float(vectors.astype(np.float64).var(axis=0).mean())
    stats = {
        "quantizer": config.quantizer,
        "items": n_items,
        "codebook_size": size,
        "collision_rate": float(counts[counts > 1].sum() / n_items),
        "largest_group": largest,
        "codebook_use": [len(np.unique(quantized.codes[:, level])) / size for level in range(config.levels)],
        "reconstruction_mse": quantized.mse,
        "reconstruction_relative": quantized.mse / variance if variance > 0 else 0.0,
        "seconds": round(time.perf_counter() - start, 3),
    }
    if size != asked:
        stats["note"] = f"codebook_size {asked} clamped to the {n_items} items"
        log(f"semantic IDs: {stats['note']}")
    codes = np.concatenate([quantized.codes, position[:, None]], axis=1)
    return ItemCodes(codes, [size] * config.levels + [largest], fingerprint, config, stats, quantized.tensors)


def codes_dir(model_name: str, data: PreparedData, config: SemanticIdConfig) -> Path:
    """The cache directory of one (model, item table, settings) triple."""
    key = f"{data.name}-{items_fingerprint(data)}-{config.key()}"
    return lifelora_home() / "semantic_ids" / model_key(model_name) / key


GIVEN_CODES = "item_codes.parquet"  # a prepared dataset's given codes (`data prepare --codes`)


def given_codes(data: PreparedData, config: SemanticIdConfig) -> ItemCodes:
    """The prepared data's own item codes, exactly: each level's size is its largest code + 1, and
    items may share a code (decoding then names the code's first item; see `CodeTrie`)."""
    path = data.directory / GIVEN_CODES
    if not path.is_file():
        raise LifeloraError(
            f"semantic_ids.quantizer: given, but {data.name} has no given codes ({path}); prepare it "
            "from PESO's release or with --codes FILE"
        )
    table = pl.read_parquet(path).sort("item_idx")
    codes = np.asarray(table["codes"].to_list(), dtype=np.int64)
    if table.height != data.items.height or codes.ndim != 2:
        raise LifeloraError(
            f"{path}: {table.height} coded items for {data.items.height} items; prepare again"
        )
    level_sizes = (codes.max(axis=0) + 1).tolist()
    _, counts = np.unique(codes, axis=0, return_counts=True)
    stats = {
        "quantizer": "given",
        "items": len(codes),
        "codebook_size": max(level_sizes),
        "collision_rate": float(counts[counts > 1].sum() / len(codes)),
        "largest_group": int(counts.max()),
        "codebook_use": [len(np.unique(codes[:, level])) / size for level, size in enumerate(level_sizes)],
    }
    return ItemCodes(codes, level_sizes, items_fingerprint(data), config, stats, directory=data.directory)


def lens_item_vectors(data: PreparedData, lens_dir: Path) -> np.ndarray:
    """[n_items, dim] the item embeddings of a SASRec lens trained on `data` (row = item_idx)."""
    lens = SASRecLens.load(lens_dir)
    lens.check_matches(data)
    return lens.model.item_emb.weight[1:].detach().float().cpu().numpy()


def describe_codes(codes: ItemCodes, config: SemanticIdConfig) -> str:
    """One line on learned codes: the share of items whose clusters another item also has (the dedup
    level then tells them apart; with one level of fewer clusters than items that is every item)."""
    stats = codes.stats
    return (
        f"semantic IDs for {len(codes):,} items ({config.quantizer}, {config.levels}×"
        f"{stats['codebook_size']} + dedup {stats['largest_group']}): {stats['collision_rate']:.1%} of items "
        f"share their clusters before the dedup level, relative error {stats['reconstruction_relative']:.3f}"
    )


def item_codes(backbone, data: PreparedData, config: SemanticIdConfig, log=print) -> ItemCodes:
    """The items' codes from the backbone's item vectors, learned once and cached (or given, or from a
    lens's item embeddings: quantizing them takes a moment, so those are not cached)."""
    if config.lens is not None:
        codes = build_codes(lens_item_vectors(data, config.lens), config, items_fingerprint(data), log=log)
        log(f"collaborative {describe_codes(codes, config)} from {config.lens}")
        return codes
    if config.quantizer == "given":
        codes = given_codes(data, config)
        log(
            f"semantic IDs: given codes of {len(codes):,} items ({len(codes.level_sizes)} levels of "
            f"{codes.level_sizes}), {codes.stats['collision_rate']:.1%} of items share a code"
        )
        return codes
    directory = codes_dir(backbone.name, data, config)
    if (directory / "semantic_ids.json").is_file():
        try:
            codes = ItemCodes.load(directory)
            codes.check_matches(data)
            return codes
        except LifeloraError as exc:
            log(f"rebuilding semantic IDs: {exc}")
    vectors = item_embeddings(backbone, data, config.pca_dim, log=log)
    if len(vectors) != data.items.height:
        raise LifeloraError(
            f"{len(vectors)} item vectors for {data.items.height} items; delete the stale embedding cache"
        )
    codes = build_codes(vectors, config, items_fingerprint(data), log=log)
    log(f"{describe_codes(codes, config)}, {codes.stats['seconds']:.1f}s")
    codes.save(directory)
    return codes
