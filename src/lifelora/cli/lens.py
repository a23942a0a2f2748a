"""`lifelora lens`: train, evaluate and export the conventional recommender that routes RecLoRA."""

from __future__ import annotations

from pathlib import Path

import typer

from lifelora.cli.common import OVERRIDES_HELP, App, command_line, load_data, log

app = App(help="The conventional recommender (DIN/SIM) that routes RecLoRA.", no_args_is_help=True)


@app.command("train")
def lens_train(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (see configs/lens/)"),
    run_dir: Path | None = typer.Option(None, help="where to write the run (default: runs/lens-...)"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    """Train DIN (or SIM with a history index) on the full training split, early-stopped on valid AUC."""
    from lifelora.config import load_config
    from lifelora.lens.config import LensConfig
    from lifelora.lens.train import train_lens
    from lifelora.report import metrics_table, print_table
    from lifelora.run import new_run_dir, record_run, run_status

    cfg = load_config(LensConfig, config, overrides)
    data = load_data(cfg.dataset, cfg.preset, cfg.data_dir)
    run_dir = run_dir or new_run_dir("lens", f"{cfg.dataset}-{cfg.kind}")
    run_dir.mkdir(parents=True, exist_ok=True)
    record_run(run_dir, cfg, command_line())
    with run_status(run_dir):
        result = train_lens(cfg, data, run_dir, log=log)
    m = result["metrics"]
    print_table(
        metrics_table(f"{cfg.kind.upper()} on {cfg.dataset}", [("valid", m["valid"]), ("test", m["test"])])
    )
    typer.echo(str(run_dir))


@app.command("evaluate")
def lens_evaluate(
    run_dir: Path = typer.Argument(..., help="a lens run directory"),
    split: str = typer.Option("test", help="train, valid or test"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the lens's data_dir)"),
) -> None:
    """Score a split with a trained lens; writes predictions_SPLIT.parquet and prints the metrics."""
    from lifelora.distributed import is_main_process
    from lifelora.lens.model import Lens
    from lifelora.lens.train import evaluate_split
    from lifelora.report import metrics_table, print_table

    lens = Lens.load(run_dir)
    data = load_data(lens.config.dataset, lens.config.preset, data_dir or lens.config.data_dir)
    metrics = evaluate_split(lens, data, split, run_dir)
    if is_main_process():
        print_table(metrics_table(f"{lens.config.kind.upper()} on {data.name}", [(split, metrics)]))


@app.command("export")
def lens_export(
    run_dir: Path = typer.Argument(..., help="a lens run directory"),
    split: str = typer.Option("test", help="train, valid or test"),
    out: Path | None = typer.Option(None, help="default: RUN_DIR/hidden/SPLIT.safetensors"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the lens's data_dir)"),
) -> None:
    """Save the hidden vectors (the personalized LoRA's routing input) of a split."""
    from lifelora.distributed import is_main_process
    from lifelora.lens.model import Lens
    from lifelora.lens.train import export_hidden

    lens = Lens.load(run_dir)
    data = load_data(lens.config.dataset, lens.config.preset, data_dir or lens.config.data_dir)
    written = export_hidden(lens, data, split, out or run_dir / "hidden" / f"{split}.safetensors")
    if is_main_process():
        typer.echo(str(written))
