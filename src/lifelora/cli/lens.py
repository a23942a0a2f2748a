"""`lifelora lens`: train, evaluate and export the conventional recommender that routes RecLoRA: a CTR
lens (DIN/SIM) or a next-item one (SASRec, `kind: sasrec`), and the popularity baseline of the latter."""

from __future__ import annotations

from pathlib import Path

import typer

from lifelora.cli.common import OVERRIDES_HELP, App, command_line, load_data, log

app = App(help="The conventional recommender (DIN/SIM, SASRec) that routes RecLoRA.", no_args_is_help=True)
RANKING_COLUMNS = ("hit@10", "ndcg@10", "mrr", "users")


def _config_kind(config: Path | None, overrides: list[str]) -> str | None:
    """The `kind` the config file, then the overrides (the last one wins) set, before validation: which
    config schema, and which training, `lens train` runs. A file that is not YAML is left to the
    validation to report."""
    import yaml

    from lifelora.config import config_path

    kind = None
    if config is not None:
        try:
            tree = yaml.safe_load(config_path(config).read_text())
        except yaml.YAMLError:
            tree = None
        kind = tree.get("kind") if isinstance(tree, dict) else None
    for assignment in overrides:
        key, _, value = assignment.partition("=")
        if key.strip() == "kind":
            kind = value.strip()
    return kind


def ranking_rows(metrics: dict) -> list[tuple[str, dict]]:
    """Table rows of next-item metrics: each split, with every item ranked and with seen items removed."""
    return [
        (f"{split}{'' if variant == 'all_items' else ', seen removed'}", metrics[split][variant])
        for split in ("valid", "test")
        for variant in ("all_items", "seen_removed")
    ]


def _train(config_class, train, config: Path | None, overrides: list[str], run_dir: Path | None):
    """Load the config, record the run, train through `train(cfg, data, run_dir)`; (cfg, result, dir)."""
    from lifelora.config import load_config
    from lifelora.run import new_run_dir, record_run, run_status

    cfg = load_config(config_class, config, overrides)
    data = load_data(cfg.dataset, cfg.preset, cfg.data_dir)
    run_dir = run_dir or new_run_dir("lens", f"{cfg.dataset}-{cfg.kind}")
    run_dir.mkdir(parents=True, exist_ok=True)
    record_run(run_dir, cfg, command_line())
    with run_status(run_dir):
        result = train(cfg, data, run_dir, log=log)
    return cfg, result, run_dir


@app.command("train")
def lens_train(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (see configs/lens/)"),
    run_dir: Path | None = typer.Option(None, help="where to write the run (default: runs/lens-...)"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    """Train DIN (or SIM with a history index) on the full training split, early-stopped on valid AUC;
    with `kind: sasrec`, SASRec on the leave-one-out sequences, early-stopped on valid NDCG@10."""
    from lifelora.report import metrics_table, print_table

    if _config_kind(config, overrides or []) == "sasrec":
        from lifelora.lens.sasrec.config import SASRecConfig
        from lifelora.lens.sasrec.train import train_sasrec

        cfg, result, run_dir = _train(SASRecConfig, train_sasrec, config, overrides or [], run_dir)
        title = f"SASRec ({cfg.train.loss.upper()}) on {cfg.dataset}, full ranking"
        print_table(metrics_table(title, ranking_rows(result["metrics"]), RANKING_COLUMNS))
    else:
        from lifelora.lens.din.config import LensConfig
        from lifelora.lens.din.train import train_lens

        cfg, result, run_dir = _train(LensConfig, train_lens, config, overrides or [], run_dir)
        m = result["metrics"]
        title = f"{cfg.kind.upper()} on {cfg.dataset}"
        print_table(metrics_table(title, [("valid", m["valid"]), ("test", m["test"])]))
    typer.echo(str(run_dir))


def _trained_lens(run_dir: Path, data_dir: Path | None):
    """A trained DIN/SIM lens and the prepared data it was trained on (or `data_dir`)."""
    from lifelora.lens.din import DINLens

    lens = DINLens.load(run_dir)
    return lens, load_data(lens.config.dataset, lens.config.preset, data_dir or lens.config.data_dir)


@app.command("evaluate")
def lens_evaluate(
    run_dir: Path = typer.Argument(..., help="a lens run directory"),
    split: str = typer.Option("test", help="train, valid or test"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the lens's data_dir)"),
) -> None:
    """Score a split with a trained lens; writes predictions_SPLIT.parquet and prints the metrics."""
    from lifelora.distributed import is_main_process
    from lifelora.lens.din.train import evaluate_split
    from lifelora.report import metrics_table, print_table

    lens, data = _trained_lens(run_dir, data_dir)
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
    from lifelora.lens.din.train import export_hidden

    lens, data = _trained_lens(run_dir, data_dir)
    written = export_hidden(lens, data, split, out or run_dir / "hidden" / f"{split}.safetensors")
    if is_main_process():
        typer.echo(str(written))


@app.command("popularity")
def lens_popularity(
    dataset: str = typer.Argument(..., help="a prepared dataset (e.g. ml-1m)"),
    preset: str = typer.Option("rella", help="the dataset's preparation preset"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the cache)"),
    run_dir: Path | None = typer.Option(None, help="where to write the run (default: runs/lens-...)"),
    top_k: int = typer.Option(100, min=1, help="length of the ranked lists saved per user"),
) -> None:
    """The most-popular baseline of the next-item (leave-one-out) task, the floor SASRec must clear."""
    from lifelora.io import write_json
    from lifelora.lens.popularity import run_popularity
    from lifelora.report import metrics_table, print_table
    from lifelora.run import environment, new_run_dir

    data = load_data(dataset, preset, data_dir)
    run_dir = run_dir or new_run_dir("lens", f"{dataset}-popularity")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "run.json", {"command": command_line(), **environment()})
    result = run_popularity(data, run_dir, top_k=top_k)
    title = f"Popularity on {dataset}, full ranking"
    print_table(metrics_table(title, ranking_rows(result["metrics"]), RANKING_COLUMNS))
    typer.echo(str(run_dir))
