"""Trie-constrained next-item decoding: lifelora's batched beam search against HF `generate` with a
dict-trie `prefix_allowed_tokens_fn` (and with lifelora's `TrieLogitsProcessor`), the three alternated
on the same users, and exact full-catalogue scoring against beam search.

The model is a randomly initialised Llama (SmolLM2-135M's shape; a tiny one for `quick`) with one token
per (level, code), the catalogue random codes with a dedup level, the prompts random tokens of about
150. Timings need no training: decoding costs the same whatever the weights. `trie_share` is the part
of one beam search spent in the trie's queries (target ≤ 0.10). The same-items check runs in fp32 on a
few users (bf16 rounding could reorder near-ties); the timings run at the resolved `auto` precision.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList

from lifelora.bench.timing import compare, interleave
from lifelora.llm.batching import left_pad
from lifelora.precision import autocast, resolve
from lifelora.run import environment
from lifelora.tasks.next_item.code_scores import CodeDecoding, TrieLogitsProcessor, code_lookup
from lifelora.tasks.next_item.decoding import beam_search, exact_scores
from lifelora.tasks.next_item.trie import CodeTrie

BEAMS = 10
TEMPERATURE = 0.8


def llama_shape(vocab: int, hidden: int, ffn: int, layers: int, heads: int, kv_heads: int, **extra) -> dict:
    """LlamaConfig keyword arguments of a model shape (tied embeddings, as SmolLM2)."""
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=True,
        **extra,
    )


SMOLLM2_135M = llama_shape(
    49152, 576, 1536, 30, 9, 3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5
)
TINY = llama_shape(1024, 64, 128, 2, 4, 2, max_position_embeddings=1024)


def random_catalogue(n_items: int, levels: int, size: int, seed: int = 0) -> tuple[np.ndarray, tuple, int]:
    """(codes [n, levels + 1], level sizes, colliding items): uniform codes plus a dedup digit, each item's
    rank among the items sharing its code (the last level is as wide as the largest group)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, size, size=(n_items, levels))
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    dedup = np.empty(n_items, dtype=np.int64)
    dedup[order] = np.arange(n_items) - np.repeat(starts, counts)
    sizes = (size,) * levels + (int(counts.max()),)
    return np.column_stack([codes, dedup]), sizes, int(n_items - len(counts))


def _model(shape: dict, sizes: tuple, device: str) -> tuple[LlamaForCausalLM, torch.Tensor]:
    """A random Llama whose vocabulary ends with one token per (level, code), and the token table."""
    base = shape["vocab_size"]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**shape, "vocab_size": base + sum(sizes)})).eval().to(device)
    table = torch.full((len(sizes), max(sizes)), -1, dtype=torch.long)
    offsets = np.cumsum((0, *sizes))
    for level, size in enumerate(sizes):
        table[level, :size] = base + int(offsets[level]) + torch.arange(size)
    return model, table


def _prefix_fn(codes: np.ndarray, table: torch.Tensor, prompt_length: int) -> Callable:
    """HF's constraint the usual way: a dict from generated token ids to the allowed next ids."""
    children: dict[tuple[int, ...], set[int]] = {}
    for path in table[torch.arange(codes.shape[1]), torch.from_numpy(codes)].tolist():
        for depth in range(len(path)):
            children.setdefault(tuple(path[:depth]), set()).add(path[depth])
    allowed = {prefix: sorted(ids) for prefix, ids in children.items()}
    return lambda _batch_id, sequence: allowed[tuple(sequence[prompt_length:].tolist())]


def _generate(model, prompts, trie, table, codes, batch_size: int, precision: str, constraint: str):
    """HF beam search over the prompts in batches: (items [n, beams], summed log-probs [n, beams])."""
    device, lookup = next(model.parameters()).device, code_lookup(table)
    items, scores = [], []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start : start + batch_size], pad_id=0)
        width = ids.shape[1]
        kwargs = (
            {"prefix_allowed_tokens_fn": _prefix_fn(codes, table, width)}
            if constraint == "prefix_fn"
            else {"logits_processor": LogitsProcessorList([TrieLogitsProcessor(trie, table, width)])}
        )
        with torch.no_grad(), autocast(precision, device):
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                num_beams=BEAMS,
                num_return_sequences=BEAMS,
                max_new_tokens=trie.depth,
                do_sample=False,
                length_penalty=0.0,
                pad_token_id=0,
                return_dict_in_generate=True,
                output_scores=True,
                **kwargs,
            )
        generated = lookup[out.sequences[:, width:].cpu().clamp(max=len(lookup) - 1)]
        items.append(trie.item_of(generated).reshape(-1, BEAMS))
        scores.append(out.sequences_scores.float().cpu().reshape(-1, BEAMS))
    return torch.cat(items), torch.cat(scores)


