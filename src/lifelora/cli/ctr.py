"""Click-through's own commands: `retrieve` (history positions for a SIM lens) and `export-user` (one
instance's RecLoRA adapter as a plain PEFT LoRA); `train`, `evaluate` and `recommend` are every task's
(`lifelora.cli.tasks`)."""

from __future__ import annotations

from pathlib import Path

import typer

from lifelora.cli.common import App, load_data, log
from lifelora.errors import LifeloraError

app = App()


def _run_config(run: Path):
    """The resolved config of a trained click-through run directory (its adapter must be there)."""
    from lifelora.tasks.runs import trained_config

    return trained_config("ctr", run)


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
    from lifelora.adapters import is_routed, kind_of, load
    from lifelora.data.prepare import SPLITS
    from lifelora.tasks.ctr.ranking import export_user as export
    from lifelora.tasks.ctr.task import CTRTask

    if split not in SPLITS:
        raise LifeloraError(f"--split: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    cfg = _run_config(run)
    if not is_routed(kind_of(run / "adapter")):
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
