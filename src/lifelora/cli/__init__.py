"""The `lifelora` command line, one module per sub-app. Errors a user can fix print one line and exit
with status 2."""

from __future__ import annotations

import sys

from lifelora import distributed
from lifelora.cli import continual, ctr, data, jobs, lens, next_item, serve, tasks, versions
from lifelora.cli.common import App, console, quiet_progress_bars
from lifelora.errors import LifeloraError, Terminated

app = App(
    help="LLM recommenders with personalized (RecLoRA) and continually evolving (PESO) LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(lens.app, name="lens")
app.add_typer(next_item.items_app, name="items")
app.add_typer(continual.app, name="continual")
app.add_typer(jobs.experiment_app, name="experiment")
app.add_typer(versions.app, name="versions")
app.add_typer(tasks.app)
app.add_typer(ctr.app)
app.add_typer(jobs.app)
app.add_typer(serve.app)


def main() -> None:
    quiet_progress_bars()
    try:
        app()
    except SystemExit as exc:
        if not exc.code:  # success: under torchrun every process leaves the process group together
            distributed.shutdown()
        raise
    except LifeloraError as exc:
        console.print(f"lifelora: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("lifelora: interrupted", highlight=False)
        sys.exit(130)
    except Terminated:
        console.print("lifelora: terminated", highlight=False)
        sys.exit(143)
