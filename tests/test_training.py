"""The one training loop on a tiny model: hooks (loss terms, gradient projection, early stop), per-group
learning rates, bit-identical resume, and hooks that see the unwrapped model."""

from __future__ import annotations

import time

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lifelora.errors import LifeloraError
from lifelora.training import (
    TrainContext,
    TrainHook,
    TrainSettings,
    TrainStep,
    latest_checkpoint,
    train_model,
)

DIM = 4


class Tiny(nn.Module):
    """y = dropout(x)·a + x·b: two parameter tensors, one per param group."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.a = nn.Parameter(torch.randn(DIM))
        self.b = nn.Parameter(torch.randn(DIM))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x) @ self.a + x @ self.b


def _data(n: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, DIM, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    return list(zip(x, y, strict=True))


DATA = _data()


def collate(rows: list) -> dict:
    """Keys other than `input_ids`: the loop counts samples from any batch layout."""
    return {"x": torch.stack([r[0] for r in rows]), "y": torch.stack([r[1] for r in rows])}


def mse(model: nn.Module, batch: dict) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def zero_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return (model(batch["x"]) * 0).sum()


def _cpu(t: torch.Tensor) -> torch.Tensor:
    """Weights for comparing: the loop trains on a GPU where there is one."""
    return t.detach().cpu()


def settings(**changes) -> TrainSettings:
    base = {
        "epochs": 2,
        "batch_size": 4,
        "grad_accum": 1,
        "lr": 0.05,
        "schedule": "constant",
        "max_grad_norm": None,
        "precision": "fp32",
        "checkpoint_every": None,
        "seed": 0,
    }
    return TrainSettings(**(base | changes))


def train(run_dir, loss=mse, model=None, **kwargs) -> dict:
    options = {k: kwargs.pop(k) for k in ("resume", "hooks", "param_groups", "stage") if k in kwargs}
    return train_model(
        model or Tiny(), DATA, collate, loss, settings(**kwargs), run_dir, log=lambda _: None, **options
    )


class PullTo(TrainHook):
    """L2 toward a point, as a proximal regularizer does."""

    name = "l2"

    def __init__(self, target: torch.Tensor, strength: float = 1.0):
        self.target, self.strength = target, strength

    def loss_term(self, ctx: TrainContext) -> torch.Tensor:
        a = ctx.model.a
        return self.strength * (a - self.target.to(a.device)).square().sum()


def test_a_loss_term_hook_pulls_the_weights_to_its_point_and_is_logged_by_name(tmp_path):
    torch.manual_seed(0)
    model, target = Tiny(), torch.tensor([0.5, -1.0, 2.0, 0.0])
    start = (model.a - target).norm().item()
    result = train(tmp_path, zero_loss, model, hooks=[PullTo(target)], epochs=10, lr=0.2, schedule="linear")
    assert start > 1.0
    assert (_cpu(model.a) - target).norm().item() < 1e-2
    curve = result["curve"]
    assert curve[0]["loss"] == 0.0 and curve[-1]["l2"] < 1e-3 < curve[0]["l2"]


class ProjectOut(TrainHook):
    """Removes the gradient's component along `direction` (unit), recording the norm it found."""

    def __init__(self, direction: torch.Tensor):
        self.direction, self.norms, self.steps = direction, [], []

    def after_backward(self, ctx: TrainContext) -> None:
        grad = ctx.model.a.grad
        self.norms.append(grad.norm().item())
        self.steps.append(ctx.step)
        direction = self.direction.to(grad.device)
        grad -= (grad @ direction) * direction


