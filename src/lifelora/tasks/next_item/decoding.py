"""Trie-constrained decoding of item codes: beam search over users × beams at once and the exact
log-probability of every item, scored as `code_scores.CodeDecoding` says.

HF's `prefix_allowed_tokens_fn` loops in Python over batch × beams at every step and builds a
full-vocabulary mask per row. Here each step asks the trie about every row with one `searchsorted`,
scores only the current level's code tokens, and computes each prompt once (its cache is repeated per
beam) instead of once per beam.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from lifelora.distributed import map_batches, my_batches
from lifelora.errors import LifeloraError
from lifelora.llm.batching import left_pad, positions_of
from lifelora.llm.logits import last_logits
from lifelora.precision import autocast
from lifelora.tasks.next_item.code_scores import CodeDecoding
from lifelora.tasks.next_item.trie import CodeTrie


def _length_batches(prompts: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Row numbers in batches of similar length (little padding), the same for any number of processes."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(prompts), batch_size)]


def _check_inputs(prompts, routing, token_routing) -> None:
    if any(len(p) == 0 for p in prompts):
        raise LifeloraError("an empty prompt: decoding needs at least one token before the code")
    if routing is not None and len(routing) != len(prompts):
        raise LifeloraError(f"routing has {len(routing)} rows for {len(prompts)} prompts")
    if token_routing is not None:
        if routing is None:
            raise LifeloraError("token_routing routes the prompts' tokens; routing= must route the code's")
        lengths = [len(r) for r in token_routing]
        if lengths != [len(p) for p in prompts]:
            raise LifeloraError("token_routing needs one row per prompt token, for every prompt")


def _prefill(model, prompts, decoding: CodeDecoding, device, routing):
    """The prompts' fp32 last logits [n, rows], their filled cache, attention mask and lengths.

    `routing`: [n, d] (one row per prompt), a list of [len(prompt), d] (one per token), or None."""
    ids, mask = left_pad(prompts, decoding.pad_id)
    ids, mask = ids.to(device), mask.to(device)
    if isinstance(routing, list):
        width = ids.shape[1]
        routing = torch.stack([torch.nn.functional.pad(r, (0, 0, width - len(r), 0)) for r in routing]).to(
            device
        )
    extra = {} if routing is None else {"routing": routing}
    cache = DynamicCache(config=getattr(model, "config", None))
    with autocast(decoding.precision, device):
        logits = last_logits(
            model,
            decoding.rows,
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions_of(mask),
            cache=cache,
            use_cache=True,
            **extra,
        )
    return logits, cache, mask, mask.sum(1)


def _extend(model, decoding: CodeDecoding, cache, mask, lengths, users, tokens, offset: int, routing):
    """fp32 last logits [rows, decoding.rows] of `tokens` [rows, t] fed into `cache`, which holds the
    prompts of `users` and `offset` tokens after each."""
    rows, steps = tokens.shape
    full_mask = torch.cat([mask[users], mask.new_ones(rows, offset + steps)], 1)
    positions = lengths[users, None] + offset + torch.arange(steps, device=tokens.device)
    extra = {} if routing is None else {"routing": routing[users]}
    with autocast(decoding.precision, tokens.device):
        return last_logits(
            model,
            decoding.rows,
            input_ids=tokens,
            attention_mask=full_mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            **extra,
        )


def _beam_batch(model, prompts, decoding: CodeDecoding, beams: int, routing, token_routing, exclude):
    """(items [n, beams], scores [n, beams]) for one batch of prompts; see `beam_search`."""
    trie, table = decoding.trie, decoding.token_table
    device = table.device
    exhausted = None if exclude is None else trie.exhausted(exclude)
    first = routing if token_routing is None else token_routing
    logits, cache, mask, lengths = _prefill(model, prompts, decoding, device, first)
    n = len(prompts)
    node = torch.zeros(n, 1, dtype=torch.long, device=device)
    score = torch.zeros(n, 1, device=device)
    for depth, size in enumerate(trie.level_sizes):
        width = score.shape[1]
        log_probs = decoding.level_log_probs(logits, depth, node.reshape(-1))
        allowed = trie.children(node.reshape(-1), depth)
        if exhausted is not None:
            allowed &= ~_skipped(trie, node.reshape(-1), depth, exhausted[depth], width)
        total = (score.reshape(-1, 1) + log_probs).masked_fill(~allowed, -torch.inf)
        score, flat = total.reshape(n, width * size).topk(min(beams, width * size), dim=1)
        parent, code = flat // size, flat % size
        node = trie.child(node.gather(1, parent), depth, code)
        if depth + 1 < trie.depth:
            rows = (torch.arange(n, device=device)[:, None] * width + parent).reshape(-1)
            cache.batch_select_indices(rows)  # indexing: index_select (reorder_cache) is ~100x slower on CPU
            users = torch.arange(n, device=device).repeat_interleave(score.shape[1])
            tokens = table[depth][code].reshape(-1, 1)
            logits = _extend(model, decoding, cache, mask, lengths, users, tokens, depth, routing)
    items = torch.where(score.isfinite(), trie.leaf_items(node), -1)
    missing = beams - items.shape[1]
    items = torch.nn.functional.pad(items, (0, missing), value=-1)
    return items, torch.nn.functional.pad(score, (0, missing), value=-torch.inf)


def _skipped(trie: CodeTrie, node: torch.Tensor, depth: int, exhausted: torch.Tensor, width: int):
    """BoolTensor [rows, level size]: the children of each row's `node` that are exhausted for its prompt
    (rows are prompts × `width` beams)."""
    size = trie.level_sizes[depth]
    codes = torch.arange(size, device=node.device).expand(len(node), size)
    child = trie.child(node[:, None].expand(-1, size), depth, codes)
    prompt = torch.arange(len(node), device=node.device) // width
    keys = prompt[:, None] * trie.node_counts[depth + 1] + child
    return (child >= 0) & torch.isin(keys, exhausted)


def _batched(
    model, prompts, decoding: CodeDecoding, routing, token_routing, desc: str, batch_fn, exclude=None
):
    """`batch_fn(model, prompts, decoding, routing, token_routing, exclude)` → [rows, k] array over
    batches of similar length, each process decoding its share; the rows back in the prompts' order."""
    device = next(model.parameters()).device
    decoding = decoding.to(device)

    def run(rows: np.ndarray) -> np.ndarray:
        picked = None if routing is None else routing[torch.from_numpy(rows)].to(device)
        tokens = None if token_routing is None else [token_routing[r].to(device) for r in rows]
        skipped = None if exclude is None else [exclude[r] for r in rows]
        out = batch_fn(model, [prompts[r] for r in rows], decoding, picked, tokens, skipped)
        bar.update()
        return out

    batches = _length_batches(prompts, decoding.batch_size)
    bar = tqdm(total=len(my_batches(batches)), desc=desc, unit="batch", leave=False)
    out = map_batches(batches, run, len(prompts))
    bar.close()
    return torch.from_numpy(out)


