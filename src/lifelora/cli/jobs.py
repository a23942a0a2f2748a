"""`lifelora bench NAME`, `lifelora experiment reclora` and `lifelora demo`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lifelora.cli.common import App, command_line, load_data, log
from lifelora.errors import LifeloraError

app = App()
experiment_app = App(
    help="Result tables: a method against its baselines and ablations.", no_args_is_help=True
)


@app.command("bench")
def bench(
    name: str = typer.Argument(
        ..., help="prepare, lens, scoring, ranking, train-step, personalized, decoding, sasrec or serve"
    ),
    quick: bool = typer.Option(False, help="a reduced run (a minute or two)"),
    dataset: str | None = typer.Option(None, help="override the benchmark's dataset"),
    results_dir: Path = typer.Option(Path("benchmarks/results"), help="where NAME.json collects results"),
) -> None:
    """Run a named benchmark; its figures are the JSON object on the last line of stdout."""
    if name == "serve":  # the HTTP server: it lives in lifelora.serve, which lifelora.bench must not import
        from lifelora.serve.bench import run_serve_bench

        figures = run_serve_bench(quick, results_dir / "serve.json", log, dataset=dataset)
        typer.echo(json.dumps(figures))
        return
    from lifelora.bench import run_benchmark

    figures = run_benchmark(name, quick=quick, dataset=dataset, results_dir=results_dir, log=log)
    typer.echo(json.dumps(figures))


@experiment_app.command("reclora")
def experiment_reclora(
    config: Path = typer.Option(..., "--config", "-c", help="a personalized-adapter config (configs/llm/)"),
    lens: Path | None = typer.Option(None, help="lens run directory (overrides lens)"),
    out: Path | None = typer.Option(None, help="experiment directory (default: runs/experiment-...)"),
    n_loras: str = typer.Option("1,4,16", help="N values of the meta-LoRA ablation"),
    temperatures: str = typer.Option("1,5", help="T values of the temperature ablation"),
    sizes: str = typer.Option("", help="extra training-subset sizes (e.g. 1000,10000)"),
    only: str | None = typer.Option(None, help="comma-separated parts of row names to run"),
    also_lens: list[Path] | None = typer.Option(
        None,
        metavar="<path>",
        help="another lens run directory (e.g. SIM) to add as a lens-alone row; give it once per lens",
    ),
    overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides of the config"),
) -> None:
    """RecLoRA vs lens, zero-shot and shared LoRA, and its ablations: a table and a bar chart."""
    from lifelora.config import load_config
    from lifelora.jobs.reclora_experiment import run_reclora_experiment
    from lifelora.report import CTR_COLUMNS, metrics_table, print_table
    from lifelora.run import new_run_dir
    from lifelora.tasks.ctr.config import CTRConfig
    from lifelora.tasks.ctr.task import CTRTask

    def numbers(option: str, text: str, kind):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise LifeloraError(f"--{option}: {text!r} is not a comma-separated list of numbers") from None

    cfg = load_config(CTRConfig, config, [*(overrides or []), *([f"lens={lens}"] if lens else [])])
    out = out or new_run_dir("experiment", f"{cfg.dataset}-reclora")
    out.mkdir(parents=True, exist_ok=True)
    rows = run_reclora_experiment(
        CTRTask(load_data(cfg.dataset, cfg.preset, cfg.data_dir), cfg.model, log=log),
        cfg,
        out,
        command_line(),
        numbers("n-loras", n_loras, int),
        numbers("temperatures", temperatures, float),
        numbers("sizes", sizes, int),
        only=[o.strip() for o in only.split(",")] if only else None,
        other_lenses=also_lens or [],
        log=log,
    )
    print_table(metrics_table(f"RecLoRA experiment on {cfg.dataset}", rows, CTR_COLUMNS))
    typer.echo(str(out))


@experiment_app.command("next-item")
def experiment_next_item(
    out: Path | None = typer.Option(
        None,
        help="experiment directory (default: runs/experiment-...); run again with the same one to resume",
    ),
    minutes: float = typer.Option(60.0, min=0.01, help="training minutes of every LLM row"),
    every: float = typer.Option(20.0, min=0.01, help="minutes between evaluations (the curve's points)"),
    lr: float = typer.Option(2e-3, min=0.0, help="constant learning rate of every LLM row"),
    only: str | None = typer.Option(None, help="comma-separated parts of row names to run (e.g. sequence)"),
) -> None:
    """Next-item quality at equal training time on every ML-100K test user: popularity, SASRec, and the
    LLM with a shared and a personalized LoRA (sequence layout) and a shared LoRA (prompt layout), with a
    curve of NDCG@10 against training minutes."""
    from lifelora.jobs.layout_experiment import run_layout_experiment
    from lifelora.run import new_run_dir

    if every > minutes:
        raise LifeloraError(f"--every ({every:g}) must not exceed --minutes ({minutes:g})")
    out = out or new_run_dir("experiment", "ml-100k-next-item")
    out.mkdir(parents=True, exist_ok=True)
    parts = [o.strip() for o in only.split(",")] if only else None
    run_layout_experiment(out, minutes, every, lr, parts, command_line(), log=log)
    typer.echo(str(out))


@app.command("demo")
def demo(
    quick: bool = typer.Option(False, help="tiny budgets everywhere (a smoke test of the pipeline)"),
    run_dir: Path | None = typer.Option(None, help="where to write everything (default: runs/demo-...)"),
    task: str = typer.Option(
        "ctr", "--task", help="ctr (lens, zero-shot, shared LoRA, RecLoRA) or next-item (generative)"
    ),
    continual: bool = typer.Option(
        False, help="PESO vs a single evolving LoRA vs pretrain over five periods (next-item)"
    ),
) -> None:
    """Main job on the embedded defaults (ML-100K, SmolLM2). ctr: DIN ± ratings, zero-shot, shared LoRA,
    RecLoRA. next-item: popularity, SASRec, the LLM untrained, with a LoRA and with a personalized LoRA.
    --continual: PESO and its baselines over time periods."""
    if task not in ("ctr", "next-item"):
        raise LifeloraError(f"--task: unknown task {task!r}; choose one of ctr, next-item")
    if continual:
        from lifelora.jobs.demo_continual import run_continual_demo

        run_continual_demo(quick=quick, run_dir=run_dir, log=log)
        return
    if task == "next-item":
        from lifelora.jobs.demo_next_item import run_next_item_demo

        run_next_item_demo(quick=quick, run_dir=run_dir, log=log)
        return
    from lifelora.jobs.demo import run_demo

    run_demo(quick=quick, run_dir=run_dir, log=log)
