"""`lifelora bench personalized`: what RecLoRA's per-instance mixture costs over one shared LoRA.

Four ratios, each measured in one process on the same inputs: a single q_proj-shaped layer
(forward + backward, the personalized bank vs PEFT's LoRA of rank r), a whole training step and a
whole scoring forward of the model, and candidate-scoring shapes against a per-sample loop over
merged per-instance weights (both mixing forms: the loop merges a rank-r LoRA for factors, a
rank-N·r one for products).
"""

from __future__ import annotations

import torch
from torch import nn

from lifelora.adapters import DEFAULT_BRANCH
from lifelora.adapters.personalized import PersonalizedConfig, PersonalizedLinear, routing_context
from lifelora.bench.timing import bench_backbone, median_seconds
from lifelora.precision import autocast, resolve
from lifelora.training import TrainContext, TrainSettings, TrainStep

ROUTING_DIM = 256


class _Projection(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.q_proj = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x)


def _layers(d_in: int, d_out: int, config: PersonalizedConfig):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    shared = get_peft_model(
        _Projection(d_in, d_out),
        LoraConfig(r=config.r, lora_alpha=config.lora_alpha, target_modules=["q_proj"]),
    )
    personalized = PersonalizedLinear(nn.Linear(d_in, d_out, bias=False), config, ROUTING_DIM)
    for layer in (shared, personalized):
        for p in layer.parameters():
            if p.requires_grad:
                nn.init.normal_(p, std=0.02)
    personalized.eval()  # gate dropout off: timing, not training dynamics
    return shared, personalized


def _forward_backward(layer: nn.Module, x: torch.Tensor, routing: torch.Tensor, precision: str):
    def run():
        inputs = x.detach().requires_grad_(True)  # as inside a model: gradients flow to earlier layers
        with routing_context(routing), autocast(precision):
            out = layer(inputs)
        out.float().square().mean().backward()

    return run


@torch.no_grad()
def _merged_loop(layer: PersonalizedLinear, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
    """The alternative to batching: merge each instance's LoRA into the weight, one matmul each.

    The merge costs d_out·r'·d_in per instance: r' = r for factors, N·r for products.
    """
    bank = layer.banks[DEFAULT_BRANCH]
    w0, scale = layer.base_layer.weight, bank.config.scaling
    out = []
    for i in range(x.shape[0]):
        a, b, _ = bank.instance_lora(routing[i])
        out.append(torch.nn.functional.linear(x[i], w0 + scale * (b @ a)))
    return torch.stack(out)


def _loop_speedup(layer: PersonalizedLinear, batch: int, length: int, repeats: int) -> tuple[float, float]:
    x = torch.randn(batch, length, layer.base_layer.in_features)
    routing = torch.randn(batch, ROUTING_DIM)

    @torch.no_grad()
    def batched():
        with routing_context(routing):
            return layer(x)

    diff = float((batched() - _merged_loop(layer, x, routing)).abs().max())
    loop_s = median_seconds(lambda: _merged_loop(layer, x, routing), repeats)
    return loop_s / median_seconds(batched, repeats), diff


def _step_seconds(
    model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, precision: str, repeats: int, routing=None
) -> float:
    """Median seconds of the loop's training step (with the default settings' clipping)."""
    settings = TrainSettings(precision=precision)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    extra = {} if routing is None else {"routing": routing}

    def loss(model: nn.Module, batch: dict) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], use_cache=False, logits_to_keep=1, **extra).logits[:, -1]
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"])

    step = TrainStep(
        loss, optimizer, max_grad_norm=settings.max_grad_norm, forward_context=lambda: autocast(precision)
    )
    ctx = TrainContext(model, settings, batch={"input_ids": ids, "labels": labels})
    return median_seconds(lambda: step(model, ctx), repeats)


def _scoring_seconds(
    model: nn.Module, ids: torch.Tensor, precision: str, repeats: int, routing=None
) -> float:
    """One eval-mode forward of a scoring batch (answer position only), as `lifelora evaluate` runs it."""
    model.eval()
    extra = {} if routing is None else {"routing": routing}

    @torch.no_grad()
    def forward():
        with autocast(precision):
            model(input_ids=ids, use_cache=False, logits_to_keep=1, **extra)

    return median_seconds(forward, repeats)


