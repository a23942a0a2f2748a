"""Item codes as new tokens: one token per (level, code) of generative recommendation's semantic IDs,
named as LC-Rec names them (`<a_0>` … `<a_63>`, `<b_0>` …), added to the tokenizer and the embeddings.

Names and their order are fixed, so adding them to the same base tokenizer gives the same ids every time:
a saved run rebuilds its vocabulary (`to_dict` / `from_dict`) and a saved adapter's token rows land on the
same rows. New rows start at the mean of the existing rows (the new tokens start near the average token)
plus a small seeded jitter (so they start apart), or, given the vectors each level's codes stand for (a
quantizer's codebook), at those vectors mapped into the embedding (`centroid_rows`): codes that are close
in the quantizer's space then start close in the model's, so an item's tokens say something before any
training. Either way the same base gives the same rows, which an adapter that trains additive deltas on
those rows relies on. Ids are read back from the tokenizer and checked to be single tokens, never assumed.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lifelora.errors import LifeloraError

LEVEL_LETTERS = string.ascii_lowercase
JITTER = 0.01  # the new rows' noise, in units of each dimension's spread over the existing rows


def code_token(level: int, code: int) -> str:
    return f"<{LEVEL_LETTERS[level]}_{code}>"


@dataclass(frozen=True, eq=False)
class CodeVocabulary:
    """The code tokens' ids: `token_table[level, code]` is the vocabulary id (-1 past the level's size)."""

    level_sizes: tuple[int, ...]
    token_table: torch.Tensor  # LongTensor [levels, max(level_sizes)]
    seed: int = 0  # of the new rows' jitter and projection: rebuilding a run's vocabulary needs it
    from_centroids: bool = False  # rows started at the codes' vectors (`add_code_tokens(centroids=)`)

    @property
    def new_token_ids(self) -> list[int]:
        return sorted(self.token_table[self.token_table >= 0].tolist())

    def _checked(self, codes: np.ndarray | Sequence[int]) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        sizes = np.asarray(self.level_sizes)
        if codes.ndim == 0 or codes.shape[-1] != len(sizes):
            raise LifeloraError(
                f"codes must have {len(sizes)} levels in the last axis, got {list(codes.shape)}"
            )
        if ((codes < 0) | (codes >= sizes)).any():
            raise LifeloraError(f"codes out of range for level sizes {list(self.level_sizes)}")
        return codes

    def tokens_of(self, codes: np.ndarray) -> np.ndarray:
        """The token ids of codes [..., L] (same shape)."""
        codes = self._checked(codes)
        return self.token_table.numpy()[np.arange(len(self.level_sizes)), codes]

    def text_of(self, codes_row: np.ndarray | Sequence[int]) -> str:
        """One item's tokens written together, as prompts and targets hold them."""
        row = self._checked(codes_row)
        if row.ndim != 1:
            raise LifeloraError(f"text_of takes one code row, got shape {list(row.shape)}")
        return "".join(code_token(level, int(code)) for level, code in enumerate(row))

    def to_dict(self) -> dict:
        return {
            "level_sizes": list(self.level_sizes),
            "seed": self.seed,
            "from_centroids": self.from_centroids,
            "token_table": self.token_table.tolist(),
        }

    @classmethod
    def from_dict(
        cls, data: dict, tokenizer, model: nn.Module, centroids: Sequence[np.ndarray | None] | None = None
    ) -> CodeVocabulary:
        """A saved run's vocabulary added again to a fresh base tokenizer and model (same ids, same rows;
        rows that started at the codes' vectors need the same `centroids`)."""
        if bool(data.get("from_centroids", False)) != (centroids is not None):
            raise LifeloraError(
                "this vocabulary's rows started at its codes' vectors: pass the same centroids"
                if centroids is None
                else "this vocabulary's rows started at the mean row: rebuild it without centroids"
            )
        vocabulary = add_code_tokens(
            tokenizer, model, data["level_sizes"], seed=data.get("seed", 0), centroids=centroids
        )
        if vocabulary.token_table.tolist() != data["token_table"]:
            raise LifeloraError(
                "this tokenizer gives the code tokens other ids than the saved run's: load the run's base model"
            )
        return vocabulary


def add_code_tokens(
    tokenizer,
    model: nn.Module,
    level_sizes: Sequence[int],
    *,
    seed: int = 0,
    centroids: Sequence[np.ndarray | None] | None = None,
) -> CodeVocabulary:
    """Add the code tokens to `tokenizer` and `model` (once: again is a no-op) and return their ids.

    Tokens already in the tokenizer keep their ids; all are (re-)registered unnormalised, so that no
    normalizer (a prepended "▁", say) splits them when written together. `centroids[level]` ([size,
    dim], or None for a level without, such as the dedup level): the vectors that level's codes stand
    for; new rows then start at them (`centroid_rows`) instead of at the mean row."""
    from transformers import AddedToken

    sizes = [int(size) for size in level_sizes]
    if not 1 <= len(sizes) <= len(LEVEL_LETTERS) or min(sizes) < 1:
        raise LifeloraError(f"level sizes {sizes}: 1 to {len(LEVEL_LETTERS)} levels of at least one code")
    names = [code_token(level, code) for level, size in enumerate(sizes) for code in range(size)]
    before = len(tokenizer)
    tokenizer.add_tokens([AddedToken(name, normalized=False) for name in names])
    ids = _single_token_ids(tokenizer, names)
    vectors = None if centroids is None else _checked_centroids(centroids, sizes)
    _fit_embeddings(model, len(tokenizer), ids, before, seed, (sizes, vectors))
    table = torch.full((len(sizes), max(sizes)), -1, dtype=torch.long)
    start = 0
    for level, size in enumerate(sizes):
        table[level, :size] = torch.tensor(ids[start : start + size])
        start += size
    return CodeVocabulary(tuple(sizes), table, seed, from_centroids=centroids is not None)


