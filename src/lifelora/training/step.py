"""The micro-batch step, one implementation for the loop and the benchmarks: `lifelora bench` times the
step the loop runs (hook terms, clipping and all), not a copy of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from lifelora.training.hooks import TrainContext, TrainHook

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


class TrainStep:
    """Forward (`loss_fn`) and the hooks' loss terms, backward; at a sync point (the last micro-batch of
    an optimizer step) the hooks' `after_backward`, gradient clipping, the optimizer step, zero_grad.

    `backward` and `clip` default to plain torch; the loop passes Accelerate's, which scale the loss for
    gradient accumulation and clip gradients gathered across processes. `forward_context` wraps forward
    and loss (bf16 autocast: the step's, not Accelerate's, so the benchmarks time the same thing).
    """

    def __init__(
        self,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        hooks: Sequence[TrainHook] = (),
        max_grad_norm: float | None = None,
        backward: Callable[[torch.Tensor], object] = torch.Tensor.backward,
        clip: Callable[[list[torch.Tensor], float], object] = torch.nn.utils.clip_grad_norm_,
        forward_context: Callable[[], AbstractContextManager] = nullcontext,
    ):
        self.loss_fn, self.optimizer, self.hooks = loss_fn, optimizer, list(hooks)
        self.max_grad_norm, self.backward, self.clip = max_grad_norm, backward, clip
        self.forward_context = forward_context
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def __call__(
        self, model: torch.nn.Module, ctx: TrainContext, sync: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Train on `ctx.batch` through `model` (the wrapped model, in the loop; hooks read the unwrapped
        `ctx.model`). Returns the task loss and each hook's loss term by the hook's name."""
        with self.forward_context():
            loss = self.loss_fn(model, ctx.batch)
        ctx.loss = loss
        total, terms = loss, {}
        for hook in self.hooks:
            term = hook.loss_term(ctx)
            if term is not None:
                terms[hook.name] = term
                total = total + term
        self.backward(total)
        if sync:
            for hook in self.hooks:
                hook.after_backward(ctx)
            if self.max_grad_norm is not None:
                self.clip(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        return loss, terms
