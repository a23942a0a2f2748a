"""The click-through jobs, in three steps a caller can combine: `build` attaches a fresh adapter to the
task's backbone, `fit` trains it (call it again to go on training the same adapter, as a continual
run does period after period), `evaluate` scores a fixed subset. `train_and_evaluate` (`lifelora
train`) and `evaluate_run` (`lifelora evaluate`) are the commands' jobs, writing config, metrics,
predictions and the adapter into one run directory.

Under several processes (`torchrun`), every process trains (DDP) and evaluates its share of the
batches; only the main process writes files.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from lifelora import distributed
from lifelora.adapters import Adapter, attach, load
from lifelora.errors import LifeloraError
from lifelora.io import write_json, write_parquet
from lifelora.lens import Lens
from lifelora.llm.logits import last_logits
from lifelora.metrics.ctr import ctr_metrics
from lifelora.precision import run_precisions
from lifelora.report import plot_curve
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.ctr.examples import CTRExamples
from lifelora.tasks.ctr.scoring import score_prompts
from lifelora.tasks.ctr.task import CTRTask
from lifelora.training import TrainHook, train_model


def answer_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Causal-LM cross-entropy on the answer token only (the prompt carries no loss), on fp32 logits
    projected from the final hidden state (`lifelora.llm.logits`), whatever the autocast."""
    routing = {"routing": batch["routing"]} if "routing" in batch else {}
    logits = last_logits(
        model,
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        use_cache=False,
        **routing,
    )
    return torch.nn.functional.cross_entropy(logits, batch["labels"])


def build(task: CTRTask, cfg: CTRConfig, lens: Lens | None = None) -> Adapter:
    """A fresh adapter of `cfg.adapter`'s kind on the task's backbone, initialised from `cfg.train.seed`;
    a personalized one is sized for `lens` (default: the run's lens, `cfg.lens`)."""
    if cfg.adapter is None:
        raise LifeloraError("adapter: null means zero-shot; there is no adapter to build")
    lens = lens or task.lens(cfg)
    task.before_adapter(cfg)
    torch.manual_seed(cfg.train.seed)
    return attach(task.backbone.model, cfg.adapter, lens.hidden_size if lens is not None else None)


def fit(
    task: CTRTask,
    adapter: Adapter,
    cfg: CTRConfig,
    run_dir: Path,
    resume: bool = False,
    lens: Lens | None = None,
    hooks: Sequence[TrainHook] = (),
    stage: str | None = None,
    examples: CTRExamples | None = None,
) -> dict:
    """Train the adapter's trainable branches on `examples` (default: the fixed training subset);
    returns the loop's figures (curve, steps, throughput). The adapter stays attached and trained."""
    from accelerate.utils import set_seed

    lens = lens or task.lens(cfg)
    if examples is None:
        examples = task.examples(cfg, "train", cfg.subset.train, lens)
    task.log(
        f"training a {cfg.name} adapter on {len(examples):,} {task.data.name} samples"
        f"{f' ({stage})' if stage else ''}, history {cfg.prompt.history} ({cfg.prompt.retriever})"
    )
    set_seed(cfg.train.seed)  # dropout and the data order start from the run's seed, as before the loop
    result = train_model(
        adapter.model,
        examples,
        examples.collate,
        answer_loss,
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
    task: CTRTask,
    model: torch.nn.Module,
    cfg: CTRConfig,
    out_dir: Path | None = None,
    lens: Lens | None = None,
) -> dict:
    """AUC, LogLoss, ACC and gAUC on the fixed evaluation subset; with `out_dir`, a predictions Parquet
    (written by the main process only)."""
    lens = lens or task.lens(cfg)
    examples = task.examples(cfg, cfg.eval.split, cfg.subset.eval, lens)
    model.eval()
    metrics, _ = score_examples(task, model, cfg, examples, out_dir)
    return metrics


def score_examples(
    task: CTRTask, model: torch.nn.Module, cfg: CTRConfig, examples: CTRExamples, out_dir: Path | None
) -> tuple[dict, np.ndarray]:
    """The metrics and P(yes) of every row of `examples`; with `out_dir`, a predictions Parquet."""
    start = time.perf_counter()
    prompts = examples.prompts(np.arange(len(examples)))
    scores = score_prompts(
        model,
        prompts,
        task.backbone.tokenizer.pad_token_id,
        examples.builder.answer_ids,
        batch_size=cfg.eval.batch_size,
        precision=cfg.scoring_precision,
        routing=examples.routing,
    )
    seconds = time.perf_counter() - start
    metrics = ctr_metrics(examples.labels, scores, examples.users)
    metrics["samples"] = len(examples)
    metrics["seconds"] = round(seconds, 2)
    metrics["tokens_per_s"] = round(sum(len(p) for p in prompts) / seconds, 1)
    if out_dir is not None and distributed.is_main_process():
        write_parquet(
            out_dir / f"predictions_{cfg.eval.split}.parquet",
            pl.DataFrame(
                {
                    "sample_id": examples.samples["sample_id"],
                    "user_idx": examples.samples["user_idx"],
                    "label": examples.labels.astype(np.int8),
                    "score": scores,
                }
            ),
        )
    return metrics, scores


def train_and_evaluate(task: CTRTask, cfg: CTRConfig, run_dir: Path, resume: bool = False) -> dict:
    """`lifelora train`: build, fit on the few-shot subset, save, evaluate on the fixed evaluation
    subset; the backbone is bare again afterwards. Returns the summary (on every process)."""
    adapter = build(task, cfg)
    try:
        result = fit(task, adapter, cfg, run_dir, resume=resume)
        main = distributed.is_main_process()
        if main:
            adapter.save(run_dir / "adapter")
            write_json(run_dir / "curve.json", result["curve"])
            plot_curve(
                result["curve"],
                run_dir / "curve.png",
                f"{cfg.name} on {task.data.name}",
                x="step",
                series=(("loss", "train loss (answer CE)"), ("lr", "learning rate")),
            )
        metrics = evaluate(task, adapter.model, cfg, run_dir)
    finally:
        adapter.unload()
    summary = {
        "dataset": task.data.name,
        "model": cfg.model,
        "adapter": cfg.name,
        "train_samples": result["train_samples"],
        "subset_seed": cfg.subset.seed,
        **run_precisions(cfg.train.precision, cfg.scoring_precision, task.backbone.device),
        "train": {k: v for k, v in result.items() if k not in ("curve", "is_main_process", "train_samples")},
        "metrics": {cfg.eval.split: metrics},
    }
    if main:
        write_json(run_dir / "metrics.json", summary)
    return summary


def evaluate_run(task: CTRTask, cfg: CTRConfig, run_dir: Path, adapter_dir: Path | None = None) -> dict:
    """`lifelora evaluate`: zero-shot (no adapter) or a saved adapter, on the configured subset."""
    task.before_adapter(cfg)
    adapter = load(task.backbone.model, adapter_dir) if adapter_dir is not None else None
    try:
        model = adapter.model if adapter is not None else task.backbone.model
        metrics = evaluate(task, model, cfg, run_dir)
    finally:
        if adapter is not None:
            adapter.unload()
    summary = {
        "dataset": task.data.name,
        "model": cfg.model,
        "adapter": str(adapter_dir) if adapter_dir else "zero-shot",
        **run_precisions(cfg.train.precision, cfg.scoring_precision, task.backbone.device),
        "metrics": {cfg.eval.split: metrics},
    }
    if distributed.is_main_process():
        write_json(run_dir / "metrics.json", summary)
    return summary
