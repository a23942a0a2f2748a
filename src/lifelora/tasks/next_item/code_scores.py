"""How an item code's tokens are scored: the catalogue's trie and token table, the softmax each step is
normalised by, and a `LogitsProcessor` that constrains HF `generate` the same way.

At each of the L steps log_softmax(logits / T), then the trie mask; an item's score is the sum over its L
tokens, as in HF beam search. The softmax runs over the whole vocabulary (`normalise: vocabulary`, PESO's
prompt layout), over the step's level of code tokens only (`codes`, the sequence layout, whose training
loss is normalised the same way), or over only the codes the trie allows after the item's earlier tokens
(`trie`: an item's score is then its log-probability among the catalogue's items). The logits are the
final hidden state projected in fp32 (`lifelora.llm.logits`) whatever the autocast, onto the code rows
only when those are all that is normalised over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import torch
from transformers import LogitsProcessor

from lifelora.errors import LifeloraError
from lifelora.tasks.next_item.trie import CodeTrie


def check_token_table(trie: CodeTrie, token_table: torch.Tensor) -> torch.Tensor:
    """`token_table` as a LongTensor, after checking it gives every (level, code) of the trie its own id."""
    table = torch.as_tensor(token_table, dtype=torch.long)
    sizes = trie.level_sizes
    if table.ndim != 2 or table.shape[0] != len(sizes) or table.shape[1] < max(sizes):
        raise LifeloraError(
            f"token_table must be [{len(sizes)} levels, ≥{max(sizes)} codes], got {list(table.shape)}"
        )
    ids = torch.cat([table[level, :size] for level, size in enumerate(sizes)])
    if (ids < 0).any():
        raise LifeloraError("token_table has no token (-1) for some code the level sizes include")
    if len(ids.unique()) != len(ids):
        raise LifeloraError("token_table gives two (level, code) pairs the same token id")
    return table


def code_lookup(table: torch.Tensor) -> torch.Tensor:
    """LongTensor [max id + 2]: the code each vocab id stands for, -1 for any other token (the last entry
    catches ids above the table's, clamped onto it)."""
    lookup = torch.full((int(table.max()) + 2,), -1, dtype=torch.long)
    for level in range(table.shape[0]):
        row = table[level]
        valid = row >= 0
        lookup[row[valid]] = torch.arange(len(row))[valid]
    return lookup


def _level_log_probs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """[rows, len(tokens)]: log_softmax(logits / T) over the full vocabulary, at one level's code tokens."""
    return torch.log_softmax(logits / temperature, dim=-1).index_select(1, tokens)


@dataclass(frozen=True)
class CodeDecoding:
    """What decoding item codes needs besides the model and the prompts: the catalogue's trie and token
    table, the padding id, and how scores are normalised, batched and computed."""

    trie: CodeTrie
    token_table: torch.Tensor  # [L, max level size] vocab id of each (level, code); -1 where none
    pad_id: int
    temperature: float = 0.8
    normalise: Literal["vocabulary", "codes", "trie"] = "vocabulary"
    batch_size: int = 16
    precision: str = "auto"

    def __post_init__(self):
        object.__setattr__(self, "token_table", check_token_table(self.trie, self.token_table))
        if self.batch_size < 1 or not self.temperature > 0:
            raise LifeloraError(
                f"batch_size must be ≥ 1 and temperature > 0, got {self.batch_size}, {self.temperature}"
            )
        if self.normalise not in ("vocabulary", "codes", "trie"):
            raise LifeloraError(f"normalise must be vocabulary, codes or trie, got {self.normalise!r}")

    def to(self, device) -> CodeDecoding:
        return replace(self, trie=self.trie.to(device), token_table=self.token_table.to(device))

    @cached_property
    def rows(self) -> list[int] | None:
        """The vocabulary rows the logits are projected onto: every level's code tokens in level order
        (None: the whole vocabulary)."""
        if self.normalise == "vocabulary":
            return None
        return torch.cat([self.level_tokens(d) for d in range(self.trie.depth)]).tolist()

    @cached_property
    def row_of(self) -> torch.Tensor:
        """LongTensor [max code id + 1]: each code token's column in `rows` (-1: not a code token)."""
        rows = torch.as_tensor(self.rows)
        lookup = torch.full((int(rows.max()) + 1,), -1, dtype=torch.long)
        lookup[rows] = torch.arange(len(rows))
        return lookup

    @cached_property
    def row_levels(self) -> torch.Tensor:
        """LongTensor [len(rows)]: the level of each of `rows`."""
        sizes = torch.as_tensor(self.trie.level_sizes)
        return torch.repeat_interleave(torch.arange(len(sizes)), sizes)

    @cached_property
    def level_offsets(self) -> list[int]:
        """Each level's first column in `rows`."""
        sizes = self.trie.level_sizes
        return [sum(sizes[:d]) for d in range(self.trie.depth)]

    def level_tokens(self, depth: int) -> torch.Tensor:
        return self.token_table[depth, : self.trie.level_sizes[depth]]

    def level_log_probs(self, logits: torch.Tensor, depth: int, node: torch.Tensor) -> torch.Tensor:
        """[rows, level size] log-probabilities of level `depth`'s codes from logits on `rows`, after the
        prefix `node` (trie node ids at `depth`, one per row): `trie` normalises over the codes the
        trie allows there (-inf elsewhere), so an item's summed score is its probability among the
        catalogue's items; `codes` over the level's codes, `vocabulary` over every token."""
        if self.normalise == "vocabulary":
            return _level_log_probs(logits, self.level_tokens(depth), self.temperature)
        start = self.level_offsets[depth]
        level = logits[:, start : start + self.trie.level_sizes[depth]] / self.temperature
        if self.normalise == "trie":
            level = level.masked_fill(~self.trie.children(node, depth), -torch.inf)
        return torch.log_softmax(level, dim=-1)

    def allowed_columns(self, columns: torch.Tensor) -> torch.Tensor:
        """BoolTensor [len(columns), len(rows)]: for whole items' code tokens in order (each item's L
        columns of `rows` in a row), the columns a token is normalised over: its level's codes, and
        with `trie` only those the trie allows after the item's earlier tokens."""
        depth, sizes = self.trie.depth, self.trie.level_sizes
        levels = self.row_levels.to(columns.device)
        same = levels[None, :] == levels[columns][:, None]
        if self.normalise != "trie":
            return same
        if (
            len(columns) % depth
            or (levels[columns].reshape(-1, depth) != torch.arange(depth, device=columns.device)).any()
        ):
            raise LifeloraError(
                f"supervised code tokens must come {depth} at a time, one item's codes in order"
            )
        offsets = self.level_offsets
        codes = columns.reshape(-1, depth) - torch.as_tensor(offsets, device=columns.device)
        allowed = torch.zeros(len(codes), depth, len(levels), dtype=torch.bool, device=columns.device)
        node = torch.zeros(len(codes), dtype=torch.long, device=columns.device)
        for d in range(depth):
            allowed[:, d, offsets[d] : offsets[d] + sizes[d]] = self.trie.children(node, d)
            node = self.trie.child(node, d, codes[:, d])
        return allowed.reshape(len(columns), len(levels))


class TrieLogitsProcessor(LogitsProcessor):
    """Constrains HF `generate` (greedy or beam search, `max_new_tokens=L`) to the catalogue's codes.

    Returns log_softmax(scores / T) with every token outside the allowed children at -inf: beam search
    hands processors log-probs, greedy search logits, and both give log_softmax(logits / T). All rows
    (batch × beams) are masked at once from their generated tokens since `prompt_length`."""

    def __init__(
        self, trie: CodeTrie, token_table: torch.Tensor, prompt_length: int, temperature: float = 1.0
    ):
        self.table = check_token_table(trie, token_table)
        self.lookup = code_lookup(self.table)
        self.trie, self.prompt_length, self.temperature = trie, prompt_length, temperature

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        depth = input_ids.shape[1] - self.prompt_length
        if not 0 <= depth < self.trie.depth:
            raise ValueError(f"step {depth} after the prompt: item codes have {self.trie.depth} tokens")
        if self.lookup.device != scores.device:
            self.trie, self.table = self.trie.to(scores.device), self.table.to(scores.device)
            self.lookup = self.lookup.to(scores.device)
        generated = input_ids[:, self.prompt_length :].clamp(max=len(self.lookup) - 1)
        allowed = self.trie.allowed(self.lookup[generated])
        tokens = self.table[depth, : self.trie.level_sizes[depth]]
        kept = _level_log_probs(scores.float(), tokens, self.temperature).masked_fill(~allowed, -torch.inf)
        out = torch.full_like(scores, -torch.inf)
        out[:, tokens] = kept.to(out.dtype)
        return out
