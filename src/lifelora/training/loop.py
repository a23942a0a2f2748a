"""The one training loop (Accelerate): mixed precision, gradient accumulation, multi-process,
checkpoints with optimizer state, and `resume` that continues a killed run to the same result.

Every adapter kind and, later, every continual strategy trains through `train_loop`: the caller gives
the model, a dataset, a collate function and a `loss_fn(model, batch)`; extra loss terms (a proximal
regularizer) come in as `loss_hooks`. Checkpoints hold only trainable weights, in safetensors, with the
optimizer state split into safetensors (tensors) and JSON (scalars): no pickle.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, read_json, write_json
from lifelora.precision import resolve


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(8, ge=1, description="per process, per micro-batch")
    grad_accum: int = Field(4, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    precision: str = Field(
        "auto", description="auto (bf16 where native), bf16 or fp32", pattern="^(auto|fp32|bf16)$"
    )
    checkpoint_every: int = Field(100, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 42


LossFn = Callable[[torch.nn.Module, dict], torch.Tensor]


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(directory: Path, model, optimizer, scheduler, progress: dict) -> None:
    """Trainable weights, optimizer moments, schedule and RNG state, atomically."""
    names = {id(p): name for name, p in _trainable(model).items()}
    tensors = {f"param/{name}": p.detach().cpu().contiguous() for name, p in _trainable(model).items()}
    state = optimizer.state_dict()
    params_in_order = [p for group in optimizer.param_groups for p in group["params"]]
    for index, slots in state["state"].items():
        name = names[id(params_in_order[index])]
        for slot, value in slots.items():
            tensors[f"optim/{name}/{slot}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        write_json(
            tmp / "trainer.json",
            {
                **progress,
                "param_groups": [
                    {k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]
                ],
                "scheduler": scheduler.state_dict(),
            },
        )


def load_checkpoint(directory: Path, model, optimizer, scheduler) -> dict:
    tensors = load_file(str(directory / "state.safetensors"))
    trainer = read_json(directory / "trainer.json")
    params = _trainable(model)
    missing = [n for n in params if f"param/{n}" not in tensors]
    if missing:
        raise LifeloraError(f"{directory}: checkpoint lacks {missing[0]} (a different model or adapter)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param/{name}"])
    order = [p for group in optimizer.param_groups for p in group["params"]]
    names = {id(p): n for n, p in params.items()}
    state = {}
    for index, p in enumerate(order):
        prefix = f"optim/{names[id(p)]}/"
        slots = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if slots:
            state[index] = slots
    groups = [
        {**g, "params": og["params"]}
        for g, og in zip(trainer["param_groups"], optimizer.state_dict()["param_groups"], strict=True)
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(trainer["scheduler"])
    return {**trainer, "rng": tensors["rng/torch"]}


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def _prune(run_dir: Path, keep: int) -> None:
    found = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def train_loop(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable[[list], dict],
    loss_fn: LossFn,
    settings: TrainSettings,
    run_dir: Path,
    resume: bool = False,
    loss_hooks: Sequence[LossFn] = (),
    log=print,
) -> dict:
    """Train the model's trainable parameters; returns loss curve and throughput figures."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from transformers import get_linear_schedule_with_warmup

    device = "cuda" if torch.cuda.is_available() else "cpu"
    accelerator = Accelerator(
        cpu=device == "cpu",  # also what makes several CPU processes (torchrun, accelerate launch) use gloo
        mixed_precision="bf16" if resolve(settings.precision, device) == "bf16" else "no",
        gradient_accumulation_steps=settings.grad_accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=settings.seed),
    )
    set_seed(settings.seed)
    # its own generator: making batches never draws from the global RNG (dropout's), so a resumed
    # run's RNG stream matches the uninterrupted one
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, shuffle=True, collate_fn=collate, generator=torch.Generator()
    )
    params = list(_trainable(model).values())
    if not params:
        raise LifeloraError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / settings.grad_accum)
    total_steps = steps_per_epoch * settings.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(settings.warmup_ratio * total_steps), total_steps
    )

    step, start_epoch, skip, curve, pending_rng = 0, 0, 0, [], None
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        trainer = load_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler)
        step, start_epoch, skip, curve = (
            trainer["step"],
            trainer["epoch"],
            trainer["batches_done"],
            trainer["curve"],
        )
        pending_rng = trainer["rng"]
        log(f"resuming from {checkpoint} (step {step}/{total_steps})")

    model.train()
    samples, started = 0, time.perf_counter()
    running, micro = 0.0, 0
    for epoch in range(start_epoch, settings.epochs):
        loader.set_epoch(epoch)  # the order depends on (seed, epoch) only: the same when resumed
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        bar = tqdm(
            batches,
            total=len(loader),
            initial=skip,
            desc=f"train epoch {epoch + 1}",
            unit="batch",
            disable=not accelerator.is_local_main_process,
        )
        done = skip
        for batch in bar:
            if pending_rng is not None:  # once the loader is running, as it was when the state was saved
                torch.set_rng_state(pending_rng)
                pending_rng = None
            with accelerator.accumulate(model):
                loss = loss_fn(model, batch)
                for hook in loss_hooks:
                    loss = loss + hook(model, batch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            done += 1
            samples += len(batch["input_ids"])
            running, micro = running + loss.item(), micro + 1
            if accelerator.sync_gradients:
                scheduler.step()
                step += 1
                curve.append({"step": step, "loss": running / micro, "lr": scheduler.get_last_lr()[0]})
                bar.set_postfix(loss=f"{running / micro:.4f}")
                running, micro = 0.0, 0
                if (
                    step % settings.checkpoint_every == 0
                    and step < total_steps
                    and accelerator.is_main_process
                ):
                    progress = {"step": step, "epoch": epoch, "batches_done": done, "curve": curve}
                    save_checkpoint(
                        run_dir / "checkpoints" / f"step-{step}",
                        accelerator.unwrap_model(model),
                        optimizer,
                        scheduler,
                        progress,
                    )
                    _prune(run_dir, settings.keep_checkpoints)
        skip = 0
    seconds = time.perf_counter() - started
    model.eval()
    accelerator.wait_for_everyone()
    return {
        "is_main_process": accelerator.is_main_process,
        "model": accelerator.unwrap_model(model),
        "steps": step,
        "curve": curve,
        "seconds": round(seconds, 2),
        "samples_per_s": round(samples / seconds, 2) if seconds > 0 else None,
        "processes": accelerator.num_processes,
    }
