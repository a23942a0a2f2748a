"""`lifelora experiment reclora`: RecLoRA against its baselines and ablations on one fixed evaluation
subset, each variant a run directory of its own, collected into a Markdown table and a bar chart.

Rows: the lens alone (on the same rows; other lenses such as SIM too), zero-shot, shared LoRA,
RecLoRA, and RecLoRA without retrieval (recent-K text history), without lens routing (uniform w),
with other N and T, and RecLoRA / shared LoRA over a sweep of training-subset sizes. Finished
variants are skipped and interrupted ones resume from their checkpoints, so a long experiment can be
restarted at will.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lifelora.adapters import is_routed
from lifelora.adapters.lora import SharedLoraConfig
from lifelora.errors import LifeloraError
from lifelora.io import read_json, write_json
from lifelora.lens import DINLens
from lifelora.metrics.ctr import ctr_metrics
from lifelora.report import CTR_COLUMNS, markdown_table, plot_bars
from lifelora.run import record_run, run_status
from lifelora.tasks.ctr.config import CTRConfig
from lifelora.tasks.ctr.task import CTRTask
from lifelora.tasks.jobs import evaluate_run, train_and_evaluate
from lifelora.tasks.subsets import subset_rows


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def reclora_variants(
    cfg: CTRConfig, n_values: list[int], temperatures: list[float], sizes: list[int]
) -> list[tuple[str, CTRConfig]]:
    """(row name, config) for every LLM row, derived from one personalized-adapter config."""
    adapter = cfg.adapter
    shared = SharedLoraConfig(
        r=adapter.r,
        lora_alpha=adapter.lora_alpha,
        lora_dropout=adapter.lora_dropout,
        target_modules=adapter.target_modules,
    )

    def changed(adapter_changes: dict | None = None, **changes) -> CTRConfig:
        update = dict(changes)
        if adapter_changes:
            update["adapter"] = adapter.model_copy(update=adapter_changes)
        return cfg.model_copy(update=update)

    main = f"N={adapter.n_loras}, T={adapter.temperature:g}"
    n = cfg.subset.train
    rows = [
        ("zero-shot", changed(adapter=None)),
        (f"shared LoRA ({n} samples)", changed(adapter=shared)),
        (f"RecLoRA {main} ({n} samples)", cfg),
        (
            f"RecLoRA {main}, recent-K text history",
            changed(prompt=cfg.prompt.model_copy(update={"retriever": "recent"})),
        ),
        (f"RecLoRA {main}, uniform routing (no lens)", changed({"routing": "uniform"})),
    ]
    rows += [
        (f"RecLoRA N={k}, T={adapter.temperature:g}", changed({"n_loras": k}))
        for k in n_values
        if k != adapter.n_loras
    ]
    rows += [
        (f"RecLoRA N={adapter.n_loras}, T={t:g}", changed({"temperature": t}))
        for t in temperatures
        if t != adapter.temperature
    ]
    for size in sizes:
        if size != n:
            subset = cfg.subset.model_copy(update={"train": size})
            rows.append((f"shared LoRA ({size} samples)", changed(adapter=shared, subset=subset)))
            rows.append((f"RecLoRA {main} ({size} samples)", changed(subset=subset)))
    return rows


def _lens_row(task: CTRTask, cfg: CTRConfig, lens_dir: Path) -> dict:
    """The lens alone, on exactly the rows the LLM variants are evaluated on."""
    lens = DINLens.load(lens_dir)
    split = cfg.eval.split
    rows = subset_rows(task.data.split(split).height, cfg.subset.eval, cfg.subset.seed)
    encoded = lens.encode(task.data, split, rows=rows)
    metrics = ctr_metrics(encoded.labels, lens.predict(encoded), encoded.user_idx)
    return {"samples": len(rows), **metrics}


def run_reclora_experiment(
    task: CTRTask,
    cfg: CTRConfig,
    out_dir: Path,
    command: str,
    n_values: list[int],
    temperatures: list[float],
    sizes: list[int],
    only: list[str] | None = None,
    other_lenses: Sequence[Path] = (),
    log=print,
) -> list[tuple[str, dict]]:
    """Every variant of `cfg` (a personalized-adapter config) on the task's data and backbone."""
    if cfg.adapter is None or not is_routed(cfg.adapter):
        raise LifeloraError("experiment reclora needs a personalized-adapter config (adapter.kind)")
    variants = reclora_variants(cfg, n_values, temperatures, sizes)
    if only:
        unknown = [o for o in only if not any(o in name for name, _ in variants)]
        if unknown:
            raise LifeloraError(f"--only: {unknown[0]!r} matches no variant")
        variants = [(name, c) for name, c in variants if any(o in name for o in only)]
    lens_dirs = [Path(cfg.lens), *other_lenses]
    names = [f"lens alone ({d.name})" for d in lens_dirs]
    if len(set(names)) < len(names):
        raise LifeloraError(f"--also-lens: two lens run directories share a name ({', '.join(names)})")
    rows = [(name, _lens_row(task, cfg, d)) for name, d in zip(names, lens_dirs, strict=True)]
    for name, variant in variants:
        run_dir = out_dir / _slug(name)
        metrics_file = run_dir / "metrics.json"
        if not metrics_file.is_file():
            log(f"— {name}")
            resume = (run_dir / "checkpoints").is_dir()
            run_dir.mkdir(parents=True, exist_ok=True)
            record_run(run_dir, variant, command)
            with run_status(run_dir):
                if variant.adapter is None:
                    evaluate_run(task, variant, run_dir)
                else:
                    train_and_evaluate(task, variant, run_dir, resume=resume)
        rows.append((name, read_json(metrics_file)["metrics"][cfg.eval.split]))
    title = f"RecLoRA on {cfg.dataset} ({cfg.model}, {cfg.eval.split} subset of {rows[0][1]['samples']:,})"
    (out_dir / "results.md").write_text(f"## {title}\n\n{markdown_table(rows, CTR_COLUMNS)}\n")
    write_json(out_dir / "results.json", dict(rows))
    plot_bars(rows, out_dir / "results.png", title)
    return rows
