"""The proximal terms PESO adds to the task loss, pulling the adapter toward its last frozen state.

`l2` is the textbook proximal step, (λ/2)·‖v − v_prev‖² over every regularized weight. `softmax_kl` is
PESO's released form: λ · (1/M) Σ over the M adapted modules of KL(softmax(vec A) ‖ softmax(vec A_prev))
+ the same for B (and for a personalized bank's gate), each softmax over all entries of the flattened
factor. Trainable token rows are never regularized (PESO trains the embedding without a proximal term).

`ProximalHook` logs, per optimizer step, the term's gradient norm beside the task loss's: the released
softmax-KL over thousands of near-uniform entries is known to give gradients near 1e-9.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from torch.nn import functional as F

from lifelora.training import TrainContext, TrainHook

Proximal = Literal["softmax_kl", "l2"]
_MODULE = re.compile(r"\.(lora_[AB]|gate)(\.|$)")


def regularized(parameters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights a proximal term covers: every adapter weight but the trainable token rows."""
    return {name: p for name, p in parameters.items() if "token" not in name.rsplit(".", 1)[-1]}


def module_of(name: str) -> str:
    """The adapted module a weight belongs to (`…q_proj.lora_A.weight` → `…q_proj`)."""
    match = _MODULE.search(name)
    return name[: match.start()] if match else name


def l2_term(live: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """½‖v − v_prev‖² over all the weights (λ is applied by the caller); its gradient is v − v_prev."""
    return 0.5 * sum(((p.float() - anchor[name].float()) ** 2).sum() for name, p in live.items())


def softmax_kl_term(live: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """(1/M) Σ_weights KL(softmax(vec w) ‖ softmax(vec w_prev)), M = the number of adapted modules."""
    total = sum(
        F.kl_div(
            F.log_softmax(anchor[name].float().flatten(), dim=0),
            F.log_softmax(p.float().flatten(), dim=0),
            reduction="sum",
            log_target=True,
        )
        for name, p in live.items()
    )
    return total / len({module_of(name) for name in live})


TERMS = {"l2": l2_term, "softmax_kl": softmax_kl_term}


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
        self._grad: list[torch.Tensor] | None = None
        self._calls = 0
        self._figures: dict[str, float] = {}

    @property
    def name(self) -> str:
        return "proximal"

    def loss_term(self, ctx: TrainContext) -> torch.Tensor:
        params = list(self.live.values())
        term = self.weight * TERMS[self.form](self.live, self.anchor)
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
