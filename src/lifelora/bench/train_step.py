"""`lifelora bench train-step`: one LoRA training step at a CTR prompt's length, in fp32 and (where it is
native) bf16, the two precisions alternated step by step."""

from __future__ import annotations

import resource

import torch

from lifelora.bench.timing import EMULATED_BF16, bench_backbone, bf16_vs_fp32, median_seconds
from lifelora.precision import autocast, native_bf16, resolve
from lifelora.training import TrainContext, TrainSettings, TrainStep


def answer_token_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of the token after the prompt, as the CTR answer loss computes it."""
    logits = model(input_ids=batch["input_ids"], use_cache=False, logits_to_keep=1).logits[:, -1]
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])


def _throughput(seconds: float, batch: int, length: int) -> dict:
    return {
        "step_seconds": round(seconds, 3),
        "samples_per_s": round(batch / seconds, 3),
        "tokens_per_s": round(batch * length / seconds, 1),
    }


def bench_train_step(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """One LoRA training step at a CTR prompt's length: the loop's step (forward, answer loss, backward,
    clipping, AdamW) with the default training settings, per precision."""
    from lifelora.adapters.lora import LoraAdapter, SharedLoraConfig

    backbone, _ = bench_backbone(model, log)
    lm = LoraAdapter.attach(backbone.model, SharedLoraConfig()).model
    batch, length = (2, 256) if quick else (4, 384)
    ids = torch.randint(
        100, lm.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0)
    )
    labels = torch.randint(100, lm.config.vocab_size, (batch,), generator=torch.Generator().manual_seed(1))
    settings = TrainSettings()
    optimizer = torch.optim.AdamW(
        [p for p in lm.parameters() if p.requires_grad], lr=settings.lr, weight_decay=settings.weight_decay
    )
    ctx = TrainContext(lm.train(), settings)
    steps = {
        precision: TrainStep(
            answer_token_loss,
            optimizer,
            max_grad_norm=settings.max_grad_norm,
            forward_context=lambda precision=precision: autocast(precision),
        )
        for precision in ("fp32", "bf16")
    }

    def step(precision: str, tokens: torch.Tensor):
        ctx.batch = {"input_ids": tokens, "labels": labels[: len(tokens)]}
        steps[precision](lm, ctx)

    pairs = 2 if quick else 5
    log(f"timing a LoRA training step of {backbone.name}, batch {batch} × {length} tokens, bf16 vs fp32")
    ratio = bf16_vs_fp32(step, ids, pairs)
    if native_bf16():
        by_precision = {p: _throughput(ratio[f"{p}_s"], batch, length) for p in ("fp32", "bf16")}
    else:
        fp32_s = median_seconds(lambda: step("fp32", ids), pairs)
        by_precision = {"fp32": _throughput(fp32_s, batch, length), "bf16": EMULATED_BF16}
    return {
        "model": backbone.name,
        "batch": batch,
        "seq_len": length,
        "auto_precision": resolve("auto"),
        **by_precision,
        "bf16_vs_fp32_time": ratio,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "trainable_params": sum(p.numel() for p in lm.parameters() if p.requires_grad),
    }
