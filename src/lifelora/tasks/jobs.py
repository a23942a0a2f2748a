"""The jobs of any task, in three steps a caller can combine: `build` attaches a fresh adapter to the
task's backbone, `fit` trains it (call it again to go on training the same adapter, as a continual run
does period after period), `evaluate` measures a fixed subset. `train_and_evaluate` (`lifelora train`)
and `evaluate_run` (`lifelora evaluate`) are the commands' jobs, writing config, metrics, predictions
and the adapter into one run directory.

Under several processes (`torchrun`), every process trains (DDP) and evaluates its share; only the main
process writes files.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from lifelora import distributed
from lifelora.adapters import Adapter, attach, load
from lifelora.errors import LifeloraError
from lifelora.io import write_json
from lifelora.precision import run_precisions
from lifelora.report import plot_curve
from lifelora.tasks.base import Task
from lifelora.training import TrainHook, train_model


def build(task: Task, cfg: Any, lens: Any | None = None) -> Adapter:
    """A fresh adapter of `cfg.adapter`'s kind on the task's backbone, initialised from `cfg.train.seed`;
    a routed one is sized for `lens` (default: the run's lens, `cfg.lens`)."""
    if cfg.adapter is None:
        raise LifeloraError(f"adapter: null ({cfg.name}) has no adapter to build")
    lens = lens or task.lens(cfg)
    task.before_adapter(cfg)
    torch.manual_seed(cfg.train.seed)
    return attach(
        task.backbone.model, task.adapter_config(cfg), lens.hidden_size if lens is not None else None
    )


def fit(
    task: Task,
    adapter: Adapter,
    cfg: Any,
    run_dir: Path,
    resume: bool = False,
    lens: Any | None = None,
    hooks: Sequence[TrainHook] = (),
    stage: str | None = None,
    examples: Any | None = None,
) -> dict:
    """Train the adapter's trainable branches on `examples` (default: the fixed training subset); returns
    the loop's figures (curve, steps, throughput). The adapter stays attached and trained."""
    from accelerate.utils import set_seed

    if examples is None:
        examples = task.examples(cfg, "train", cfg.subset.train, lens or task.lens(cfg))
    task.log(
        f"training a {cfg.name} adapter on {task.amount(examples)}"
        f"{f' ({stage})' if stage else ''}{task.describe(cfg)}"
    )
    set_seed(cfg.train.seed)  # dropout and the data order start from the run's seed, as before the loop
    result = train_model(
        adapter.model,
        examples,
        examples.collate,
        task.loss(cfg),
        cfg.train,
        run_dir,
        resume=resume,
        hooks=hooks,
        stage=stage,
        log=task.log,
    )
    result.pop("model", None)
    return {**result, "train_samples": len(examples)}


def evaluate(
    task: Task, model: torch.nn.Module, cfg: Any, out_dir: Path | None = None, lens: Any | None = None
) -> dict:
    """The task's metrics on the fixed evaluation subset; with `out_dir`, its predictions written there
    (by the main process only)."""
    examples = task.examples(cfg, cfg.eval.split, cfg.subset.eval, lens or task.lens(cfg))
    model.eval()
    metrics, _ = task.evaluate_examples(model, cfg, examples, out_dir, cfg.eval.split)
    return metrics


def evaluated(task: Task, adapter: Adapter | None):
    """The context a trained adapter is evaluated in: merged into the base where the task decodes long."""
    return adapter.merged() if adapter is not None and task.evaluate_merged else nullcontext()


def _summary(task: Task, cfg: Any, adapter: str, metrics: dict, **extra) -> dict:
    return {
        "task": task.name,
        "dataset": task.data.name,
        "model": cfg.model,
        "adapter": adapter,
        **task.run_summary(cfg),
        **run_precisions(cfg.train.precision, cfg.scoring_precision, task.backbone.device),
        **extra,
        "metrics": {cfg.eval.split: metrics},
    }


def _title(task: Task, cfg: Any) -> str:
    return " ".join(part for part in (cfg.name, task.label, "on", task.data.name) if part)


def train_and_evaluate(task: Task, cfg: Any, run_dir: Path, resume: bool = False) -> dict:
    """`lifelora train`: build, fit on the training subset, save, evaluate on the fixed evaluation
    subset; the backbone is bare again afterwards. Returns the summary (on every process)."""
    adapter = build(task, cfg)
    main = distributed.is_main_process()
    try:
        result = fit(task, adapter, cfg, run_dir, resume=resume)
        if main:
            adapter.save(run_dir / "adapter")
            task.save_run(run_dir)
            write_json(run_dir / "curve.json", result["curve"])
            plot_curve(
                result["curve"],
                run_dir / "curve.png",
                _title(task, cfg),
                x="step",
                series=(("loss", f"train loss ({task.loss_name})"), ("lr", "learning rate")),
            )
        with evaluated(task, adapter):
            metrics = evaluate(task, adapter.model, cfg, run_dir)
    finally:
        adapter.unload()
    train = {k: v for k, v in result.items() if k not in ("curve", "is_main_process", "train_samples")}
    summary = _summary(
        task,
        cfg,
        cfg.name,
        metrics,
        train_samples=result["train_samples"],
        subset_seed=cfg.subset.seed,
        train=train,
    )
    if main:
        write_json(run_dir / "metrics.json", summary)
    return summary


def evaluate_run(task: Task, cfg: Any, run_dir: Path, adapter_dir: Path | None = None) -> dict:
    """`lifelora evaluate`: the bare backbone (no adapter) or a saved adapter, on the configured subset."""
    task.before_adapter(cfg)
    adapter = load(task.backbone.model, adapter_dir) if adapter_dir is not None else None
    try:
        with evaluated(task, adapter):
            model = adapter.model if adapter is not None else task.backbone.model
            metrics = evaluate(task, model, cfg, run_dir)
    finally:
        if adapter is not None:
            adapter.unload()
    summary = _summary(task, cfg, str(adapter_dir) if adapter_dir else cfg.name, metrics)
    if distributed.is_main_process():
        task.save_run(run_dir)
        write_json(run_dir / "metrics.json", summary)
    return summary
