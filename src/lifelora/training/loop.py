"""The one training loop (Accelerate) the LLM adapters and the lens train through: gradient accumulation,
multi-process, bf16 autocast, per-group learning rates, hooks, checkpoints with optimizer state, and
`resume` that continues a killed run to the same result."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from lifelora.errors import LifeloraError
from lifelora.precision import autocast
from lifelora.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    trainable,
)
from lifelora.training.hooks import TrainContext, TrainHook
from lifelora.training.settings import TrainSettings
from lifelora.training.step import LossFn, TrainStep

ParamGroups = Callable[[torch.nn.Module], list[dict]]


def batch_len(batch: Any) -> int | None:
    """Samples in a micro-batch, whatever the collate's layout: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.ndim else None
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, list | tuple) else ()
    for item in items:
        found = batch_len(item)
        if found is not None:
            return found
    return None


def _param_groups(model: torch.nn.Module, param_groups: ParamGroups | None) -> list[dict]:
    known = trainable(model)
    groups = param_groups(model) if param_groups is not None else [{"params": list(known.values())}]
    groups = [{**group, "params": list(group["params"])} for group in groups]
    if not any(group["params"] for group in groups):
        raise LifeloraError("the model has no trainable parameters")
    ids = {id(p) for p in known.values()}
    if any(id(p) not in ids for group in groups for p in group["params"]):
        raise LifeloraError("param_groups: every parameter must be a trainable parameter of the model")
    return groups


