"""`lifelora bench continual`: what PESO's proximal term costs a training step. The single evolving LoRA's
step (finetune = PESO with λ = 0) and PESO's, with the released softmax-KL and with the L2 form, timed in
alternation on SmolLM2 with PESO's LoRA (every projection, r 8) plus the code tokens' rows, at a
next-item prompt's length; and the memory PESO adds: the anchor (one frozen copy of the adapter) and the
term's own gradient, which the step keeps to log its norm. The step ratios carry the machine's noise
(±10% per pair on 2 shared cores); `term_ms` times the term alone (value, its logged gradient, its
backward), the cost the ratio cannot resolve."""

from __future__ import annotations

import resource

import torch

from lifelora.bench.timing import bench_backbone, compare, interleave, median_seconds
from lifelora.continual.strategies.proximal import ProximalHook, regularized
from lifelora.precision import autocast, resolve
from lifelora.training import TrainContext, TrainSettings, TrainStep

PESO_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CODE_TOKENS = 32 * 3 + 8  # three levels of 32 codes and a dedup level, as ML-100K's item codes


def _code_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy of the last 4 positions' tokens, as the next-item response loss."""
    logits = model(input_ids=batch["input_ids"], use_cache=False, logits_to_keep=5).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), batch["labels"].ravel()
    )


def _megabytes(tensors) -> float:
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 2)


def bench_continual(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    from lifelora.adapters.lora import LoraAdapter, SharedLoraConfig

    backbone, _ = bench_backbone(model, log)
    vocab = backbone.model.config.vocab_size
    config = SharedLoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules=PESO_TARGETS,
        trainable_token_indices=list(range(vocab - CODE_TOKENS, vocab)),
    )  # fmt: skip
    adapter = LoraAdapter.attach(backbone.model, config)
    lm = adapter.model.train()
    batch, length = (2, 128) if quick else (8, 160)
    generator = torch.Generator().manual_seed(0)
    data = {
        "input_ids": torch.randint(100, vocab, (batch, length), generator=generator),
        "labels": torch.randint(vocab - CODE_TOKENS, vocab, (batch, 4), generator=generator),
    }
    settings = TrainSettings(grad_accum=1)
    live = regularized(adapter.branch_parameters())
    anchor = {name: p.detach().clone() + 0.01 * torch.randn_like(p) for name, p in live.items()}
    optimizer = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-5)
    precision = resolve("auto")
    hooks = {
        "finetune": [],
        "peso_softmax_kl": [ProximalHook(live, anchor, "softmax_kl", 5.0)],
        "peso_l2": [ProximalHook(live, anchor, "l2", 1.0)],
    }
    ctx = TrainContext(lm, settings, batch=data)
    steps = {
        name: TrainStep(
            _code_loss,
            optimizer,
            hook_list,
            settings.max_grad_norm,
            forward_context=lambda: autocast(precision),
        )
        for name, hook_list in hooks.items()
    }
    rounds = 2 if quick else 6
    log(f"timing next-item training steps of {backbone.name} ({precision}), batch {batch} × {length}: "
        f"single evolving LoRA vs PESO (softmax-KL, L2), {rounds} rounds")  # fmt: skip
    times = interleave({name: (lambda step=step: step(lm, ctx)) for name, step in steps.items()}, rounds)
    figures = {
        f"peso_step_ratio_{form}": compare(
            times[f"peso_{form}"], times["finetune"], (f"peso_{form}", "finetune")
        )
        for form in ("softmax_kl", "l2")
    }
    for form in ("softmax_kl", "l2"):  # the term alone, the share the step ratios hide in their noise
        hook = hooks[f"peso_{form}"][0]
        seconds = median_seconds(
            lambda hook=hook: (hook.loss_term(ctx).backward(), optimizer.zero_grad()), 10
        )
        figures[f"peso_step_ratio_{form}"]["term_ms"] = round(1000 * seconds, 2)
        figures[f"peso_step_ratio_{form}"]["term_share"] = round(
            seconds / figures[f"peso_step_ratio_{form}"]["finetune_s"], 4
        )
    trainable = [p for p in lm.parameters() if p.requires_grad]
    return {
        "model": backbone.name,
        "precision": precision,
        "batch": batch,
        "seq_len": length,
        **figures,
        "adapter_mb": _megabytes(trainable),
        "regularized_mb": _megabytes(live.values()),
        "peso_extra_mb": round(2 * _megabytes(live.values()), 2),  # the anchor + the term's gradient
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
