"""Mixed precision in one place: bf16 autocast where the hardware does bf16 matmuls natively
(CUDA with bf16, CPUs with AVX512-BF16/AMX), fp32 elsewhere.

`auto` matters: on a CPU without native bf16 (AVX2 only) bf16 matmuls are emulated and measured ~80×
slower than fp32 (BENCHMARKS.md), so autocast there would be a large slowdown, not a speed-up.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@cache
def native_bf16(device_type: str = "cpu") -> bool:
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve(precision: str, device: str | torch.device = "cpu") -> str:
    """`auto` → bf16 where it is native on `device`, else fp32; explicit choices are kept."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(torch.device(device).type) else "fp32"
    return precision


def run_precisions(train: str, scoring: str, device: str | torch.device = "cpu") -> dict[str, str]:
    """What a run records: the precisions it trains and scores at, `auto` resolved on `device`."""
    return {"precision": resolve(train, device), "eval_precision": resolve(scoring, device)}


def autocast(precision: str, device: str | torch.device = "cpu"):
    """bf16 autocast for `bf16` (and `auto` where bf16 is native); a no-op otherwise."""
    if resolve(precision, device) == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()