def _schedule(optimizer: torch.optim.Optimizer, settings: TrainSettings, total_steps: int):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(settings.warmup_ratio * total_steps)
    if settings.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if settings.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def _set_rng(trainer: dict) -> None:
    torch.set_rng_state(trainer["rng"])
    if torch.cuda.is_available() and len(trainer["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(trainer["cuda_rng"])


@dataclass
class _Loop:
    """What one `train_model` call carries from step to step."""

    accelerator: Any
    model: torch.nn.Module  # as prepared (wrapped under several processes)
    optimizer: torch.optim.Optimizer
    loader: Any
    scheduler: Any
    step: TrainStep
    ctx: TrainContext
    settings: TrainSettings
    hooks: Sequence[TrainHook]
    run_dir: Path
    total_steps: int
    curve: list = field(default_factory=list)
    trained_s: float = 0.0  # training seconds so far (resumed runs go on from their checkpoint's)
    clock: float = 0.0  # perf_counter where `trained_s` was last brought up to date

    def tick(self) -> float:
        now = time.perf_counter()
        self.trained_s += now - self.clock
        self.clock = now
        return self.trained_s

    def out_of_time(self) -> bool:
        """`max_minutes` of training are done (every process stops at the same step)."""
        limit = self.settings.max_minutes
        if limit is None:
            return False
        over = torch.tensor(float(self.trained_s >= 60 * limit))
        if self.accelerator.num_processes > 1:
            over = self.accelerator.reduce(over.to(self.accelerator.device), "max")
        return bool(over)


def _prepare(
    model, dataset, collate, loss_fn, settings: TrainSettings, run_dir: Path, hooks, param_groups, stage
) -> _Loop:
    """Accelerate's wrapping of the model, optimizer and seeded loader; the schedule and the step."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # also what makes several CPU processes use gloo
        mixed_precision="no",  # autocast is the step's (one process may train at several precisions)
        gradient_accumulation_steps=settings.grad_accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=settings.seed),
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, shuffle=True, collate_fn=collate, generator=torch.Generator()
    )
    optimizer = torch.optim.AdamW(
        _param_groups(model, param_groups), lr=settings.lr, weight_decay=settings.weight_decay
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total_steps = math.ceil(len(loader) / settings.grad_accum) * settings.epochs
    scheduler = _schedule(optimizer, settings, total_steps)
    step = TrainStep(
        loss_fn,
        optimizer,
        hooks,
        settings.max_grad_norm,
        backward=accelerator.backward,
        clip=accelerator.clip_grad_norm_,
        forward_context=lambda: autocast(settings.precision, accelerator.device),
    )
    ctx = TrainContext(accelerator.unwrap_model(model), settings, stage)
    return _Loop(
        accelerator, model, optimizer, loader, scheduler, step, ctx, settings, hooks, run_dir, total_steps
    )


def _resume(loop: _Loop, log) -> tuple[int, int, dict | None]:
    """(epoch, batches done in it, the saved RNG state) of the latest checkpoint; the weights, optimizer,
    schedule, step and curve are restored in place. (0, 0, None) when there is none."""
    checkpoint = latest_checkpoint(loop.run_dir)
    if checkpoint is None:
        return 0, 0, None
    trainer = load_checkpoint(checkpoint, loop.ctx.model, loop.optimizer, loop.scheduler)
    loop.ctx.step, loop.curve = trainer["step"], trainer["curve"]
    loop.trained_s = loop.curve[-1].get("seconds", 0.0) if loop.curve else 0.0
    log(f"resuming from {checkpoint} (step {loop.ctx.step}/{loop.total_steps})")
    return trainer["epoch"], trainer["batches_done"], trainer


def _optimizer_step(loop: _Loop, epoch: int, done: int, running: dict, micro: int, bar) -> None:
    """After an optimizer step: the schedule, the curve's row (with the hooks' figures), a checkpoint."""
    ctx, settings = loop.ctx, loop.settings
    loop.scheduler.step()
    ctx.step += 1
    lrs = loop.scheduler.get_last_lr()
    row = {"step": ctx.step, "epoch": epoch + 1, **{k: v / micro for k, v in running.items()}}
    row["seconds"] = round(loop.tick(), 3)
    for hook in loop.hooks:
        row.update(hook.step_metrics(ctx))
    loop.curve.append({**row, "lr": lrs[0], **({"lrs": lrs} if len(lrs) > 1 else {})})
    bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)  # shown at the bar's own pace
    every = settings.checkpoint_every
    due = every and (ctx.step % every == 0 or loop.out_of_time())  # a budget's stop can be extended
    if due and ctx.step < loop.total_steps and loop.accelerator.is_main_process:
        progress = {"step": ctx.step, "epoch": epoch, "batches_done": done, "curve": loop.curve}
        save_checkpoint(
            loop.run_dir / "checkpoints" / f"step-{ctx.step}",
            ctx.model,
            loop.optimizer,
            loop.scheduler,
            progress,
        )
        prune_checkpoints(loop.run_dir, settings.keep_checkpoints)


def _train_epoch(
    loop: _Loop, epoch: int, skip: int, pending_rng: dict | None
) -> tuple[int, float, float, dict | None]:
    """One epoch from batch `skip` on; returns (samples, the sum of their losses, seconds, the resumed
    RNG state if no batch was left to restore it at)."""
    accelerator, ctx = loop.accelerator, loop.ctx
    loop.model.train()  # epoch_end hooks may have evaluated
    ctx.epoch = epoch
    loop.loader.set_epoch(epoch)  # the order depends on (seed, epoch) only: the same when resumed
    batches = accelerator.skip_first_batches(loop.loader, skip) if skip else loop.loader
    bar = tqdm(
        batches,
        total=len(loop.loader),
        initial=skip,
        desc=f"train epoch {epoch + 1}",
        unit="batch",
        disable=not accelerator.is_local_main_process,
    )
    done, samples, loss_sum, running, micro = skip, 0, 0.0, {}, 0
    started = loop.clock = time.perf_counter()
    for batch in bar:
        if pending_rng is not None:  # once the loader is running, as it was when the state was saved
            _set_rng(pending_rng)
            pending_rng = None
        ctx.batch = batch
        with accelerator.accumulate(loop.model):
            loss, terms = loop.step(loop.model, ctx, sync=accelerator.sync_gradients)
        n = batch_len(batch)
        if n is None:
            raise LifeloraError("cannot count the samples of a batch: the collate returned no tensor")
        done, samples, micro = done + 1, samples + n, micro + 1
        values = {name: value.item() for name, value in {"loss": loss, **terms}.items()}
        loss_sum += values["loss"] * n
        for name, value in values.items():
            running[name] = running.get(name, 0.0) + value
        if accelerator.sync_gradients:
            _optimizer_step(loop, epoch, done, running, micro, bar)
            running, micro = {}, 0
            if loop.out_of_time():
                break
    return samples, loss_sum, time.perf_counter() - started, pending_rng


def train_model(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable[[list], Any],
    loss_fn: LossFn,
    settings: TrainSettings,
    run_dir: Path,
    *,
    resume: bool = False,
    hooks: Sequence[TrainHook] = (),
    param_groups: ParamGroups | None = None,
    stage: str | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """Train the model's trainable parameters with AdamW; returns the (unwrapped) model, the curve (per
    optimizer step: task loss, each hook's loss term by name, learning rate(s)), steps, epochs run in this
    call and throughput (training time only, not epoch_end hooks).

    Seeding is the caller's: the loop never reseeds the global RNG, so model init and dropout draw one
    stream the caller seeded once (the LLM jobs call `accelerate.utils.set_seed(settings.seed)` right
    before this; the lens seeds before building its model). The data order depends on `settings.seed`
    and the epoch only (Accelerate's seedable sampler, a DataLoader generator of its own), so it is the
    same when resumed and draws nothing from the global RNG.

    `param_groups(model)` gives AdamW's groups (per-group learning rates; `lr`/`weight_decay` default to
    the settings'); default one group of all trainable parameters. `hooks` add loss terms, edit
    gradients and stop training (`TrainHook`); `stage` is handed to them.
    """
    loop = _prepare(model, dataset, collate, loss_fn, settings, run_dir, hooks, param_groups, stage)
    start_epoch, skip, pending_rng = _resume(loop, log) if resume else (0, 0, None)
    ctx, samples, seconds, epochs_run = loop.ctx, 0, 0.0, 0
    for epoch in range(start_epoch, settings.epochs):
        epoch_samples, loss_sum, elapsed, pending_rng = _train_epoch(loop, epoch, skip, pending_rng)
        samples, seconds, epochs_run, skip = samples + epoch_samples, seconds + elapsed, epochs_run + 1, 0
        ctx.batch, ctx.loss = None, None
        ctx.epoch_loss = loss_sum / epoch_samples if epoch_samples else None
        ctx.samples_per_s = epoch_samples / elapsed if elapsed > 0 else None
        if any([hook.epoch_end(ctx) for hook in hooks]) or loop.out_of_time():  # hooks: every epoch
            break
    loop.model.eval()
    loop.accelerator.wait_for_everyone()
    return {
        "is_main_process": loop.accelerator.is_main_process,
        "model": ctx.model,
        "steps": ctx.step,
        "epochs_run": epochs_run,
        "curve": loop.curve,
        "seconds": round(seconds, 2),
        "out_of_time": loop.out_of_time(),
        "samples_per_s": round(samples / seconds, 2) if seconds > 0 else None,
        "processes": loop.accelerator.num_processes,
    }
