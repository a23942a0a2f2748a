"""The trie of valid item codes, as tensors: constrained decoding asks it about thousands of beams at
once, so every query is a `torch.searchsorted` over sorted keys, never a Python loop over rows.

Nodes at depth d are the distinct code prefixes of length d, numbered in lexicographic order (the root
is node 0 at depth 0; the leaves at depth L are the items). A child's key is `parent × level_size + code`,
which stays far below 2**63 whatever the number of levels (a mixed-radix key of the whole prefix would
overflow at 8 levels of 256 codes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lifelora.errors import LifeloraError


class CodeTrie:
    """Valid codes of a catalogue: `codes` [n_items, L] int, level l in [0, level_sizes[l]), unique.

    With `shared`, items may share a code (given codes, e.g. PESO's released index): a leaf then names
    its first item, and `representative` maps every item to the item its code decodes to, so that a
    ranking compares codes, as the release's evaluation does."""

    def __init__(self, codes: np.ndarray | torch.Tensor, level_sizes: Sequence[int], shared: bool = False):
        codes = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes)
        sizes = tuple(int(s) for s in level_sizes)
        _check(codes, sizes)
        codes = codes.astype(np.int64)
        node = np.zeros(len(codes), dtype=np.int64)
        keys, masks, item_nodes = [], [], [node]
        for level, size in enumerate(sizes):
            key = node * size + codes[:, level]
            unique, child = np.unique(key, return_inverse=True)
            mask = np.zeros((int(node.max()) + 1, size), dtype=bool)
            mask[node, codes[:, level]] = True
            keys.append(unique)
            masks.append(mask)
            node = child.reshape(-1)
            item_nodes.append(node)
        if len(keys[-1]) < len(codes) and not shared:
            _, first, counts = np.unique(node, return_index=True, return_counts=True)
            shared = codes[first[counts > 1][0]].tolist()
            raise LifeloraError(
                f"item codes are not unique: {len(codes) - len(keys[-1])} items repeat another's code "
                f"(e.g. {shared} is shared by {int(counts.max())} items); add a dedup level"
            )
        _, leaf_item = np.unique(node, return_index=True)  # every leaf's first item
        self.representative = leaf_item[node]
        self.level_sizes = sizes
        self.codes = torch.from_numpy(codes)
        self._keys = [torch.from_numpy(k) for k in keys]
        self._masks = [torch.from_numpy(m) for m in masks]
        self._item_nodes = [torch.from_numpy(n) for n in item_nodes]
        self._leaf_item = torch.from_numpy(leaf_item)

    @property
    def depth(self) -> int:
        """L, the number of code levels (tokens per item)."""
        return len(self.level_sizes)

    @property
    def n_items(self) -> int:
        return len(self.codes)

    @property
    def device(self) -> torch.device:
        return self._leaf_item.device

    @property
    def node_counts(self) -> tuple[int, ...]:
        """Nodes per depth 0..L: 1 root, …, n_items leaves. Exact scoring evaluates depths 0..L-1."""
        return (1, *(len(k) for k in self._keys))

    def to(self, device: str | torch.device) -> CodeTrie:
        """This trie with its tensors on `device` (itself when they are there already)."""
        if torch.device(device) == self.device:
            return self
        moved = object.__new__(CodeTrie)
        moved.level_sizes = self.level_sizes
        moved.codes = self.codes.to(device)
        moved._keys = [k.to(device) for k in self._keys]
        moved._masks = [m.to(device) for m in self._masks]
        moved._item_nodes = [n.to(device) for n in self._item_nodes]
        moved._leaf_item = self._leaf_item.to(device)
        moved.representative = self.representative
        return moved

    def child(self, node: torch.Tensor, depth: int, code: torch.Tensor) -> torch.Tensor:
        """Node id at depth+1 of child `code` of each `node` (at `depth`); -1 where there is none
        (including where `node` is -1 or `code` is out of the level's range)."""
        size, keys = self.level_sizes[depth], self._keys[depth]
        valid = (node >= 0) & (code >= 0) & (code < size)
        key = node * size + code
        index = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        found = valid & (keys[index] == key)
        return torch.where(found, index, torch.full_like(index, -1))

    def children(self, node: torch.Tensor, depth: int) -> torch.Tensor:
        """BoolTensor [rows, level_sizes[depth]]: the codes that extend each `node` (all False for -1)."""
        mask = self._masks[depth][node.clamp(min=0)]
        return mask & (node >= 0).unsqueeze(-1)

    def node_of(self, prefix_codes: torch.Tensor) -> torch.Tensor:
        """Node id of each prefix [rows, d] at depth d; -1 where the prefix is not in the catalogue."""
        node = torch.zeros(prefix_codes.shape[0], dtype=torch.long, device=prefix_codes.device)
        for depth in range(prefix_codes.shape[1]):
            node = self.child(node, depth, prefix_codes[:, depth])
        return node

    def allowed(self, prefix_codes: torch.Tensor) -> torch.Tensor:
        """BoolTensor [rows, level_sizes[d]]: the next codes that keep each prefix [rows, d] valid."""
        if prefix_codes.shape[1] >= self.depth:
            raise ValueError(
                f"a prefix of {prefix_codes.shape[1]} codes is complete (the trie has {self.depth})"
            )
        return self.children(self.node_of(prefix_codes), prefix_codes.shape[1])

    def item_of(self, full_codes: torch.Tensor) -> torch.Tensor:
        """item_idx of each full code [rows, L]; -1 for a code no item has."""
        if full_codes.shape[1] != self.depth:
            raise ValueError(f"codes of {full_codes.shape[1]} levels, the trie has {self.depth}")
        return self.leaf_items(self.node_of(full_codes))

    def leaf_items(self, leaf: torch.Tensor) -> torch.Tensor:
        """item_idx of each leaf node id (depth L); -1 stays -1."""
        return torch.where(leaf >= 0, self._leaf_item[leaf.clamp(min=0)], leaf)

    def nodes(self, depth: int) -> torch.Tensor:
        """LongTensor [node_counts[depth], depth]: the prefix of every node at `depth`, in node-id order."""
        _, first = np.unique(self._item_nodes[depth].cpu().numpy(), return_index=True)
        return self.codes[torch.from_numpy(first).to(self.device), :depth]

    def exhausted(self, exclude: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """For each depth d = 1..L, the sorted keys `row * node_counts[d] + node` of the nodes all of whose
        items are in `exclude[row]` (item ids per row): a search that skips them never reaches those items
        and never follows a prefix that only leads to them."""
        rows = np.repeat(np.arange(len(exclude)), [len(e) for e in exclude]).astype(np.int64)
        items = np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude]) if len(rows) else rows
        pairs = np.unique(rows * self.n_items + items)
        rows, items = pairs // self.n_items, pairs % self.n_items
        keys = []
        for depth in range(1, self.depth + 1):
            nodes, width = self._item_nodes[depth].cpu().numpy(), self.node_counts[depth]
            found, counts = np.unique(rows * width + nodes[items], return_counts=True)
            whole = counts == np.bincount(nodes, minlength=width)[found % width]
            keys.append(torch.from_numpy(found[whole]).to(self.device))
        return keys

    def item_nodes(self, depth: int) -> torch.Tensor:
        """LongTensor [n_items]: the node id of every item's prefix at `depth`."""
        return self._item_nodes[depth]


def _check(codes: np.ndarray, sizes: tuple[int, ...]) -> None:
    """LifeloraError for a code table no trie can be built from."""
    if codes.ndim != 2:
        raise LifeloraError(f"item codes must be a 2-D [items, levels] array, got shape {codes.shape}")
    if len(codes) == 0:
        raise LifeloraError("the catalogue is empty: no item codes to build a trie from")
    if codes.shape[1] != len(sizes) or not sizes:
        raise LifeloraError(f"item codes have {codes.shape[1]} levels but level_sizes has {len(sizes)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise LifeloraError(f"item codes must be integers, got {codes.dtype}")
    if min(sizes) < 1:
        raise LifeloraError(f"every level needs at least one code, got level_sizes {list(sizes)}")
    for level, size in enumerate(sizes):
        bad = (codes[:, level] < 0) | (codes[:, level] >= size)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise LifeloraError(
                f"item {row}'s code {codes[row].tolist()} is out of range at level {level} "
                f"(codes there are 0..{size - 1}); {int(bad.sum())} items are"
            )