@torch.no_grad()
def beam_search(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    decoding: CodeDecoding,
    beams: int = 10,
    routing: torch.Tensor | None = None,
    token_routing: Sequence[torch.Tensor] | None = None,
    exclude: Sequence[np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(item_idx LongTensor [n, beams], log-prob FloatTensor [n, beams]) per prompt, best first, by a
    `beams`-wide search over exactly L code tokens, every step constrained to the trie.

    Never an invalid item: where fewer than `beams` codes can be reached (a small catalogue or level),
    the missing ranks hold item -1 with score -inf. `routing` ([n, d], one row per prompt) is handed to
    the model's forward (a personalized adapter), repeated per beam; `token_routing` ([len(prompt), d]
    per prompt) routes the prompt's tokens one by one instead, `routing` then the code's. `exclude` (item
    ids per prompt, e.g. the user's seen items) are never returned: the search skips every code whose
    items are all excluded, so the beams fill with the others. Prompts are left-padded and batched by
    length; under several processes each decodes its share (`lifelora.distributed`)."""
    _check_inputs(prompts, routing, token_routing)
    if beams < 1:
        raise LifeloraError(f"beams must be ≥ 1, got {beams}")
    if not prompts:
        return torch.zeros(0, beams, dtype=torch.long), torch.zeros(0, beams)

    def batch(model, prompts, decoding, routing, token_routing, exclude) -> np.ndarray:
        items, scores = _beam_batch(model, prompts, decoding, beams, routing, token_routing, exclude)
        return torch.cat([items.double(), scores.double()], 1).cpu().numpy()  # exact for ids < 2**53

    if exclude is not None and len(exclude) != len(prompts):
        raise LifeloraError(f"exclude has {len(exclude)} rows for {len(prompts)} prompts")
    packed = _batched(model, prompts, decoding, routing, token_routing, "beam search", batch, exclude)
    return packed[:, :beams].long(), packed[:, beams:].float()


def _rows_of(cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
    """A new cache holding `rows` of `cache` (which stays as it is), without copying the rest."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(rows)
    return selected


def _exact_batch(model, prompts, decoding: CodeDecoding, chunk_size: int, routing, token_routing):
    """[n, n_items] log-probabilities for one batch of prompts; see `exact_scores`."""
    trie, table = decoding.trie, decoding.token_table
    device = table.device
    first = routing if token_routing is None else token_routing
    logits, cache, mask, lengths = _prefill(model, prompts, decoding, device, first)
    n, codes = len(prompts), trie.codes
    root = torch.zeros(n, dtype=torch.long, device=device)
    scores = decoding.level_log_probs(logits, 0, root)[:, codes[:, 0]]
    for depth in range(1, trie.depth):
        size = trie.level_sizes[depth]
        paths = table[torch.arange(depth, device=device), trie.nodes(depth)]  # [nodes, depth] token ids
        level = torch.empty(n * len(paths), size, device=device)
        for start in range(0, len(level), chunk_size):
            rows = torch.arange(start, min(start + chunk_size, len(level)), device=device)
            users = rows // len(paths)
            past = _rows_of(cache, users)
            tokens = paths[rows % len(paths)]
            logits = _extend(model, decoding, past, mask, lengths, users, tokens, 0, routing)
            level[rows] = decoding.level_log_probs(logits, depth, rows % len(paths))
        scores += level.reshape(n, len(paths), size)[:, trie.item_nodes(depth), codes[:, depth]]
    return scores


@torch.no_grad()
def exact_scores(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    decoding: CodeDecoding,
    chunk_size: int = 128,
    routing: torch.Tensor | None = None,
    token_routing: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """FloatTensor [n_users, n_items]: the log-probability of every item's whole code, the scores beam
    search gives (rank with `argsort(-scores)`).

    Each prompt is computed once; at depth d every trie node there is evaluated once, its path tokens fed
    after the cached prompt, so the cost is the number of trie nodes, not items × L. The cache is
    repeated for `chunk_size` (user, node) rows at a time, which bounds memory (and a [users, nodes, codes]
    buffer per level). Same routing and distribution as `beam_search`."""
    _check_inputs(prompts, routing, token_routing)
    if chunk_size < 1:
        raise LifeloraError(f"chunk_size must be ≥ 1, got {chunk_size}")
    if not prompts:
        return torch.zeros(0, decoding.trie.n_items)

    def batch(model, prompts, decoding, routing, token_routing, _exclude) -> np.ndarray:
        return _exact_batch(model, prompts, decoding, chunk_size, routing, token_routing).cpu().numpy()

    return _batched(model, prompts, decoding, routing, token_routing, "exact ranking", batch)
