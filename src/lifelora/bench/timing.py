"""Timing helpers shared by the benchmarks: contenders timed in alternation, the precisions a run
measures, the machine's GEMM roofline, and the benchmark backbone.

Every ratio between two contenders comes from `alternate` (or `interleave` + `compare` for more than
two): on a machine shared with other jobs the load comes and goes within seconds, so timing all of A
and then all of B puts a burst on one side and swings the ratio several-fold. Alternating A, B, A, B
puts each pair's calls next to each other in time, and the median of the per-pair ratios, with its
spread, holds while load comes and goes. (A machine loaded past its cores all along is another matter:
see `lifelora.bench` on the load average each result records.)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch

from lifelora.precision import native_bf16

EMULATED_BF16 = (
    "not measured at full size: this CPU has no native bf16 (AVX512-BF16/AMX), torch emulates it with "
    "~80× slower matmuls, so `auto` runs fp32 here (a bf16 ÷ fp32 ratio, if any, is on the slice its "
    "`shape` names)"
)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` after a warm-up call: for figures that compare nothing (a roofline)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleave(contenders: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each contender in each round: one warm-up call of each, then `rounds` rounds that call
    them in turn (A, B, …, A, B, …), so the calls compared within a round are adjacent in time."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _seconds(value: float) -> float:
    return float(f"{value:.4g}")


def compare(a: list[float], b: list[float], names: tuple[str, str] = ("a", "b")) -> dict:
    """a ÷ b per round (both lists from one `interleave`): the median ratio, its min and max over the
    pairs, the number of pairs, and each side's median seconds under `names`."""
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return {
        "ratio": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "pairs": len(ratios),
        f"{names[0]}_s": _seconds(statistics.median(a)),
        f"{names[1]}_s": _seconds(statistics.median(b)),
    }


def alternate(
    a: Callable[[], object], b: Callable[[], object], pairs: int, names: tuple[str, str] = ("a", "b")
) -> dict:
    """a ÷ b time, measured as A, B, A, B, … after a warm-up of each (see the module docstring)."""
    times = interleave({"a": a, "b": b}, pairs)
    return compare(times["a"], times["b"], names)


def measured_precisions() -> list[str]:
    """fp32 always, bf16 too where it is native: emulated bf16 would take hours for the big figures."""
    return ["fp32", "bf16"] if native_bf16() else ["fp32"]


def bf16_vs_fp32(fn: Callable[[str, torch.Tensor], object], ids: torch.Tensor, pairs: int) -> dict:
    """bf16 ÷ fp32 time of `fn(precision, ids)`, alternating the two precisions.

    Where bf16 is emulated (~80× slower matmuls) the ratio is measured once on a 1 × 64 slice, which is
    enough to show it and keeps the benchmark to minutes; `shape` says which."""
    native = native_bf16()
    probe = ids if native else ids[:1, :64]
    figure = alternate(
        lambda: fn("bf16", probe), lambda: fn("fp32", probe), pairs if native else 1, ("bf16", "fp32")
    )
    return {**figure, "shape": list(probe.shape)}


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