def bench_personalized(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    from lifelora.adapters.lora import LoraAdapter, SharedLoraConfig
    from lifelora.adapters.personalized import PersonalizedAdapter

    precision = resolve("auto")
    config = PersonalizedConfig(n_loras=16, r=8)
    backbone, _ = bench_backbone(model, log)
    q_proj = backbone.model.model.layers[0].self_attn.q_proj
    d_in, d_out = q_proj.in_features, q_proj.out_features
    repeats = 2 if quick else 5

    shared, personalized = _layers(d_in, d_out, config)
    batch, length = (4, 128) if quick else (16, 256)
    log(f"layer {d_in}→{d_out}, N {config.n_loras}, r {config.r}, batch {batch} × {length}, {precision}")
    x, routing = torch.randn(batch, length, d_in), torch.randn(batch, ROUTING_DIM)
    shared_s = median_seconds(_forward_backward(shared, x, routing, precision), repeats)
    personal_s = median_seconds(_forward_backward(personalized, x, routing, precision), repeats)

    log("candidate-scoring shapes: batched mixture vs a loop over merged per-instance weights")
    products = PersonalizedLinear(
        personalized.base_layer, config.model_copy(update={"mixing": "products"}), ROUTING_DIM
    )
    products.load_state_dict(personalized.state_dict())
    products.eval()
    short = (64, 32) if quick else (256, 32)
    loops = {
        (mixing, shape): _loop_speedup(layer, *shape, repeats)
        for mixing, layer in (("factors", personalized), ("products", products))
        for shape in (short, (batch, length))
    }

    step_batch, step_len = (2, 128) if quick else (4, 256)
    log(f"training step of {backbone.name}: shared LoRA vs personalized, batch {step_batch} × {step_len}")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, backbone.model.config.vocab_size, (step_batch, step_len), generator=g)
    labels = torch.randint(100, backbone.model.config.vocab_size, (step_batch,), generator=g)
    step_repeats = 1 if quick else 3
    lora = LoraAdapter.attach(backbone.model, SharedLoraConfig(r=config.r))
    lm = lora.model.train()
    score_batch, score_len = (4, 128) if quick else (16, 384)
    score_ids = torch.randint(100, backbone.model.config.vocab_size, (score_batch, score_len), generator=g)
    score_routing = torch.randn(score_batch, ROUTING_DIM, generator=g)
    shared_step = _step_seconds(lm, ids, labels, precision, step_repeats)
    shared_score = _scoring_seconds(lm, score_ids, precision, step_repeats)
    base = lora.unload()  # the same backbone without the shared LoRA
    mixed = PersonalizedAdapter.attach(base, config, routing_dim=ROUTING_DIM).model.train()
    step_routing = torch.randn(step_batch, ROUTING_DIM, generator=g)
    personal_step = _step_seconds(mixed, ids, labels, precision, step_repeats, routing=step_routing)
    personal_score = _scoring_seconds(mixed, score_ids, precision, step_repeats, routing=score_routing)
    return {
        "model": backbone.name,
        "precision": precision,
        "n_loras": config.n_loras,
        "r": config.r,
        "mixing": config.mixing,
        "layer_shape": [d_in, d_out],
        "layer_batch": [batch, length],
        "layer_ratio_vs_shared": round(personal_s / shared_s, 3),
        "layer_ms_shared": round(shared_s * 1000, 2),
        "layer_ms_personalized": round(personal_s * 1000, 2),
        "loop_batch": list(short),
        "speedup_vs_loop": round(loops["factors", short][0], 2),
        "speedup_vs_loop_at_layer_batch": round(loops["factors", (batch, length)][0], 2),
        "speedup_vs_loop_products": round(loops["products", short][0], 2),
        "speedup_vs_loop_products_at_layer_batch": round(loops["products", (batch, length)][0], 2),
        "loop_max_abs_diff": max(diff for _, diff in loops.values()),
        "step_batch": [step_batch, step_len],
        "step_ratio_vs_shared": round(personal_step / shared_step, 3),
        "step_s_shared": round(shared_step, 3),
        "step_s_personalized": round(personal_step, 3),
        "scoring_batch": [score_batch, score_len],
        "scoring_ratio_vs_shared": round(personal_score / shared_score, 3),
        "scoring_s_shared": round(shared_score, 3),
        "scoring_s_personalized": round(personal_score, 3),
        "trainable_params_personalized": sum(p.numel() for p in mixed.parameters() if p.requires_grad),
    }
