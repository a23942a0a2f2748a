"""Generative next-item commands: `items tokenize`, and what `train` / `evaluate` / `recommend` run
with `--task next-item` (or a config that says `task: next-item`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from lifelora.cli.common import App, load_data, log, print_metrics, run_directory
from lifelora.errors import LifeloraError

TASKS = ("ctr", "next-item")
items_app = App(help="Item codes for generative next-item recommendation.", no_args_is_help=True)


def task_of(option: str | None, config: Path | None = None, run: Path | None = None) -> str:
    """The task a command runs: `--task`, else the run's or the config file's `task`, else ctr."""
    from lifelora.config import config_path
    from lifelora.io import read_yaml

    if option is not None:
        if option not in TASKS:
            raise LifeloraError(f"--task: unknown task {option!r}; choose one of {', '.join(TASKS)}")
        return option
    source = run / "config.yaml" if run is not None else config_path(config) if config is not None else None
    if source is None or not source.is_file():
        return "ctr"
    tree = read_yaml(source)
    return tree.get("task", "ctr") if isinstance(tree, dict) else "ctr"


def _task(cfg, codes=None):
    from lifelora.tasks.next_item.task import NextItemTask

    data = load_data(cfg.dataset, cfg.preset, cfg.data_dir)
    return NextItemTask(data, cfg.model, codes if codes is not None else cfg.semantic_ids, log=log)


def _trained_run(run: Path, overrides: list[str] | None = None):
    """The config and item codes of a trained next-item run (its adapter and codes must be there)."""
    from lifelora.adapters import is_adapter_dir
    from lifelora.config import load_config
    from lifelora.io import read_yaml
    from lifelora.tasks.next_item.config import NextItemConfig
    from lifelora.tasks.next_item.jobs import CODES_DIR
    from lifelora.tasks.next_item.semantic_ids import ItemCodes

    if not is_adapter_dir(run / "adapter"):
        raise LifeloraError(f"--run {run}: not a trained run (no adapter/ with an adapter config)")
    cfg = load_config(NextItemConfig, None, overrides, base=read_yaml(run / "config.yaml"))
    return cfg, ItemCodes.load(run / CODES_DIR)


def train(
    config: Path | None, adapter: str | None, lens: Path | None, run_dir: Path | None, resume: Path | None,
    overrides: list[str],
) -> None:  # fmt: skip
    from lifelora.config import load_config
    from lifelora.distributed import is_main_process
    from lifelora.io import read_yaml
    from lifelora.run import run_status
    from lifelora.tasks.next_item.config import NextItemConfig
    from lifelora.tasks.next_item.jobs import train_and_evaluate

    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise LifeloraError(f"--resume {resume}: not a run directory (no config.yaml)")
        cfg = load_config(NextItemConfig, base=read_yaml(resume / "config.yaml"))
        run_dir = resume
    else:
        extra = [f"adapter.kind={adapter}"] if adapter else []
        extra += [f"lens={lens}"] if lens else []
        cfg = load_config(NextItemConfig, config, [*overrides, *extra])
        if cfg.adapter is None:
            raise LifeloraError("adapter: null means no training; use `lifelora evaluate --task next-item`")
        run_dir = run_directory(run_dir, "train", cfg, f"{cfg.dataset}-next-item-{cfg.name}")
    with run_status(run_dir):
        summary = train_and_evaluate(_task(cfg), cfg, run_dir, resume=resume is not None)
    split = cfg.eval.split
    print_metrics(f"{cfg.name} next-item on {cfg.dataset}", split, summary["metrics"][split], cfg.task)
    if is_main_process():
        typer.echo(str(run_dir))


def evaluate(run: Path | None, config: Path | None, run_dir: Path | None, overrides: list[str]) -> None:
    from lifelora.config import load_config
    from lifelora.distributed import is_main_process
    from lifelora.run import run_status
    from lifelora.tasks.next_item.config import NextItemConfig
    from lifelora.tasks.next_item.jobs import evaluate_run

    codes = None
    if run is not None:
        cfg, codes = _trained_run(run, overrides)
        out = run_directory(
            run_dir or run / f"eval-{cfg.eval.split}", "eval", cfg, f"{cfg.dataset}-next-item-{cfg.name}"
        )
    else:
        cfg = load_config(NextItemConfig, config, overrides, base={"adapter": None})
        out = run_directory(run_dir, "eval", cfg, f"{cfg.dataset}-next-item-{cfg.name}")
    with run_status(out):
        summary = evaluate_run(_task(cfg, codes), cfg, out, adapter_dir=run / "adapter" if run else None)
    split = cfg.eval.split
    title = f"{'no training' if run is None else cfg.name} next-item on {cfg.dataset}"
    print_metrics(title, split, summary["metrics"][split], cfg.task)
    if is_main_process():
        typer.echo(str(out))


def recommend(user: str, run: Path | None, config: Path | None, k: int, as_json: bool) -> None:
    from lifelora.adapters import load
    from lifelora.config import load_config
    from lifelora.report import make_console
    from lifelora.tasks.next_item.config import NextItemConfig
    from lifelora.tasks.next_item.jobs import recommend as top_items

    codes = None
    if run is not None:
        cfg, codes = _trained_run(run)
    else:
        cfg = load_config(NextItemConfig, config, base={"adapter": None})
    task = _task(cfg, codes)
    model = load(task.backbone.model, run / "adapter").model if run else task.backbone.model
    top = top_items(task, model, cfg, user, k)
    if as_json:
        for record in top.iter_rows(named=True):
            typer.echo(json.dumps(record))
        return
    table = Table(title=f"next {k} items for user {user} ({task.data.name}, beam search over item codes)")
    for column in ("rank", "title", "log_prob"):
        table.add_column(column, justify="left" if column == "title" else "right")
    for record in top.iter_rows(named=True):
        table.add_row(str(record["rank"]), record["title"], f"{record['log_prob']:.3f}")
    make_console().print(table)


@items_app.command("tokenize")
def tokenize(
    dataset: str = typer.Argument(..., help="a prepared dataset"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="a next-item YAML config (its semantic_ids section is used)"
    ),
    model: str | None = typer.Option(None, help="backbone embedding the item texts (default: the config's)"),
    preset: str = typer.Option("rella", help="the preset the dataset was prepared with"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the cache)"),
    out: Path | None = typer.Option(None, help="also write the codes here (they are cached anyway)"),
    overrides: list[str] | None = typer.Argument(
        None, help="KEY=VALUE overrides, e.g. semantic_ids.quantizer=rqvae semantic_ids.levels=4"
    ),
) -> None:
    """Give every item a unique semantic-ID code (quantized text embeddings + a dedup level); print the
    collision rate, codebook use and reconstruction error."""
    from lifelora.config import load_config
    from lifelora.llm.backbone import load_backbone
    from lifelora.report import make_console
    from lifelora.tasks.next_item.config import NextItemConfig
    from lifelora.tasks.next_item.semantic_ids import item_codes

    cfg = load_config(NextItemConfig, config, [*(overrides or []), f"dataset={dataset}"])
    data = load_data(dataset, preset, data_dir)
    backbone = load_backbone(model or cfg.model, log=log)
    codes = item_codes(backbone, data, cfg.semantic_ids, log=log)
    table = Table(title=f"semantic IDs of {len(codes):,} {dataset} items ({cfg.semantic_ids.quantizer})")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_row("level sizes", " × ".join(map(str, codes.level_sizes)))
    for key, value in codes.stats.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    make_console().print(table)
    if out is not None:
        codes.save(out)
        typer.echo(str(out))