def test_gradient_projection_leaves_the_projected_direction_untouched(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    before = model.a.detach().clone()
    direction = torch.tensor([1.0, 0.0, 0.0, 0.0])  # a coordinate: Adam's per-coordinate update keeps it 0
    hook = ProjectOut(direction)
    result = train(tmp_path, model=model, hooks=[hook], grad_accum=2, max_grad_norm=1e-3)
    assert torch.equal(_cpu(model.a)[0], before[0])
    assert not torch.equal(_cpu(model.a)[1:], before[1:])
    # once per optimizer step (not per micro-batch), before clipping (the norms exceed max_grad_norm)
    assert hook.steps == list(range(result["steps"])) and result["steps"] == 16
    assert min(hook.norms) > 1e-3


def test_param_groups_get_their_own_learning_rates(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    a, b = model.a.detach().clone(), model.b.detach().clone()
    result = train(
        tmp_path, model=model, param_groups=lambda m: [{"params": [m.a], "lr": 0.0}, {"params": [m.b]}]
    )
    assert torch.equal(_cpu(model.a), a)
    assert not torch.equal(_cpu(model.b), b)
    assert all(row["lrs"] == [0.0, 0.05] and row["lr"] == 0.0 for row in result["curve"])


def test_param_groups_must_hold_trainable_parameters_of_the_model(tmp_path):
    stray = nn.Parameter(torch.zeros(2))
    with pytest.raises(LifeloraError, match="trainable parameter of the model"):
        train(tmp_path, param_groups=lambda m: [{"params": [m.a, stray]}])


class StopAfter(TrainHook):
    """Evaluates (leaving eval mode) and stops after `epochs` epochs."""

    def __init__(self, epochs: int):
        self.epochs, self.seen = epochs, []

    def epoch_end(self, ctx: TrainContext) -> bool:
        ctx.model.eval()
        self.seen.append((ctx.epoch, ctx.step, ctx.stage, ctx.epoch_loss))
        return len(self.seen) >= self.epochs


def test_epoch_end_returning_true_stops_training(tmp_path):
    def loss(model, batch):
        assert model.training, "every epoch trains in train mode, whatever epoch_end left"
        return mse(model, batch)

    hook = StopAfter(2)
    result = train(tmp_path, loss, hooks=[hook], epochs=5, stage="period-1")
    assert result["epochs_run"] == 2 and result["steps"] == 32
    assert [(epoch, step, stage) for epoch, step, stage, _ in hook.seen] == [
        (0, 16, "period-1"),
        (1, 32, "period-1"),
    ]
    assert all(isinstance(loss, float) and loss > 0 for *_, loss in hook.seen)


def test_max_minutes_stops_at_the_first_optimizer_step_past_it(tmp_path):
    def slow(model, batch):
        time.sleep(0.02)
        return mse(model, batch)

    result = train(tmp_path, slow, epochs=5, max_minutes=0.1 / 60)  # 0.1 s: the 5th step is past it
    seconds = [row["seconds"] for row in result["curve"]]
    assert result["out_of_time"] and result["epochs_run"] == 1
    assert len(seconds) == result["steps"] and 4 <= result["steps"] < 16
    assert seconds == sorted(seconds) and seconds[-1] >= 0.1 > seconds[-2]
    assert not train(tmp_path / "again", epochs=1)["out_of_time"]


def test_a_budget_stop_is_checkpointed_and_a_larger_budget_goes_on_from_it(tmp_path):
    def slow(model, batch):
        time.sleep(0.02)
        return mse(model, batch)

    first = train(tmp_path, slow, epochs=2, max_minutes=0.1 / 60, checkpoint_every=1000)
    assert latest_checkpoint(tmp_path).name == f"step-{first['steps']}"
    more = train(tmp_path, slow, epochs=2, max_minutes=0.25 / 60, checkpoint_every=1000, resume=True)
    assert more["curve"][: first["steps"]] == first["curve"]  # resumed, not restarted
    assert more["steps"] > first["steps"] and more["curve"][-1]["seconds"] >= 0.25


class Killed(Exception):
    pass


class Kill(TrainHook):
    def __init__(self, after: int | None):
        self.after, self.calls = after, 0

    def loss_term(self, ctx: TrainContext) -> None:
        self.calls += 1
        if self.after is not None and self.calls > self.after:
            raise Killed


def _resumable(run_dir, resume: bool = False, kill_after: int | None = None) -> dict:
    torch.manual_seed(0)  # the caller seeds: model init and dropout share one stream
    model = Tiny(dropout=0.2)
    return train(
        run_dir,
        model=model,
        resume=resume,
        hooks=[PullTo(torch.zeros(DIM), 0.1), Kill(kill_after)],
        param_groups=lambda m: [{"params": [m.a], "lr": 0.02}, {"params": [m.b], "weight_decay": 0.1}],
        epochs=3,
        grad_accum=2,
        schedule="linear",
        warmup_ratio=0.1,
        max_grad_norm=1.0,
        checkpoint_every=3,
        seed=5,
    )


def test_resume_from_a_mid_run_checkpoint_is_bit_identical(tmp_path):
    straight = _resumable(tmp_path / "straight")
    with pytest.raises(Killed):
        _resumable(tmp_path / "killed", kill_after=20)  # micro-batch 21: epoch 2, after the step-9 checkpoint
    assert latest_checkpoint(tmp_path / "killed").name == "step-9"
    resumed = _resumable(tmp_path / "killed", resume=True)
    for name, value in straight["model"].state_dict().items():
        assert torch.equal(resumed["model"].state_dict()[name], value), name

    def untimed(curve: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in curve]

    assert untimed(resumed["curve"]) == untimed(straight["curve"])
    restored = resumed["curve"][8]["seconds"]  # the checkpoint's clock goes on after the resume
    assert all(row["seconds"] >= restored for row in resumed["curve"][9:])
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["step-18", "step-21"]


def test_hooks_get_the_unwrapped_model_when_accelerate_wraps_it(tmp_path, monkeypatch):
    from accelerate import Accelerator

    prepare_model = Accelerator.prepare_model
    monkeypatch.setattr(
        Accelerator,
        "prepare_model",
        lambda self, model, *args, **kwargs: nn.DataParallel(prepare_model(self, model, *args, **kwargs)),
    )
    model, called_with, names = Tiny(), [], []

    def loss(wrapped, batch):
        called_with.append(wrapped)
        return mse(wrapped, batch)

    class Names(TrainHook):
        def after_backward(self, ctx: TrainContext) -> None:
            assert ctx.model is model
            names.append(sorted(name for name, _ in ctx.model.named_parameters()))

    result = train(tmp_path, loss, model, hooks=[Names()], epochs=1, checkpoint_every=1)
    assert isinstance(called_with[0], nn.DataParallel)  # the forward goes through the wrapper
    assert names and all(n == ["a", "b"] for n in names)
    assert result["model"] is model
    state = load_file(str(latest_checkpoint(tmp_path) / "state.safetensors"))
    assert {"param/a", "param/b"} <= set(state)


def test_the_benchmark_step_is_the_loop_step(tmp_path):
    """The same step, plain torch: a loss-term hook and clipping apply outside the loop too."""
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    hook = PullTo(torch.zeros(DIM))
    step = TrainStep(mse, optimizer, [hook], max_grad_norm=0.5)
    ctx = TrainContext(model, settings(), batch=collate(DATA[:8]))
    before = model.a.detach().clone()
    loss, terms = step(model, ctx)
    assert ctx.loss is loss and set(terms) == {"l2"}
    assert not torch.equal(model.a, before)
    assert all(p.grad is None for p in model.parameters())  # zero_grad after the optimizer step
