"""Trained run directories on tiny random models, for the serving tests."""

from __future__ import annotations

from pathlib import Path

import torch

from lifelora.adapters import load
from lifelora.run import record_run
from lifelora.tasks.jobs import train_and_evaluate
from lifelora.tasks.registry import config_class
from lifelora.tasks.runs import open_task


def trained_run(task: str, model_dir: Path, data_dir: Path, run_dir: Path, **sections) -> Path:
    """A `lifelora train` run directory (config, adapter, metrics) of `task` on a tiny model."""
    tree = {
        "task": task,
        "dataset": "ml-synthetic",
        "data_dir": str(data_dir),
        "model": str(model_dir),
        "subset": {"train": 16, "eval": 12, "seed": 1},
        "train": {
            "batch_size": 8,
            "grad_accum": 1,
            "lr": 2e-2,
            "checkpoint_every": None,
            "precision": "fp32",
        },
    }
    if task == "next-item":
        tree["semantic_ids"] = {"levels": 2, "codebook_size": 4, "pca_dim": 16}
        tree["adapter"] = {"kind": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
        tree["prompt"] = {"history": 5}
        tree["eval"] = {"batch_size": 6, "beams": 10}
    else:
        tree["prompt"] = {"history": 4, "pca_dim": 8}
    for key, value in sections.items():
        tree[key] = {**tree.get(key, {}), **value} if isinstance(value, dict) else value
    cfg = config_class(task).model_validate(tree)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_run(run_dir, cfg, "test")
    train_and_evaluate(open_task(task, cfg, lambda _m: None), cfg, run_dir)
    return run_dir


def tiny_runs(root: Path, tasks: tuple[str, ...] = ("next-item",)) -> dict[str, Path]:
    """Trained runs of `tasks` on one synthetic dataset and one tiny model under `root` (and "data":
    the prepared data's directory)."""
    from synthetic import synthetic_prepared
    from tiny_llm import save_tiny

    data_dir = root / "prepared"
    synthetic_prepared(data_dir, name="ml-synthetic")
    model_dir = save_tiny(root / "tiny")
    return {"data": data_dir, **{task: trained_run(task, model_dir, data_dir, root / task) for task in tasks}}


def perturbed_adapter(run_dir: Path, out: Path, scale: float = 3.0, seed: int = 7) -> Path:
    """The run's adapter with every LoRA B factor moved (another version, visibly different answers)."""
    from lifelora.tasks.runs import task_in, trained_config

    name = task_in(run_dir / "config.yaml")
    cfg = trained_config(name, run_dir)
    task = open_task(name, cfg, lambda _m: None, run_dir)
    task.before_adapter(cfg)
    adapter = load(task.backbone.model, run_dir / "adapter", trainable=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name_, p in adapter.branch_parameters().items():
            if "lora_B" in name_:
                p.add_(scale * torch.randn(p.shape, generator=generator))
    adapter.save(out)
    adapter.unload()
    return out
