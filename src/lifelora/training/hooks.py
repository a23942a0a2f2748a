"""Hooks: how a strategy changes training without its own loop (a regularizer's loss term, a gradient
projection, validation with early stopping). Each method is a no-op until a subclass overrides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lifelora.training.settings import TrainSettings


@dataclass
class TrainContext:
    """What a hook sees. `model` is the unwrapped model (`accelerator.unwrap_model`): parameter names
    are the model's own, never `module.`-prefixed, however many processes train."""

    model: torch.nn.Module
    settings: TrainSettings
    stage: str | None = None  # a label the caller passes (e.g. the task of a continual stage)
    epoch: int = 0  # 0-based
    step: int = 0  # optimizer steps done so far
    batch: Any = None  # the current micro-batch
    loss: torch.Tensor | None = None  # the task loss of the current micro-batch
    epoch_loss: float | None = None  # at epoch_end: the epoch's task loss, averaged over samples
    samples_per_s: float | None = None  # at epoch_end: the epoch's training throughput (this process)


class TrainHook:
    """Subclass and override what you need; `name` labels the hook's loss term in the curve."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def loss_term(self, ctx: TrainContext) -> torch.Tensor | None:
        """A term added to the task loss of every micro-batch (None: nothing)."""
        return None

    def after_backward(self, ctx: TrainContext) -> None:
        """Once per optimizer step, when gradients are complete (synchronized across processes), before
        clipping and the optimizer step: the place to project or mask gradients."""

    def step_metrics(self, ctx: TrainContext) -> dict[str, float]:
        """Figures for the curve's row of the optimizer step just taken (e.g. a regularizer's gradient
        norm), keyed by name."""
        return {}

    def epoch_end(self, ctx: TrainContext) -> bool:
        """After every epoch, on every process; True stops training (the decision must agree across
        processes). The model may be left in eval mode: the loop sets train mode each epoch."""
        return False
