"""The proximal terms PESO adds to the task loss, pulling the adapter toward its last frozen state.

`l2` is the paper's proximal step, (λ/2)·‖v − v_prev‖² summed over every regularized weight.
`frobenius` is the release's L2 ablation, another method: λ · (1/M) Σ over the M adapted modules of
‖A − A_prev‖_F + ‖B − B_prev‖_F, unsquared (its pull does not fade as the adapter nears its anchor).
`softmax_kl` is PESO's released form: λ · (1/M) Σ over the M adapted modules of KL(softmax(vec A) ‖
softmax(vec A_prev)) + the same for B (and for a personalized bank's gate), each softmax over all entries
of the flattened factor. Its pull fades with the factor's size N: near the anchor, KL ≈ (1/2N)·‖δ − δ̄‖²
(δ = v − v_prev), so on SmolLM2's factors of thousands of entries its gradient is ~1e-6 of the task's.
`softmax_kl_sized` multiplies each factor's KL by its N, a force that does not fade with the size (near
the anchor: the l2 step on the centred difference); an option, not the release's form.
Only LoRA factors are regularized, as in the release: never trainable token rows or whole trained copies
of the embedding and head.

`ProximalHook` logs, per optimizer step, the term's gradient norm beside the task loss's: the released
softmax-KL over thousands of near-uniform entries is known to give gradients near 1e-9.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from torch.nn import functional as F

from lifelora.training import TrainContext, TrainHook

Proximal = Literal["softmax_kl", "softmax_kl_sized", "l2", "frobenius"]
_MODULE = re.compile(r"\.(lora_[AB]|gate)(\.|$)")


def regularized(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights a proximal term covers: the LoRA factors (and a personalized bank's gate) only, as
    PESO's release does; never trainable token rows or whole trained copies (`modules_to_save`)."""
    return {name: p for name, p in parameters.items() if _MODULE.search(name)}


def module_of(name: str) -> str:
    """The adapted module a weight belongs to (`…q_proj.lora_A.weight` → `…q_proj`)."""
    match = _MODULE.search(name)
    return name[: match.start()] if match else name


class ProximalTerm:
    """term(live) against a fixed anchor, with the weights of one shape stacked so that a step runs a
    handful of kernels, not a few per weight (PESO's LoRA on SmolLM2 has 420 factors): the anchor side
    (stacked, and log-softmaxed for the KL) is computed once per period."""

    def __init__(self, anchor: dict[str, torch.Tensor], form: Proximal):
        self.form = form
        by_shape: dict[tuple, list[str]] = {}
        for name, value in anchor.items():
            by_shape.setdefault(tuple(value.shape), []).append(name)
        self.groups = list(by_shape.values())
        self.modules = len({module_of(name) for name in anchor})
        self.anchors = []
        for names in self.groups:
            stacked = torch.stack([anchor[n].detach().float().flatten() for n in names])
            self.anchors.append(F.log_softmax(stacked, dim=1) if form.startswith("softmax_kl") else stacked)

    def __call__(self, live: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for names, anchor in zip(self.groups, self.anchors, strict=True):
            stacked = torch.stack([live[n].float().flatten() for n in names])
            if self.form == "l2":  # ½‖v − v_prev‖²: its gradient is v − v_prev
                total = total + 0.5 * (stacked - anchor).pow(2).sum()
            elif self.form == "frobenius":  # ‖v − v_prev‖ per weight (its gradient at 0 is 0)
                total = total + torch.linalg.vector_norm(stacked - anchor, dim=1).sum()
            else:  # Σ_rows KL(softmax(row) ‖ softmax(anchor row)), one row per weight
                kl = F.kl_div(anchor, F.log_softmax(stacked, dim=1), reduction="sum", log_target=True)
                total = total + (kl * stacked.shape[1] if self.form == "softmax_kl_sized" else kl)
        return total if self.form == "l2" else total / self.modules  # the release's: a mean over modules


class ProximalHook(TrainHook):
    """λ · term(live, anchor) added to every micro-batch's loss."""

    def __init__(
        self,
        live: dict[str, torch.nn.Parameter],
        anchor: dict[str, torch.Tensor],
        form: Proximal,
        weight: float,
    ):
        missing = sorted(set(live) - set(anchor))
        if missing:
            raise ValueError(f"the anchor has no weight {missing[0]!r}")
        self.live, self.anchor, self.form, self.weight = live, anchor, form, weight
        self.term = ProximalTerm({name: anchor[name] for name in live}, form)
        self._grad: list[torch.Tensor] | None = None
        self._calls = 0
        self._figures: dict[str, float] = {}

    @property
    def name(self) -> str:
        return "proximal"

    def loss_term(self, ctx: TrainContext) -> torch.Tensor:
        params = list(self.live.values())
        term = self.weight * self.term(self.live)
        if term.requires_grad:  # its own gradient, cheap (no activations): what the logs compare
            self._grad = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            self._calls += 1
        return term

    @torch.no_grad()
    def after_backward(self, ctx: TrainContext) -> None:
        if self._grad is None:
            return
        share = self._calls / ctx.settings.grad_accum  # backward scaled each micro-batch's loss by 1/accum
        proximal_sq, task_sq = 0.0, 0.0
        for p, g in zip(self.live.values(), self._grad, strict=True):
            if g is None or p.grad is None:
                continue
            proximal_sq += float(g.float().pow(2).sum())
            task_sq += float((p.grad.float() - share * g.float()).pow(2).sum())
        proximal, task = proximal_sq**0.5, task_sq**0.5
        self._figures = {
            "proximal_grad_norm": proximal,
            "task_grad_norm": task,
            "proximal_grad_ratio": proximal / task if task > 0 else float("nan"),
        }
        self._grad, self._calls = None, 0

    def step_metrics(self, ctx: TrainContext) -> dict[str, float]:
        figures, self._figures = self._figures, {}
        return figures
