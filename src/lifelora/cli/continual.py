"""`lifelora continual`: PESO and its baselines over time periods (run, resume, report)."""

from __future__ import annotations

from pathlib import Path

import typer

from lifelora.cli.common import OVERRIDES_HELP, App, command_line, log
from lifelora.errors import LifeloraError

app = App(
    help="Continual learning over time periods: PESO and its baselines, one adapter carried through the "
    "periods. `lifelora continual run -c CONFIG`; `lifelora continual report RUN`.",
    no_args_is_help=True,
)


def _list(option: str | None, name: str, cast=str) -> list | None:
    if option is None:
        return None
    items = [item.strip() for item in option.split(",") if item.strip()]
    try:
        return [cast(item) for item in items] or None
    except ValueError:
        raise LifeloraError(f"{name}: expected a comma-separated list of integers, got {option!r}") from None


def load_continual_config(config: Path | None, overrides: list[str], task: str | None, adapter: str | None):
    from lifelora.cli.tasks import task_of
    from lifelora.config import load_config
    from lifelora.continual.config import continual_config_class

    if config is None:
        raise LifeloraError("-c/--config: a continual config is required (see configs/continual/)")
    task = task_of(task, config)
    extra = [f"adapter.kind={adapter}"] if adapter else []
    return load_config(continual_config_class(task), config, [*overrides, *extra, f"task={task}"])


@app.command("run")
def run(
    config: Path = typer.Option(
        None, "--config", "-c", help="continual YAML config (see configs/continual/)"
    ),
    task: str = typer.Option(None, help="next-item or ctr (default: the config's task)"),
    adapter: str = typer.Option(None, help="adapter kind: lora or personalized (overrides adapter.kind)"),
    strategies: str = typer.Option(None, help="comma-separated strategy names of the config (default: all)"),
    seeds: str = typer.Option(None, help="comma-separated seeds (default: the config's)"),
    run_dir: Path = typer.Option(None, help="where to write the run (default: runs/continual-...)"),
    resume: Path = typer.Option(
        None,
        help="continue a run after its last finished period (with --strategies/--seeds: run more of "
        "its config's strategies and seeds into it)",
    ),
    overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, metavar="[KEY=VALUE]..."),
) -> None:
    """Run strategies × seeds over the periods; writes a results table and plot into the run directory."""
    from lifelora.config import load_config
    from lifelora.continual.config import continual_config_class
    from lifelora.continual.report import results_table
    from lifelora.continual.runner import run_continual, select
    from lifelora.io import read_yaml
    from lifelora.report import print_table
    from lifelora.run import new_run_dir, record_run, run_status

    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise LifeloraError(f"--resume {resume}: not a continual run directory (no config.yaml)")
        saved = read_yaml(resume / "config.yaml")
        cfg = load_config(
            continual_config_class(saved.get("task", "next-item")), None, overrides or [], base=saved
        )
        run_dir = resume
    else:
        cfg = load_continual_config(config, overrides or [], task, adapter)
    whole = cfg  # the run directory records (and its report covers) every strategy and seed
    cfg = select(cfg, _list(strategies, "--strategies"), _list(seeds, "--seeds", int))
    if resume is None:
        run_dir = run_dir or new_run_dir("continual", f"{cfg.dataset}-{cfg.task}-{cfg.adapter.kind}")
        _check_same_run(run_dir, whole)
        run_dir.mkdir(parents=True, exist_ok=True)
        record_run(run_dir, whole, command_line())
    with run_status(run_dir):
        summary = run_continual(cfg, run_dir, log, report=whole)
    print_table(results_table(summary))
    typer.echo(str(run_dir / "results.png"))


def _check_same_run(run_dir: Path, cfg) -> None:
    """A --run-dir that already holds a run takes more strategies, seeds and baselines (and the SASRec
    baseline's settings) of the same protocol only: everything else must be as it was."""
    from lifelora.io import read_yaml

    if not (run_dir / "config.yaml").is_file():
        return
    before, now = read_yaml(run_dir / "config.yaml"), cfg.model_dump(mode="json")
    for tree in (before, now):
        for key in ("strategies", "seeds", "baselines", "baseline_sasrec", "retrain_elsewhere"):
            tree.get("continual", {}).pop(key, None)
    if before != now:
        changed = sorted(_changed(before, now))
        raise LifeloraError(
            f"--run-dir {run_dir}: holds a run of another protocol (it differs in {', '.join(changed)}); "
            "only strategies, seeds and baselines may be added to a run"
        )


def _changed(before: dict, now: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ (a section that differs: its keys that do)."""
    keys = []
    for key in set(before) | set(now):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


@app.command("report")
def report(run: Path = typer.Argument(..., help="a continual run directory")) -> None:
    """Rebuild results.json, results.md and results.png from a run directory."""
    from lifelora.config import load_config
    from lifelora.continual.config import continual_config_class
    from lifelora.continual.report import results_table, write_report
    from lifelora.io import read_yaml
    from lifelora.report import print_table

    if not (run / "config.yaml").is_file():
        raise LifeloraError(f"{run}: not a continual run directory (no config.yaml)")
    saved = read_yaml(run / "config.yaml")
    if not isinstance(saved, dict) or "continual" not in saved:
        raise LifeloraError(f"{run}: config.yaml has no continual section (not a continual run)")
    cfg = load_config(continual_config_class(saved.get("task", "next-item")), None, [], base=saved)
    summary = write_report(run, cfg)
    print_table(results_table(summary))
    typer.echo(str(run / "results.png"))
