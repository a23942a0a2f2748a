"""`lifelora bench scoring`: a naive fp32 forward with full logits at every position against
`logits_to_keep=1` under `auto` precision, with the machine's GEMM roofline for reference."""

from __future__ import annotations

import torch

from lifelora.bench.timing import bench_backbone, fp32_and_bf16, matmul_peak_gflops, median_seconds
from lifelora.precision import autocast, native_bf16


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
    timed = fp32_and_bf16(fast, ids, repeats)
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