class _TimedTrie:
    """A trie that adds the seconds spent in its per-step queries to `seconds` (synchronising a GPU)."""

    def __init__(self, trie: CodeTrie):
        self.trie, self.seconds = trie, 0.0

    def __getattr__(self, name: str):
        return getattr(self.trie, name)

    def to(self, device) -> _TimedTrie:
        self.trie = self.trie.to(device)
        return self

    def _timed(self, method: str, *args):
        sync = torch.cuda.synchronize if self.trie.device.type == "cuda" else lambda: None
        sync()
        start = time.perf_counter()
        out = getattr(self.trie, method)(*args)
        sync()
        self.seconds += time.perf_counter() - start
        return out

    def children(self, *args):
        return self._timed("children", *args)

    def child(self, *args):
        return self._timed("child", *args)

    def leaf_items(self, *args):
        return self._timed("leaf_items", *args)


def _trie_share(decode: Callable[[CodeTrie], object], trie: CodeTrie, rounds: int) -> float:
    """Median share of one beam search's time spent in trie queries."""
    shares = []
    for _ in range(rounds):
        timed = _TimedTrie(trie)
        start = time.perf_counter()
        decode(timed)
        shares.append(timed.seconds / (time.perf_counter() - start))
    return round(statistics.median(shares), 4)


@torch.no_grad()
def bench_decoding(quick: bool, dataset: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Decoding figures on a random model and catalogue (see the module docstring); about 30 s for
    `quick` on a laptop CPU, a GPU or a long CPU run for the full SmolLM2-135M shape. `dataset` is
    unused: the catalogue is random (ML-1M-sized), and decoding costs the same whatever it holds."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape, (n_items, levels, size) = (TINY, (500, 3, 16)) if quick else (SMOLLM2_135M, (3706, 3, 64))
    n_users, batch_size, rounds, exact_users = (16, 8, 2, 2) if quick else (64, 16, 3, 2)
    codes, sizes, collisions = random_catalogue(n_items, levels, size)
    trie = CodeTrie(codes, sizes)
    model, table = _model(shape, sizes, device)
    rng = np.random.default_rng(1)
    lengths = np.sort(np.clip(rng.normal(150, 20, n_users).round(), 100, 200).astype(int))
    prompts = [rng.integers(10, shape["vocab_size"], n).tolist() for n in lengths]
    precision = resolve("auto", device)
    log(
        f"decoding {n_users} users × {BEAMS} beams on a random {'tiny' if quick else 'SmolLM2-135M'} Llama "
        f"({device}, {precision}), {n_items} items as codes {list(sizes)}"
    )

    def ours(users=prompts, prec=precision, temperature=1.0, constraint=trie):
        decoding = CodeDecoding(constraint, table, 0, temperature, batch_size=batch_size, precision=prec)
        return beam_search(model, users, decoding, BEAMS)

    check = prompts[:4]
    same = ours(check, "fp32")
    hf_same = _generate(model, check, trie, table, codes, batch_size, "fp32", "prefix_fn")
    times = interleave(
        {
            "beam_search": ours,
            "prefix_fn": lambda: _generate(
                model, prompts, trie, table, codes, batch_size, precision, "prefix_fn"
            ),
            "trie_processor": lambda: _generate(
                model, prompts, trie, table, codes, batch_size, precision, "processor"
            ),
        },
        rounds,
    )
    few = prompts[:exact_users]
    exact_times = interleave(
        {
            "exact": lambda: exact_scores(
                model,
                few,
                CodeDecoding(trie, table, 0, TEMPERATURE, batch_size=batch_size, precision=precision),
            ),
            "beam": lambda: ours(few, temperature=TEMPERATURE),
        },
        rounds if quick else 1,
    )
    beam_s = statistics.median(times["beam_search"])
    return {
        "device": device,
        "precision": precision,
        "model": "random tiny Llama" if quick else "random SmolLM2-135M-shaped Llama",
        "items": n_items,
        "level_sizes": list(sizes),
        "collisions_before_dedup": collisions,
        "trie_nodes": list(trie.node_counts),
        "users": n_users,
        "prompt_tokens_mean": round(float(lengths.mean()), 1),
        "beams": BEAMS,
        "batch_size": batch_size,
        "users_per_s": round(n_users / beam_s, 2),
        "trie_share": _trie_share(lambda t: ours(constraint=t), trie, rounds),
        "speedup_vs_prefix_fn": compare(
            times["prefix_fn"], times["beam_search"], ("prefix_fn", "beam_search")
        ),
        "speedup_processor_in_generate": compare(
            times["prefix_fn"], times["trie_processor"], ("prefix_fn", "trie_processor")
        ),
        "same_items_as_prefix_fn": bool(torch.equal(same[0], hf_same[0])),
        "same_items_users": len(check),
        "max_score_diff_vs_prefix_fn": float((same[1] - hf_same[1]).abs().max()),
        "exact_vs_beam_time": compare(exact_times["exact"], exact_times["beam"], ("exact", "beam")),
        "exact_users": exact_users,
        "machine": environment(),
    }
