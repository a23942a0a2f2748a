"""Validation during training: the mean loss over a dataset, and a hook that keeps the epoch with the
lowest validation loss (PESO picks each period's best epoch this way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lifelora.precision import autocast
from lifelora.training.hooks import TrainContext, TrainHook
from lifelora.training.step import LossFn


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable[[list], Any],
    loss_fn: LossFn,
    batch_size: int,
    precision: str = "auto",
) -> float:
    """The loss averaged over every sample of `dataset` (batches weighted by their size), in eval mode."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        with autocast(precision, next(model.parameters()).device):
            loss = loss_fn(model, collate(items))
        total, count = total + float(loss) * len(items), count + len(items)
    return total / count


class BestEpoch(TrainHook):
    """At each epoch's end, the validation loss; the trainable weights of the best epoch so far are kept,
    and `restore()` puts them back once training is over."""

    def __init__(self, valid_loss: Callable[[torch.nn.Module], float], log: Callable[[str], object] = print):
        self.valid_loss, self.log = valid_loss, log
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.losses: list[float] = []
        self._weights: dict[str, torch.Tensor] = {}
        self._model: torch.nn.Module | None = None

    def epoch_end(self, ctx: TrainContext) -> bool:
        loss = self.valid_loss(ctx.model)
        self.losses.append(loss)
        if self.best is None or loss < self.best:
            self.best, self.best_epoch, self._model = loss, ctx.epoch + 1, ctx.model
            self._weights = {
                name: p.detach().clone() for name, p in ctx.model.named_parameters() if p.requires_grad
            }
        self.log(f"epoch {ctx.epoch + 1}: validation loss {loss:.4f} (best: epoch {self.best_epoch})")
        return False

    @torch.no_grad()
    def restore(self) -> None:
        if self._model is None:
            return
        parameters = dict(self._model.named_parameters())
        for name, value in self._weights.items():
            parameters[name].copy_(value)
