"""`lifelora bench personalized`: what RecLoRA's per-instance mixture costs over one shared LoRA.

Per precision (fp32, and bf16 where it is native), each figure the median ratio over alternated pairs
(`bench.timing.alternate`) on the same inputs: a single q_proj-shaped layer (forward + backward, the
personalized bank vs PEFT's LoRA of rank r), a whole training step and a whole scoring forward of the
model, and candidate-scoring shapes against a per-sample loop over merged per-instance weights (both
mixing forms: the loop merges a rank-r LoRA for factors, a rank-N·r one for products). `targets` reads
each target figure against its bound.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from lifelora.adapters import DEFAULT_BRANCH
from lifelora.adapters.personalized import PersonalizedConfig, PersonalizedLinear, routing_context
from lifelora.bench.timing import (
    EMULATED_BF16,
    alternate,
    bench_backbone,
    compare,
    interleave,
    measured_precisions,
)
from lifelora.precision import autocast, native_bf16
from lifelora.training import TrainContext, TrainSettings, TrainStep

ROUTING_DIM = 256
LOOP_BATCH = (256, 32)  # the loop targets' shape: many candidates, short continuations
TARGETS = {  # figure: (comparison, bound), read against the figure's median ratio
    "layer_ratio_vs_shared": ("<=", 1.5),
    "step_ratio_vs_shared": ("<=", 1.15),
    "scoring_ratio_vs_shared": ("<=", 1.10),
    "speedup_vs_loop": (">=", 5.0),
    "speedup_vs_loop_products": (">=", 5.0),
}


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
    personalized = PersonalizedLinear(nn.Linear(d_in, d_out, bias=False)).add_bank(
        "default", config, ROUTING_DIM
    )
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


@torch.no_grad()
def _versus_loop(layer: PersonalizedLinear, shape: tuple[int, int], precision: str, pairs: int) -> dict:
    """Loop ÷ batched time; at `LOOP_BATCH` also loop ÷ the frozen layer alone (`ceiling`: the most
    batching could win, were the bank's delta free), the three interleaved. The outputs of the last
    round are compared."""
    x = torch.randn(*shape, layer.base_layer.in_features)
    routing = torch.randn(shape[0], ROUTING_DIM)
    outputs = {}

    def loop():
        with autocast(precision):
            outputs["loop"] = _merged_loop(layer, x, routing)

    def batched():
        with routing_context(routing), autocast(precision):
            outputs["batched"] = layer(x)

    def dense():
        with autocast(precision):
            layer.base_layer(x)

    contenders = {"loop": loop, "batched": batched} | ({"dense": dense} if shape == LOOP_BATCH else {})
    times = interleave(contenders, pairs)
    figures = {
        "speedup": compare(times["loop"], times["batched"], ("loop", "batched")),
        "max_abs_diff": float((outputs["batched"].float() - outputs["loop"].float()).abs().max()),
    }
    if "dense" in times:
        figures["ceiling"] = compare(times["loop"], times["dense"], ("loop", "dense_layer"))
    return figures


def _train_step(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, precision: str, routing=None):
    """The loop's training step (with the default settings' clipping) on one batch, as a call."""
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
    return lambda: step(model, ctx)


def _scoring_forward(model: nn.Module, ids: torch.Tensor, precision: str, routing=None) -> Callable[[], None]:
    """One eval-mode forward of a scoring batch (answer position only), as `lifelora evaluate` runs it."""
    extra = {} if routing is None else {"routing": routing}

    @torch.no_grad()
    def forward():
        with autocast(precision):
            model(input_ids=ids, use_cache=False, logits_to_keep=1, **extra)

    return forward


def _targets(by_precision: dict[str, dict]) -> dict:
    """Each target figure's median ratio against its bound, per measured precision (reported only)."""
    return {
        precision: {
            name: {
                "ratio": figures[name]["ratio"],
                "target": f"{op} {bound}",
                "met": figures[name]["ratio"] <= bound if op == "<=" else figures[name]["ratio"] >= bound,
            }
            for name, (op, bound) in TARGETS.items()
        }
        for precision, figures in by_precision.items()
    }


