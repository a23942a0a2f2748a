"""LLM commands: `retrieve`, `train`, `evaluate`, `recommend`, `export-user`; click-through here, and
`--task next-item` handed to `lifelora.cli.next_item`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from lifelora.cli import next_item
from lifelora.cli.common import App, load_data, log, print_metrics, run_directory
from lifelora.errors import LifeloraError

app = App()


def _task(cfg):
    from lifelora.tasks.ctr.task import CTRTask

    return CTRTask(load_data(cfg.dataset, cfg.preset, cfg.data_dir), cfg.model, log=log)


def _run_config(run: Path, overrides: list[str] | None = None):
    """The resolved config of a trained run directory (its adapter must be there)."""
    from lifelora.adapters import is_adapter_dir
    from lifelora.config import load_config
    from lifelora.io import read_yaml
    from lifelora.tasks.ctr.config import CTRConfig

    if not is_adapter_dir(run / "adapter"):
        raise LifeloraError(f"--run {run}: not a trained run (no adapter/ with an adapter config)")
    return load_config(CTRConfig, None, overrides, base=read_yaml(run / "config.yaml"))


def _check_has_sample(data, user: str, split: str, data_dir: Path | None, shown: int = 5) -> None:
    """An instance is a sample: name a few users who have one in `split` when `user` has none."""
    names = data.split_users(split)["user"].to_list()
    if user in names:
        return
    if not names:
        raise LifeloraError(f"no user has a sample in the {split} split of {data.name}")
    few = ", ".join(names[:shown]) + (", …" if len(names) > shown else "")
    where = f" --data-dir {data_dir}" if data_dir else ""
    raise LifeloraError(
        f"user {user!r} has no sample in the {split} split; users with one: {few} "
        f"(`lifelora data info {data.name}{where} --users {split}` lists them)"
    )


@app.command("retrieve")
def retrieve(
    dataset: str = typer.Argument(..., help="a prepared dataset"),
    k: int = typer.Option(60, min=1, help="history items per sample"),
    retriever: str = typer.Option("semantic", help="semantic (ReLLa's SUBR) or recent"),
    model: str = typer.Option("smollm2-135m", help="backbone whose item embeddings drive semantic retrieval"),
    pca_dim: int = typer.Option(512, min=1, help="PCA size of the item embeddings compared for retrieval"),
    preset: str = typer.Option("rella", help="the preset the dataset was prepared with"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the cache)"),
    out: Path | None = typer.Option(
        None, help="default: $LIFELORA_HOME/retrieval/DATASET-RETRIEVER-K.safetensors"
    ),
) -> None:
    """Write per-split history positions (the SIM lens's `history_index`, K = 60 in the papers)."""
    from lifelora.data.history import RETRIEVERS, save_history_index
    from lifelora.io import history_index_file
    from lifelora.llm.item_embeddings import item_embeddings

    if retriever not in RETRIEVERS:
        raise LifeloraError(
            f"--retriever: unknown retriever {retriever!r}; choose one of {', '.join(RETRIEVERS)}"
        )
    data = load_data(dataset, preset, data_dir)
    embeddings = None
    if retriever == "semantic":
        from lifelora.llm.backbone import load_backbone

        embeddings = item_embeddings(load_backbone(model, log=log), data, pca_dim, log=log)
    target = out or history_index_file(dataset, retriever, k)
    typer.echo(str(save_history_index(retriever, data, k, target, embeddings)))


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
    task: str | None = typer.Option(
        None, "--task", help="ctr or next-item (default: the config's or run's task, else ctr)"
    ),
) -> None:
    """Train an LLM adapter (click-through or next-item) on a fixed subset, then evaluate it; writes a
    run directory."""
    if next_item.task_of(task, config, resume) == "next-item":
        return next_item.train(config, adapter, lens, run_dir, resume, overrides or [])
    from lifelora.config import load_config
    from lifelora.distributed import is_main_process
    from lifelora.io import read_yaml
    from lifelora.run import run_status
    from lifelora.tasks.ctr.config import CTRConfig
    from lifelora.tasks.ctr.jobs import train_and_evaluate

    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise LifeloraError(f"--resume {resume}: not a run directory (no config.yaml)")
        cfg = load_config(CTRConfig, base=read_yaml(resume / "config.yaml"))
        run_dir = resume
    else:
        extra = [f"adapter.kind={adapter}"] if adapter else []
        extra += [f"lens={lens}"] if lens else []
        cfg = load_config(CTRConfig, config, [*(overrides or []), *extra])
        if cfg.adapter is None:
            raise LifeloraError("adapter: null means zero-shot; use `lifelora evaluate` for that")
        run_dir = run_directory(run_dir, "train", cfg, f"{cfg.dataset}-{cfg.name}")
    with run_status(run_dir):
        summary = train_and_evaluate(_task(cfg), cfg, run_dir, resume=resume is not None)
    split = cfg.eval.split
    print_metrics(f"{cfg.name} on {cfg.dataset}", split, summary["metrics"][split])
    if is_main_process():
        typer.echo(str(run_dir))


