"""The task commands, one implementation for every task: `train`, `evaluate`, `recommend`. Which task a
command runs is `--task`, else the run's or the config file's `task:`, else click-through."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from lifelora.cli.common import App, log, print_metrics, run_directory
from lifelora.errors import LifeloraError

app = App()
TASK_HELP = "ctr or next-item (default: the config's or run's task, else ctr)"


def task_of(option: str | None, config: Path | None = None, run: Path | None = None) -> str:
    """The task a command runs: `--task`, else the run's or the config file's `task`, else ctr."""
    from lifelora.config import config_path
    from lifelora.tasks.registry import task_class
    from lifelora.tasks.runs import task_in

    if option is not None:
        task_class(option, "--task")
        return option
    return task_in(run / "config.yaml" if run is not None else config_path(config) if config else None)


def _open(name: str, cfg, run: Path | None = None):
    """The task for a run config; with `run`, what that trained run saved beside its adapter."""
    from lifelora.tasks.runs import open_task

    return open_task(name, cfg, log, run)


def _config(name: str, config: Path | None, overrides: list[str], base: dict | None = None):
    from lifelora.config import load_config
    from lifelora.tasks.registry import config_class

    return load_config(config_class(name), config, overrides, base=base)


def _run_name(name: str, cfg) -> str:
    from lifelora.tasks.registry import task_class

    label = task_class(name).label
    return "-".join(part for part in (cfg.dataset, label, cfg.name) if part)


def _print(name: str, who: str, cfg, summary: dict, out: Path) -> None:
    from lifelora.distributed import is_main_process
    from lifelora.tasks.registry import task_class

    task = task_class(name)
    split = cfg.eval.split
    title = " ".join(part for part in (who, task.label, "on", cfg.dataset) if part)
    print_metrics(title, split, summary["metrics"][split], task.columns)
    if is_main_process():
        typer.echo(str(out))


@app.command("train")
def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (see configs/llm/)"),
    adapter: str | None = typer.Option(
        None, help="adapter kind: lora or personalized (overrides adapter.kind)"
    ),
    lens: Path | None = typer.Option(
        None, help="lens run directory routing a personalized adapter (overrides lens)"
    ),
    run_dir: Path | None = typer.Option(None, help="where to write the run (default: runs/train-...)"),
    resume: Path | None = typer.Option(
        None, help="continue a killed run from its latest checkpoint (its run directory)"
    ),
    overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides (e.g. subset.train=10000)"),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
) -> None:
    """Train an LLM adapter (click-through or next-item) on a fixed subset, then evaluate it; writes a
    run directory."""
    from lifelora.io import read_yaml
    from lifelora.run import run_status
    from lifelora.tasks.jobs import train_and_evaluate
    from lifelora.tasks.registry import DEFAULT_TASK

    name = task_of(task, config, resume)
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise LifeloraError(f"--resume {resume}: not a run directory (no config.yaml)")
        cfg = _config(name, None, [], read_yaml(resume / "config.yaml"))
        run_dir = resume
    else:
        extra = [f"adapter.kind={adapter}"] if adapter else []
        extra += [f"lens={lens}"] if lens else []
        cfg = _config(name, config, [*(overrides or []), *extra])
        if cfg.adapter is None:
            where = "" if name == DEFAULT_TASK else f" --task {name}"
            raise LifeloraError(f"adapter: null means {cfg.name}; use `lifelora evaluate{where}` for that")
        run_dir = run_directory(run_dir, "train", cfg, _run_name(name, cfg))
    with run_status(run_dir):
        summary = train_and_evaluate(_open(name, cfg), cfg, run_dir, resume=resume is not None)
    _print(name, cfg.name, cfg, summary, run_dir)


@app.command("evaluate")
def evaluate(
    run: Path | None = typer.Option(
        None,
        "--run",
        "--trained-run",
        help="a `lifelora train` run directory (its adapter is used); under torchrun write --trained-run, "
        "since torchrun's own parser takes --run for its --run-path",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML config; without --run: the untrained backbone (zero-shot)"
    ),
    run_dir: Path | None = typer.Option(
        None, help="where to write (default: RUN/eval-SPLIT or runs/eval-...)"
    ),
    overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides (e.g. subset.eval=null)"),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
    decoding: str | None = typer.Option(
        None, help="next-item: beam (trie-constrained beam search) or exact (every item's code scored)"
    ),
) -> None:
    """Score the eval split (subset) with a trained adapter, or with the bare backbone (zero-shot)."""
    from lifelora.run import run_status
    from lifelora.tasks.jobs import evaluate_run
    from lifelora.tasks.registry import task_class, task_names
    from lifelora.tasks.runs import trained_config

    name = task_of(task, config, run)
    overrides = list(overrides or [])
    for flag, value in {"decoding": decoding}.items():
        if value is None:
            continue
        key = task_class(name).options.get(flag)
        if key is None:
            having = [t for t in task_names() if flag in task_class(t).options]
            raise LifeloraError(f"--{flag}: only for --task {' or '.join(having)}")
        overrides.append(f"{key}={value}")
    if run is not None:
        cfg = trained_config(name, run, overrides)
        out = run_directory(run_dir or run / f"eval-{cfg.eval.split}", "eval", cfg, _run_name(name, cfg))
    else:
        cfg = _config(name, config, overrides, {"adapter": None})
        out = run_directory(run_dir, "eval", cfg, _run_name(name, cfg))
    with run_status(out):
        task_ = _open(name, cfg, run)
        summary = evaluate_run(task_, cfg, out, adapter_dir=run / "adapter" if run else None)
    _print(name, cfg.name, cfg, summary, out)


@app.command("recommend")
def recommend(
    user: str = typer.Argument(..., help="the user's id as in the raw data (e.g. 1)"),
    run: Path | None = typer.Option(None, help="a `lifelora train` run (default: zero-shot backbone)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config when no --run is given"),
    k: int = typer.Option(10, min=1, help="how many to return"),
    candidates: int = typer.Option(
        100, min=1, help="click-through: random items the user has not rated, to rank"
    ),
    items: str | None = typer.Option(
        None, help="click-through: comma-separated raw item ids to rank instead"
    ),
    seed: int = typer.Option(0, help="click-through: seed of the random candidates"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
    task: str | None = typer.Option(None, "--task", help=TASK_HELP),
) -> None:
    """Recommend items for one user: click-through ranks candidates (the shared prompt prefix computed
    once for all of them); next-item generates the top-K codes over the whole catalogue."""
    from lifelora.adapters import load
    from lifelora.report import make_console
    from lifelora.tasks.runs import trained_config

    name = task_of(task, config, run)
    cfg = trained_config(name, run) if run else _config(name, config, [], {"adapter": None})
    task_ = _open(name, cfg, run)
    model = load(task_.backbone.model, run / "adapter").model if run else task_.backbone.model
    options = {"candidates": candidates, "items": items, "seed": seed}
    top = task_.recommend(model, cfg, user, k, options)
    if as_json:
        for record in top.table.iter_rows(named=True):
            typer.echo(json.dumps(record))
        return
    table = Table(title=top.title)
    for column in ("rank", "title", top.score):
        table.add_column(column, justify="left" if column == "title" else "right")
    for record in top.table.iter_rows(named=True):
        table.add_row(str(record["rank"]), record["title"], top.score_format.format(record[top.score]))
    make_console().print(table)
