"""Timing helpers shared by the benchmarks: median wall time after a warm-up, the bf16 ÷ fp32 ratio
measured in the same process, the machine's GEMM roofline, and the benchmark backbone."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from lifelora.precision import native_bf16, resolve


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def fp32_and_bf16(fn: Callable[[str, torch.Tensor], object], ids: torch.Tensor, repeats: int) -> dict:
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
