"""LLM benchmarks (`lifelora bench scoring|ranking|train-step`), each comparing two ways measured in
the same process on the same inputs, so the ratios hold on a shared, noisy machine."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import numpy as np
import torch

from lifelora.precision import autocast, native_bf16, resolve


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _fp32_and_bf16(fn: Callable[[str, torch.Tensor], object], ids: torch.Tensor, repeats: int) -> dict:
    """Median seconds of `fn(precision, ids)` under `auto`, and the bf16 ÷ fp32 time ratio.

    Where bf16 is emulated (no native support: ~80× slower matmuls) the ratio is measured on a small
    slice of the batch, which is enough to show it and keeps the benchmark to minutes."""
    native = native_bf16()
    probe = ids if native else ids[:1, :64]
    fp32 = median_seconds(lambda: fn("fp32", ids), repeats)
    probe_fp32 = fp32 if native else median_seconds(lambda: fn("fp32", probe), repeats)
    probe_bf16 = median_seconds(lambda: fn("bf16", probe), 1 if not native else repeats)
    chosen = resolve("auto")
    return {
        "auto": chosen,
        "auto_s": probe_bf16 if chosen == "bf16" else fp32,
        "fp32_s": fp32,
        "bf16_vs_fp32": round(probe_bf16 / probe_fp32, 2),
        "ratio_shape": list(probe.shape),
    }


def matmul_peak_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 3) -> float:
    """Measured GEMM throughput of this machine for `dtype` (the roofline the model is compared to)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    seconds = median_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def bench_backbone(model: str | None, log):
    from lifelora.llm.backbone import DEFAULT_MODEL, load_backbone

    backbone = load_backbone(model or DEFAULT_MODEL, log=log)
    embedding = backbone.model.get_input_embeddings().weight.numel()
    return backbone, sum(p.numel() for p in backbone.model.parameters()) - embedding


