"""Mid-run checkpoints without pickle: trainable weights, optimizer moments and RNG states in safetensors,
the optimizer's param-group settings, the schedule and the progress in JSON.

Optimizer state is keyed by parameter name, not by position, so a checkpoint reloads into an optimizer
built the same way (any number of param groups) even where the groups' parameter order differs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lifelora.errors import LifeloraError
from lifelora.io import atomic_dir, read_json, write_json


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _optimizer_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the optimizer's state order (groups concatenated)."""
    names = {id(p): name for name, p in trainable(model).items()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, progress: dict
) -> None:
    """Trainable weights, optimizer moments, schedule and RNG state, atomically."""
    tensors = {f"param/{name}": p.detach().cpu().contiguous() for name, p in trainable(model).items()}
    state = optimizer.state_dict()
    names = _optimizer_names(model, optimizer)
    for index, slots in state["state"].items():
        for slot, value in slots.items():
            tensors[f"optim/{names[index]}/{slot}"] = torch.as_tensor(value).cpu().contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
        for device, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{device}"] = rng
    groups = [{k: v for k, v in g.items() if k != "params"} for g in state["param_groups"]]
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        write_json(
            tmp / "trainer.json", {**progress, "param_groups": groups, "scheduler": scheduler.state_dict()}
        )


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> dict:
    """Restore weights, optimizer and schedule; returns the progress with the RNG states to set later
    (`rng`, `cuda_rng`): the caller sets them once its data loader runs, as when they were saved."""
    tensors = load_file(str(directory / "state.safetensors"))
    trainer = read_json(directory / "trainer.json")
    params = trainable(model)
    missing = [n for n in params if f"param/{n}" not in tensors]
    if missing:
        raise LifeloraError(f"{directory}: checkpoint lacks {missing[0]} (a different model or adapter)")
    if len(trainer["param_groups"]) != len(optimizer.param_groups):
        raise LifeloraError(
            f"{directory}: checkpoint has {len(trainer['param_groups'])} optimizer param groups, "
            f"the run {len(optimizer.param_groups)}"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param/{name}"])
    state = {}
    for index, name in enumerate(_optimizer_names(model, optimizer)):
        prefix = f"optim/{name}/"
        slots = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if slots:
            state[index] = slots
    groups = [
        {**g, "params": og["params"]}
        for g, og in zip(trainer["param_groups"], optimizer.state_dict()["param_groups"], strict=True)
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(trainer["scheduler"])
    cuda = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    return {**trainer, "rng": tensors["rng/torch"], "cuda_rng": [tensors[k] for k in cuda]}


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = _checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the `keep` most recent checkpoints."""
    for old in _checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
