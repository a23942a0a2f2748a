"""Generative next-item's own command: `items tokenize`; `train`, `evaluate` and `recommend` are every
task's (`lifelora.cli.tasks`, `--task next-item` or a config that says `task: next-item`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lifelora.cli.common import App, load_data, log

items_app = App(help="Item codes for generative next-item recommendation.", no_args_is_help=True)


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
    """Give every item a unique semantic-ID code (quantized text embeddings, or a SASRec run's item
    embeddings with semantic_ids.lens=RUN, + a dedup level); print the collision rate, codebook use and
    reconstruction error."""
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
