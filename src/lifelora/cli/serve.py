"""`lifelora serve RUN_DIR`: the trained run's active adapter version behind an HTTP API."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from lifelora.cli.common import App, log
from lifelora.errors import LifeloraError

app = App()
API_KEY_ENV = "LIFELORA_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve(
    run_dir: Path = typer.Argument(..., help="a `lifelora train` run directory (its versions/ are served)"),
    host: str = typer.Option("127.0.0.1", help="address to bind; any other than loopback needs an API key"),
    port: int = typer.Option(8000, min=0, max=65535, help="port (0: any free one)"),
    api_key: str | None = typer.Option(
        None, help=f"required in the X-API-Key header (default: ${API_KEY_ENV}); needed off loopback"
    ),
    feedback: str | None = typer.Option(
        None, help="feedback log: a SQLite file or a postgresql:// URL (default: RUN_DIR/feedback.sqlite)"
    ),
    max_batch: int = typer.Option(8, min=1, help="most requests the model runs together"),
    max_wait_ms: float = typer.Option(5.0, min=0, help="how long a batch waits to fill"),
    max_k: int = typer.Option(100, min=1, help="largest k of /recommend"),
) -> None:
    """Serve recommendations, scores and feedback; versions switched with `lifelora versions` or published
    by `lifelora update` are picked up without a restart. Open http://HOST:PORT/ for the page, /docs for
    the API."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bar per batch in the server's log
    import uvicorn

    from lifelora.serve.app import create_app
    from lifelora.serve.service import Limits, Recommender

    key = api_key or os.environ.get(API_KEY_ENV) or None
    if key is None and not is_loopback(host):
        raise LifeloraError(
            f"--host {host}: off loopback an API key is required (--api-key or ${API_KEY_ENV})"
        )
    if not (run_dir / "config.yaml").is_file():
        raise LifeloraError(f"{run_dir}: not a run directory (no config.yaml)")
    limits = Limits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_k=max_k)
    recommender = Recommender(run_dir, limits, feedback, log)
    log(f"serving {run_dir} (version {recommender.active}) on http://{host}:{port}/")
    try:
        uvicorn.run(create_app(recommender, key), host=host, port=port, log_level="warning")
    finally:
        recommender.close()


@app.command("update")
def update(
    run_dir: Path = typer.Argument(..., help="a served run directory"),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML update settings (see configs/update/)"
    ),
    feedback: str | None = typer.Option(
        None, help="feedback log: a SQLite file or a postgresql:// URL (default: RUN_DIR/feedback.sqlite)"
    ),
    overrides: list[str] | None = typer.Argument(
        None, help="KEY=VALUE overrides (e.g. tolerance=0.01 strategy.weight=5 epochs=2)"
    ),
) -> None:
    """Learn from the feedback since the active version: one continual step (PESO by default) from it,
    both judged on held-out feedback, the new version published (and activated) only if it does at least
    as well. Safe while `lifelora serve` runs: the server switches to a published version by itself."""
    import json

    from lifelora.config import load_config
    from lifelora.serve.update import UpdateSettings
    from lifelora.serve.update import update as run_update

    if not (run_dir / "config.yaml").is_file():
        raise LifeloraError(f"{run_dir}: not a run directory (no config.yaml)")
    settings = load_config(UpdateSettings, config, overrides or [])
    decision = run_update(run_dir, settings, feedback, log)
    published = decision.get("published")
    if published is None:
        log(f"kept version {decision['active_version']}: {decision['reason']}")
    else:
        state = "active" if decision.get("activated") else "published, not activated"
        log(f"version {published} is {state}: {decision['reason']}")
    typer.echo(json.dumps(decision))