def _checked_centroids(centroids: Sequence[np.ndarray | None], sizes: list[int]) -> list[np.ndarray | None]:
    if len(centroids) != len(sizes):
        raise LifeloraError(f"centroids for {len(centroids)} levels, but the codes have {len(sizes)}")
    out: list[np.ndarray | None] = []
    for level, (vectors, size) in enumerate(zip(centroids, sizes, strict=True)):
        if vectors is not None:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim != 2 or len(vectors) != size or not np.isfinite(vectors).all():
                raise LifeloraError(
                    f"level {level}'s centroids must be {size} finite vectors, got shape {list(vectors.shape)}"
                )
        out.append(vectors)
    return out


def _single_token_ids(tokenizer, names: list[str]) -> list[int]:
    """Each name's id, once each name alone and all of them written together encode to exactly their ids."""
    ids = tokenizer.convert_tokens_to_ids(names)
    for name, token_id, encoded in zip(
        names, ids, tokenizer(names, add_special_tokens=False)["input_ids"], strict=True
    ):
        if token_id is None or token_id == tokenizer.unk_token_id or encoded != [token_id]:
            raise LifeloraError(f"tokenizer splits new token {name!r} (it encodes to {encoded}, not one id)")
    together = tokenizer("".join(names), add_special_tokens=False)["input_ids"]
    if together != ids:
        raise LifeloraError(f"tokenizer splits new tokens written together ({''.join(names[:2])}…)")
    return ids


def _fit_embeddings(
    model: nn.Module, size: int, ids: list[int], before: int, seed: int, levels: tuple[list[int], list | None]
) -> None:
    """Rows for every token id (resized when short; a tied head stays tied); rows new to the tokenizer or
    to the model are initialised, rows already there (trained, maybe) are left as they are."""
    embedding = model.get_input_embeddings()
    rows = embedding.weight.shape[0]
    existing = min(before, rows)
    if rows < size:
        if not isinstance(embedding, nn.Embedding):
            raise LifeloraError("add the code tokens to the backbone before attaching an adapter")
        with torch.random.fork_rng(devices=[]):  # resizing draws rows from the global generator; keep it
            model.resize_token_embeddings(size, mean_resizing=False)
    fresh = [token_id for token_id in ids if token_id >= existing]
    if fresh:
        _init_rows(model, ids, fresh, existing, seed, levels)


@torch.no_grad()
def _init_rows(
    model: nn.Module,
    ids: list[int],
    fresh: list[int],
    existing: int,
    seed: int,
    levels: tuple[list[int], list | None],
) -> None:
    """The fresh rows among `ids` (every code token, level by level) of the embedding and an untied head;
    `levels`: each level's size and its codes' vectors (None, or None for a level: the mean row)."""
    sizes, centroids = levels
    starts = np.cumsum([0, *sizes[:-1]]).tolist()
    weights = [model.get_input_embeddings().weight]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not weights[0]:  # an untied head has its own rows
        weights.append(head.weight)
    generator = torch.Generator().manual_seed(seed)
    for weight in weights:
        old = weight[:existing].float().cpu()
        noise = torch.randn(len(ids), weight.shape[1], generator=generator)
        rows = old.mean(0) + JITTER * old.std(0) * noise
        for start, vectors in zip(starts, centroids or [], strict=False):
            if vectors is not None:
                rows[start : start + len(vectors)] = centroid_rows(torch.from_numpy(vectors), old, seed)
        keep = torch.isin(torch.tensor(ids), torch.tensor(fresh))
        target = torch.tensor(ids)[keep].to(weight.device)
        weight[target] = rows[keep].to(weight.device, weight.dtype)


def centroid_rows(vectors: torch.Tensor, old: torch.Tensor, seed: int) -> torch.Tensor:
    """Rows [n, hidden] for vectors [n, dim]: a fixed seeded Gaussian projection (which keeps their
    distances up to scale), then each dimension standardised to the existing rows' mean and spread,
    so that they look like the model's own tokens to its first layer."""
    generator = torch.Generator().manual_seed(seed + 1)
    projection = torch.randn(vectors.shape[1], old.shape[1], generator=generator)
    rows = vectors.float() @ projection
    spread = rows.std(0) if len(rows) > 1 else torch.ones(rows.shape[1])
    return (rows - rows.mean(0)) / spread.clamp_min(1e-12) * old.std(0) + old.mean(0)