@torch.no_grad()
def bench_scoring(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """Naive fp32 forward with full logits at every position vs `logits_to_keep=1` under `auto` precision."""
    backbone, n_params = bench_backbone(model, log)
    lm = backbone.model
    batch, length = (4, 128) if quick else (16, 256)
    ids = torch.randint(
        100, lm.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    repeats = 2 if quick else 4

    def naive():
        return lm(input_ids=ids, use_cache=False).logits[:, -1]

    def fast(precision: str, tokens: torch.Tensor):
        with autocast(precision):
            return lm(input_ids=tokens, use_cache=False, logits_to_keep=1).logits[:, -1]

    log(f"timing {backbone.name} scoring forward, batch {batch} × {length} tokens")
    naive_s = median_seconds(naive, repeats)
    timed = _fp32_and_bf16(fast, ids, repeats)
    fast_s, fast_fp32_s = timed["auto_s"], timed["fp32_s"]
    tokens = batch * length
    flops = 2 * n_params * tokens  # matmul parameters only (the embedding lookup does no FLOPs)
    peak_fp32 = matmul_peak_gflops(torch.float32)
    peak_bf16 = matmul_peak_gflops(torch.bfloat16, size=512 if not native_bf16() else 1024, repeats=2)
    return {
        "model": backbone.name,
        "batch": batch,
        "seq_len": length,
        "auto_precision": timed["auto"],
        "speedup": round(naive_s / fast_s, 2),
        "tokens_per_s": round(tokens / fast_s, 1),
        "naive_fp32_tokens_per_s": round(tokens / naive_s, 1),
        "logits_to_keep_speedup_fp32": round(naive_s / fast_fp32_s, 2),
        "bf16_vs_fp32_time": timed["bf16_vs_fp32"],
        "bf16_ratio_shape": timed["ratio_shape"],
        "achieved_gflops": round(flops / fast_s / 1e9, 1),
        "matmul_peak_fp32_gflops": round(peak_fp32, 1),
        "matmul_peak_bf16_gflops": round(peak_bf16, 1),
        "fraction_of_bf16_peak": round(flops / fast_s / 1e9 / peak_bf16, 3),
        "fraction_of_fp32_peak": round(flops / fast_s / 1e9 / peak_fp32, 3),
    }


def _ranking_times(backbone, data, layout: str, users: list[int], n_candidates: int, history: int) -> dict:
    from lifelora.llm.prompts import PromptBuilder
    from lifelora.llm.scoring import score_candidates, score_prompts

    builder = PromptBuilder(backbone.tokenizer, data.name, data.users, data.items, layout=layout)
    rng = np.random.default_rng(0)
    pad, answers = backbone.tokenizer.pad_token_id, builder.answer_ids
    independent_s = shared_s = max_diff = 0.0
    prefix_len, suffix_len = [], []
    for user in users:
        row = data.users.row(user, named=True)
        seq = data.sequences.slice(row["seq_offset"] + row["seq_len"] - history, history)
        prefix = builder.encode_prefixes(
            np.array([user]), [seq["item_idx"].to_numpy()], [seq["rating"].to_numpy()]
        )[0]
        candidates = rng.choice(len(data.items), n_candidates, replace=False)
        continuations = [t + builder.suffix_ids for t in builder.encode_targets(candidates)]
        prefix_len.append(len(prefix))
        suffix_len.extend(len(c) for c in continuations)
        start = time.perf_counter()
        full = score_prompts(
            backbone.model,
            [prefix + c for c in continuations],
            pad,
            answers,
            batch_size=n_candidates,
            precision="fp32",
            progress=False,
        )
        independent_s += time.perf_counter() - start
        start = time.perf_counter()
        fast = score_candidates(
            backbone.model, prefix, continuations, pad, answers, batch_size=n_candidates, precision="fp32"
        )
        shared_s += time.perf_counter() - start
        max_diff = max(max_diff, float(np.abs(full - fast).max()))
    per_candidate = 1000 / (len(users) * n_candidates)
    return {
        "speedup": round(independent_s / shared_s, 2),
        "max_abs_diff": max_diff,
        "mean_prefix_tokens": round(float(np.mean(prefix_len)), 1),
        "mean_candidate_tokens": round(float(np.mean(suffix_len)), 1),
        "independent_ms_per_candidate": round(independent_s * per_candidate, 1),
        "shared_ms_per_candidate": round(shared_s * per_candidate, 1),
    }


def bench_ranking(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """20 candidates per user: 20 independent prompts (batched) vs the shared prefix computed once, in
    the default `target-last` layout and in ReLLa's exact order (longer per-candidate suffix)."""
    from lifelora.demo import ensure_prepared

    backbone, _ = bench_backbone(model, log)
    data = ensure_prepared(dataset or "ml-100k")
    users = [0] if quick else [0, 1, 2]
    log(f"ranking 20 candidates for {len(users)} user(s) with {backbone.name}, fp32")
    target_last = _ranking_times(backbone, data, "target-last", users, 20, 10)
    rella = _ranking_times(backbone, data, "rella", users, 20, 10)
    return {
        "model": backbone.name,
        "users": len(users),
        "candidates": 20,
        "precision": "fp32",
        **target_last,
        "max_abs_diff": max(target_last["max_abs_diff"], rella["max_abs_diff"]),
        "rella_layout": {k: v for k, v in rella.items() if k != "max_abs_diff"},
    }


def bench_train_step(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """One LoRA training step (forward, answer loss, backward, AdamW) at a CTR prompt's length."""
    from lifelora.adapters.lora import AdapterConfig, attach_lora

    backbone, _ = bench_backbone(model, log)
    lm = attach_lora(backbone.model, AdapterConfig())
    batch, length = (2, 256) if quick else (4, 384)
    ids = torch.randint(
        100, lm.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    labels = torch.randint(100, lm.config.vocab_size, (batch,), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-4)
    lm.train()

    def step(precision: str, tokens: torch.Tensor):
        with autocast(precision):
            logits = lm(input_ids=tokens, use_cache=False, logits_to_keep=1).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[: len(tokens)])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    log(f"timing a LoRA training step of {backbone.name}, batch {batch} × {length} tokens")
    timed = _fp32_and_bf16(step, ids, 1 if quick else 3)
    chosen_s = timed["auto_s"]
    return {
        "model": backbone.name,
        "batch": batch,
        "seq_len": length,
        "auto_precision": timed["auto"],
        "samples_per_s": round(batch / chosen_s, 3),
        "tokens_per_s": round(batch * length / chosen_s, 1),
        "step_seconds": round(chosen_s, 2),
        "bf16_vs_fp32_time": timed["bf16_vs_fp32"],
        "bf16_ratio_shape": timed["ratio_shape"],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "trainable_params": sum(p.numel() for p in lm.parameters() if p.requires_grad),
    }