@app.command("evaluate")
def evaluate(
    run: Path | None = typer.Option(
        None,
        "--run",
        "--trained-run",
        help="a `lifelora train` run directory (its adapter is used); under torchrun write --trained-run, "
        "since torchrun's own parser takes --run for its --run-path",
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config; without --run: zero-shot"),
    run_dir: Path | None = typer.Option(
        None, help="where to write (default: RUN/eval-SPLIT or runs/eval-...)"
    ),
    overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides (e.g. subset.eval=null)"),
    task: str | None = typer.Option(
        None, "--task", help="ctr or next-item (default: the config's or run's task, else ctr)"
    ),
    decoding: str | None = typer.Option(
        None, help="next-item: beam (trie-constrained beam search) or exact (every item's code scored)"
    ),
) -> None:
    """Score the eval split (subset) with a trained adapter, or with the bare backbone (zero-shot)."""
    if next_item.task_of(task, config, run) == "next-item":
        extra = [f"eval.decoding={decoding}"] if decoding else []
        return next_item.evaluate(run, config, run_dir, [*(overrides or []), *extra])
    if decoding is not None:
        raise LifeloraError("--decoding: only for --task next-item")
    from lifelora.config import load_config
    from lifelora.distributed import is_main_process
    from lifelora.run import run_status
    from lifelora.tasks.ctr.config import CTRConfig
    from lifelora.tasks.ctr.jobs import evaluate_run

    if run is not None:
        cfg = _run_config(run, overrides)
        out = run_directory(
            run_dir or run / f"eval-{cfg.eval.split}", "eval", cfg, f"{cfg.dataset}-{cfg.name}"
        )
    else:
        cfg = load_config(CTRConfig, config, overrides, base={"adapter": None})
        out = run_directory(run_dir, "eval", cfg, f"{cfg.dataset}-{cfg.name}")
    with run_status(out):
        summary = evaluate_run(_task(cfg), cfg, out, adapter_dir=run / "adapter" if run else None)
    split = cfg.eval.split
    print_metrics(
        f"{'zero-shot' if run is None else cfg.name} on {cfg.dataset}", split, summary["metrics"][split]
    )
    if is_main_process():
        typer.echo(str(out))


@app.command("recommend")
def recommend(
    user: str = typer.Argument(..., help="the user's id as in the raw data (e.g. 1)"),
    run: Path | None = typer.Option(None, help="a `lifelora train` run (default: zero-shot backbone)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config when no --run is given"),
    k: int = typer.Option(10, min=1, help="how many to return"),
    candidates: int = typer.Option(100, min=1, help="random items the user has not rated, to rank"),
    items: str | None = typer.Option(None, help="comma-separated raw item ids to rank instead"),
    seed: int = typer.Option(0, help="seed of the random candidates"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
    task: str | None = typer.Option(
        None, "--task", help="ctr or next-item (default: the config's or run's task, else ctr)"
    ),
) -> None:
    """Recommend items for one user: click-through ranks candidates (the shared prompt prefix computed
    once for all of them); next-item generates the top-K codes over the whole catalogue."""
    if next_item.task_of(task, config, run) == "next-item":
        return next_item.recommend(user, run, config, k, as_json)
    from lifelora.adapters import load
    from lifelora.config import load_config
    from lifelora.report import make_console
    from lifelora.tasks.ctr.config import CTRConfig
    from lifelora.tasks.ctr.ranking import recommend as rank
    from lifelora.tasks.ctr.ranking import sample_candidates

    cfg = _run_config(run) if run else load_config(CTRConfig, config, base={"adapter": None})
    task = _task(cfg)
    data = task.data
    user_idx = data.user_index(user)
    if items:
        pool = data.item_indices([key.strip() for key in items.split(",") if key.strip()], "--items")
    else:
        pool = sample_candidates(data, user_idx, candidates, seed)
    model = load(task.backbone.model, run / "adapter").model if run else task.backbone.model
    top = rank(task, model, cfg, user_idx, pool, k)
    if as_json:
        for record in top.iter_rows(named=True):
            typer.echo(json.dumps(record))
    else:
        table = Table(title=f"top {k} of {len(pool)} for user {user} ({data.name})")
        for column in ("rank", "title", "score"):
            table.add_column(column, justify="left" if column == "title" else "right")
        for record in top.iter_rows(named=True):
            table.add_row(str(record["rank"]), record["title"], f"{record['score']:.4f}")
        make_console().print(table)


@app.command("export-user")
def export_user(
    run: Path = typer.Argument(..., help="a `lifelora train` run with a personalized adapter"),
    user: str = typer.Argument(
        ..., help="the user's id as in the raw data; `lifelora data info DATASET --users test` lists them"
    ),
    out: Path = typer.Option(..., help="the PEFT adapter directory to write"),
    item: str | None = typer.Option(None, help="raw item id of the instance's target (default: latest)"),
    split: str = typer.Option("test", help="the split whose sample is the instance"),
) -> None:
    """Write one instance's RecLoRA adapter as a plain PEFT LoRA (`PeftModel.from_pretrained` loads it)."""
    from lifelora.adapters import kind_of, load
    from lifelora.data.prepare import SPLITS
    from lifelora.tasks.ctr.ranking import export_user as export
    from lifelora.tasks.ctr.task import CTRTask

    if split not in SPLITS:
        raise LifeloraError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    cfg = _run_config(run)
    if kind_of(run / "adapter") != "personalized":
        raise LifeloraError(
            f"{run}: its adapter is a shared LoRA, not a personalized one: nothing per user to export"
        )
    data = load_data(cfg.dataset, cfg.preset, cfg.data_dir)
    user_idx = data.user_index(user)
    _check_has_sample(data, user, split, cfg.data_dir)
    item_idx = None if item is None else int(data.item_indices([item], "--item")[0])
    task = CTRTask(data, cfg.model, log=log)
    adapter = load(task.backbone.model, run / "adapter")
    written = export(task, adapter.model, cfg, user_idx, split, out, item_idx)
    typer.echo(
        f"user {user}, {written['split']} sample {written['row']} ({written['item']}) → {written['out']}"
    )
