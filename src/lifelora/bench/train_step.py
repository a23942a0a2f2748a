"""`lifelora bench train-step`: one LoRA training step at a CTR prompt's length."""

from __future__ import annotations

import resource

import torch

from lifelora.bench.timing import bench_backbone, fp32_and_bf16
from lifelora.precision import autocast
from lifelora.training import TrainContext, TrainSettings, TrainStep


def answer_token_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of the token after the prompt, as the CTR answer loss computes it."""
    logits = model(input_ids=batch["input_ids"], use_cache=False, logits_to_keep=1).logits[:, -1]
    return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])


def bench_train_step(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    """One LoRA training step at a CTR prompt's length: the loop's step (forward, answer loss, backward,
    clipping, AdamW) with the default training settings."""
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

    def step(precision: str, tokens: torch.Tensor):
        ctx.batch = {"input_ids": tokens, "labels": labels[: len(tokens)]}
        TrainStep(
            answer_token_loss,
            optimizer,
            max_grad_norm=settings.max_grad_norm,
            forward_context=lambda: autocast(precision),
        )(lm, ctx)

    log(f"timing a LoRA training step of {backbone.name}, batch {batch} × {length} tokens")
    timed = fp32_and_bf16(step, ids, 1 if quick else 3)
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