def bench_personalized(quick: bool, dataset: str | None, log, model: str | None = None) -> dict:
    from lifelora.adapters.lora import LoraAdapter, SharedLoraConfig
    from lifelora.adapters.personalized import PersonalizedAdapter

    config = PersonalizedConfig(n_loras=16, r=8)
    backbone, _ = bench_backbone(model, log)
    q_proj = backbone.model.model.layers[0].self_attn.q_proj
    d_in, d_out = q_proj.in_features, q_proj.out_features
    pairs, model_pairs = (2, 2) if quick else (7, 5)
    precisions = measured_precisions()

    shared, personalized = _layers(d_in, d_out, config)
    products = PersonalizedLinear(personalized.base_layer).add_bank(
        DEFAULT_BRANCH, config.model_copy(update={"mixing": "products"}), ROUTING_DIM
    )
    products.load_state_dict(personalized.state_dict())
    products.eval()
    batch, length = (4, 128) if quick else (16, 256)
    x, routing = torch.randn(batch, length, d_in), torch.randn(batch, ROUTING_DIM)

    step_batch, step_len = (2, 128) if quick else (4, 256)
    score_batch, score_len = (4, 128) if quick else (16, 384)
    vocab = backbone.model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab, (step_batch, step_len), generator=g)
    labels = torch.randint(100, vocab, (step_batch,), generator=g)
    step_routing = torch.randn(step_batch, ROUTING_DIM, generator=g)
    score_ids = torch.randint(100, vocab, (score_batch, score_len), generator=g)
    score_routing = torch.randn(score_batch, ROUTING_DIM, generator=g)
    bare = copy.deepcopy(backbone.model)  # both models live at once, so their steps can alternate
    lm = LoraAdapter.attach(backbone.model, SharedLoraConfig(r=config.r)).model
    mixed = PersonalizedAdapter.attach(bare, config, routing_dim=ROUTING_DIM).model

    by_precision = {}
    for precision in precisions:
        log(f"{precision}: layer {d_in}→{d_out}, N {config.n_loras}, r {config.r}, batch {batch} × {length}")
        layer = alternate(
            _forward_backward(personalized, x, routing, precision),
            _forward_backward(shared, x, routing, precision),
            pairs,
            ("personalized", "shared"),
        )
        log(f"{precision}: batched mixture vs a loop over merged per-instance weights")
        loops = {
            (mixing, shape): _versus_loop(bank_layer, shape, precision, pairs)
            for mixing, bank_layer in (("factors", personalized), ("products", products))
            for shape in (LOOP_BATCH, (batch, length))
        }
        log(
            f"{precision}: {backbone.name} training step {step_batch} × {step_len}, scoring {score_batch} × {score_len}"
        )
        step = alternate(
            _train_step(mixed.train(), ids, labels, precision, routing=step_routing),
            _train_step(lm.train(), ids, labels, precision),
            model_pairs,
            ("personalized", "shared"),
        )
        scoring = alternate(
            _scoring_forward(mixed.eval(), score_ids, precision, routing=score_routing),
            _scoring_forward(lm.eval(), score_ids, precision),
            model_pairs,
            ("personalized", "shared"),
        )
        by_precision[precision] = {
            "layer_ratio_vs_shared": layer,
            "step_ratio_vs_shared": step,
            "scoring_ratio_vs_shared": scoring,
            "speedup_vs_loop": loops["factors", LOOP_BATCH]["speedup"],
            "speedup_vs_loop_products": loops["products", LOOP_BATCH]["speedup"],
            "speedup_vs_loop_at_layer_batch": loops["factors", (batch, length)]["speedup"],
            "speedup_vs_loop_products_at_layer_batch": loops["products", (batch, length)]["speedup"],
            "loop_vs_dense_layer": loops["factors", LOOP_BATCH]["ceiling"],
            "loop_vs_dense_layer_products": loops["products", LOOP_BATCH]["ceiling"],
            "loop_max_abs_diff": max(loop["max_abs_diff"] for loop in loops.values()),
        }
    return {
        "model": backbone.name,
        "precisions": precisions,
        "n_loras": config.n_loras,
        "r": config.r,
        "mixing": config.mixing,
        "layer_shape": [d_in, d_out],
        "layer_batch": [batch, length],
        "loop_batch": list(LOOP_BATCH),
        "step_batch": [step_batch, step_len],
        "scoring_batch": [score_batch, score_len],
        **by_precision,
        **({} if native_bf16() else {"bf16": EMULATED_BF16}),
        "targets": _targets(by_precision),
        "trainable_params_personalized": sum(p.numel() for p in mixed.parameters() if p.requires_grad),
    }
