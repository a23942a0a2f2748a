"""`lifelora bench scoring`: a naive fp32 forward with full logits at every position against
`logits_to_keep=1` in fp32 and (where it is native) bf16, all three alternated, with the machine's GEMM
roofline for reference."""

from __future__ import annotations

import statistics

import torch

from lifelora.bench.timing import (
    EMULATED_BF16,
    bench_backbone,
    bf16_vs_fp32,
    compare,
    interleave,
    matmul_peak_gflops,
    measured_precisions,
)
from lifelora.precision import autocast, native_bf16, resolve


@torch.no_grad()
def bench_scoring(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """Naive fp32 forward with full logits at every position vs `logits_to_keep=1`, per precision."""
    backbone, n_params = bench_backbone(model, log)
    lm = backbone.model
    batch, length = (4, 128) if quick else (16, 256)
    ids = torch.randint(
        100, lm.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    rounds = 2 if quick else 5

    def naive():
        return lm(input_ids=ids, use_cache=False).logits[:, -1]

    def fast(precision: str, tokens: torch.Tensor):
        with autocast(precision):
            return lm(input_ids=tokens, use_cache=False, logits_to_keep=1).logits[:, -1]

    precisions = measured_precisions()
    log(
        f"timing {backbone.name} scoring forward, batch {batch} × {length} tokens: naive fp32 vs {precisions}"
    )
    times = interleave({"naive": naive, **{p: lambda p=p: fast(p, ids) for p in precisions}}, rounds)
    auto = resolve("auto")
    if native_bf16():
        ratio = {**compare(times["bf16"], times["fp32"], ("bf16", "fp32")), "shape": list(ids.shape)}
    else:
        ratio = bf16_vs_fp32(fast, ids, 1)
    tokens = batch * length
    flops = 2 * n_params * tokens  # matmul parameters only (the embedding lookup does no FLOPs)
    peaks = {
        "fp32": matmul_peak_gflops(torch.float32),
        "bf16": matmul_peak_gflops(torch.bfloat16, size=1024 if native_bf16() else 512, repeats=2),
    }

    def at(precision: str) -> dict:
        seconds = statistics.median(times[precision])
        return {
            "seconds": round(seconds, 4),
            "tokens_per_s": round(tokens / seconds, 1),
            "achieved_gflops": round(flops / seconds / 1e9, 1),
            "fraction_of_peak": round(flops / seconds / 1e9 / peaks[precision], 3),
        }

    return {
        "model": backbone.name,
        "batch": batch,
        "seq_len": length,
        "auto_precision": auto,
        "speedup": compare(times["naive"], times[auto], ("naive_fp32", auto)),
        "logits_to_keep_speedup_fp32": compare(times["naive"], times["fp32"], ("naive_fp32", "fp32")),
        "bf16_vs_fp32_time": ratio,
        "naive_fp32_tokens_per_s": round(tokens / statistics.median(times["naive"]), 1),
        **{p: at(p) for p in precisions},
        **({} if native_bf16() else {"bf16": EMULATED_BF16}),
        "matmul_peak_fp32_gflops": round(peaks["fp32"], 1),
        "matmul_peak_bf16_gflops": round(peaks["bf16"], 1),
    }
