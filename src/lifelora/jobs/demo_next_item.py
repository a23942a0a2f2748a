"""`lifelora demo --task next-item`: generative next-item recommendation end to end on the embedded
ML-100K and SmolLM2, on a CPU.

Leave-one-out samples; most-popular and SASRec (full cross-entropy) rank every item for every user; the
items get collaborative semantic-ID codes (SASRec's item embeddings quantized, the code tokens' rows
starting at the codebook's vectors); SmolLM2 decodes each evaluated user's next item by 10-beam
trie-constrained search with no training (only the code tokens added), with a shared LoRA, and with the
personalized meta-LoRA bank routed per token by the frozen SASRec. Both adapters train in the sequence
layout (windows of a user's items, a loss on every target) for the same fixed minutes. Every row is
scored on the same fixed subset of users, every item ranked but the user's earlier ones (the beams
skip them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lifelora.config import load_config, shipped_config
from lifelora.data.store import open_prepared
from lifelora.io import write_json
from lifelora.lens.popularity import run_popularity
from lifelora.lens.sasrec.config import SASRecConfig
from lifelora.lens.sasrec.train import train_sasrec
from lifelora.metrics.intervals import mean_interval, paired_mean_difference
from lifelora.metrics.ranking import NOT_FOUND, ndcg_gains, ranking_metrics
from lifelora.report import markdown_table, metrics_table, paired_verdict, plot_bars, print_table
from lifelora.run import new_run_dir, record_run

DATASET = "ml-100k"
SASREC_CONFIG = "lens/sasrec-ml100k.yaml"
LORA_CONFIG = "next_item/lora-ml100k-demo.yaml"
PERSONALIZED_CONFIG = "next_item/personalized-ml100k-demo.yaml"
DEMO_SASREC = ["train.epochs=60"]  # ML-100K's validation NDCG@10 levels off around epoch 60 (0.052)
QUICK_SASREC = ["train.epochs=2"]
QUICK_LLM = ["subset.train=16", "subset.eval=24", "prompt.history=5"]
LLM_ROW_DIRS = ("no-training", "lora", "personalized")
INTERVAL = "NDCG@10 95% CI"
COLUMNS = ("users", "hit@5", "ndcg@5", "hit@10", "ndcg@10", INTERVAL)
FULL_COLUMNS = ("users", "hit@10", "ndcg@10", "hit@10 seen removed", "ndcg@10 seen removed")


def _ranks(run_dir: Path, users: pl.DataFrame, column: str = "rank") -> np.ndarray:
    """The test target's rank of `users`, in their order, from a row's ranked lists (a baseline's
    `rank_seen_removed`; an LLM row's `rank`, seen items removed by its `eval.seen`)."""
    ranked = pl.read_parquet(run_dir / "ranked_test.parquet").select("user_idx", pl.col(column).alias("rank"))
    ranks = users.join(ranked, on="user_idx", how="left", maintain_order="left")["rank"]
    return ranks.fill_null(NOT_FOUND).to_numpy().astype(np.int64)


def _row(ranks: np.ndarray) -> dict:
    metrics = ranking_metrics(ranks, ks=(5, 10), cutoff=10)
    _, low, high = mean_interval(ndcg_gains(ranks))
    return {**metrics, "ndcg@10_low": low, "ndcg@10_high": high, INTERVAL: f"{low:.3f}–{high:.3f}"}


def _baselines(data, run_dir: Path, quick: bool, command: str, log) -> list[tuple[str, dict]]:
    """Popularity and SASRec over every test user, in their own directories."""
    popularity_dir, sasrec_dir = run_dir / "popularity", run_dir / "sasrec"
    popularity_dir.mkdir(parents=True, exist_ok=True)
    log("ranking every item by popularity")
    popular = run_popularity(data, popularity_dir)["metrics"]["test"]
    config = load_config(SASRecConfig, shipped_config(SASREC_CONFIG), QUICK_SASREC if quick else DEMO_SASREC)
    sasrec_dir.mkdir(parents=True, exist_ok=True)
    record_run(sasrec_dir, config, command)
    log("training SASRec (full cross-entropy, whole sequences)")
    sasrec = train_sasrec(config, data, sasrec_dir, log=log)["metrics"]["test"]

    def row(metrics: dict) -> dict:
        every, unseen = metrics["all_items"], metrics["seen_removed"]
        return {
            "users": every["users"],
            "hit@10": every["hit@10"],
            "ndcg@10": every["ndcg@10"],
            "hit@10 seen removed": unseen["hit@10"],
            "ndcg@10 seen removed": unseen["ndcg@10"],
        }

    return [("most popular", row(popular)), ("SASRec (CE)", row(sasrec))]


def _llm_rows(data, run_dir: Path, quick: bool, command: str, log) -> list[str]:
    """Train and evaluate the three LLM rows; returns their names."""
    from lifelora.tasks.jobs import evaluate_run, train_and_evaluate
    from lifelora.tasks.next_item.config import NextItemConfig
    from lifelora.tasks.next_item.task import NextItemTask

    sasrec = run_dir / "sasrec"
    overrides = [*(QUICK_LLM if quick else []), f"semantic_ids.lens={sasrec}"]
    lora_cfg = load_config(NextItemConfig, shipped_config(LORA_CONFIG), overrides)
    bare_cfg = lora_cfg.model_copy(update={"adapter": None})
    personal_cfg = load_config(
        NextItemConfig, shipped_config(PERSONALIZED_CONFIG), [*overrides, f"lens={sasrec}"]
    )
    task = NextItemTask(data, lora_cfg.model, lora_cfg.semantic_ids, log=log)
    dirs = [run_dir / name for name in LLM_ROW_DIRS]
    for directory, cfg in zip(dirs, (bare_cfg, lora_cfg, personal_cfg), strict=True):
        directory.mkdir(parents=True, exist_ok=True)
        record_run(directory, cfg, command)
    log(f"decoding {bare_cfg.subset.eval} users' next item with {bare_cfg.model} (code tokens only)")
    evaluate_run(task, bare_cfg, dirs[0])
    train_and_evaluate(task, lora_cfg, dirs[1])
    train_and_evaluate(task, personal_cfg, dirs[2])
    name, budget = lora_cfg.model, _budget(lora_cfg)
    return [
        f"{name}, no training ({lora_cfg.layout} layout)",
        f"{name} + LoRA ({budget})",
        f"{name} + personalized LoRA, SASRec-routed ({budget})",
    ]


def _budget(cfg) -> str:
    """What one LLM row trained on: its layout and its time or data budget."""
    if cfg.subset.train is not None:
        amount = f"{cfg.subset.train} {'windows' if cfg.layout == 'sequence' else 'targets'}"
    else:
        amount = f"{cfg.train.max_minutes:g} min" if cfg.train.max_minutes else f"{cfg.train.epochs} epochs"
    return f"{cfg.layout} layout, {amount}"


def _verdict(ranks: dict[str, np.ndarray], names: list[str]) -> tuple[str, dict]:
    """The personalized adapter against the shared LoRA on the same users: a paired NDCG@10 test."""
    test = paired_mean_difference(ndcg_gains(ranks[names[2]]), ndcg_gains(ranks[names[1]]))
    diff, low, high = test["difference"], test["low"], test["high"]
    span = f"personalized − shared LoRA NDCG@10 {diff:+.4f} (95% CI {low:+.4f} to {high:+.4f})"
    verdict = paired_verdict(
        span, test, "the personalized adapter", "the shared LoRA", "at this budget, on these users"
    )
    return verdict, test


def run_next_item_demo(quick: bool = False, run_dir: Path | None = None, log=print) -> dict[str, dict]:
    command = f"lifelora demo --task next-item{' --quick' if quick else ''}"
    log(f"preparing {DATASET} (embedded copy, preset rella)")
    data = open_prepared(DATASET, prepare_missing=True)
    run_dir = run_dir or new_run_dir("demo", f"{DATASET}-next-item")
    full_rows = _baselines(data, run_dir, quick, command, log)
    names = _llm_rows(data, run_dir, quick, command, log)
    users = pl.read_parquet(run_dir / LLM_ROW_DIRS[0] / "ranked_test.parquet").select("user_idx")
    ranks = {
        "most popular": _ranks(run_dir / "popularity", users, "rank_seen_removed"),
        "SASRec (CE)": _ranks(run_dir / "sasrec", users, "rank_seen_removed"),
    }
    ranks |= {
        name: _ranks(run_dir / row_dir, users) for name, row_dir in zip(names, LLM_ROW_DIRS, strict=True)
    }
    same_rows = [(name, _row(r)) for name, r in ranks.items()]
    verdict, paired = _verdict(ranks, names)
    tables = {
        f"{DATASET} leave-one-out test, all {full_rows[0][1]['users']} users, every item ranked": (
            full_rows,
            FULL_COLUMNS,
        ),
        f"{DATASET}: the same {users.height} users (seed 42), seen items removed, LLM by 10-beam search": (
            same_rows,
            COLUMNS,
        ),
    }
    for title, (rows, columns) in tables.items():
        print_table(metrics_table(title, rows, columns))
    log(verdict)
    title = f"{DATASET} next item: NDCG@10 on the same {users.height} users, with 95% intervals"
    chart = plot_bars(same_rows, run_dir / "results.png", title, "ndcg@10", ("ndcg@10_low", "ndcg@10_high"))
    (run_dir / "results.md").write_text(
        "".join(f"## {title}\n\n{markdown_table(rows, cols)}\n" for title, (rows, cols) in tables.items())
        + f"{verdict}\n\n![NDCG@10 with 95% intervals](results.png)\n"
    )
    results = {"all test users": dict(full_rows), "same users": dict(same_rows)}
    write_json(run_dir / "results.json", {**results, "personalized vs shared LoRA": paired})
    log(f"comparison chart: {chart}")
    log(f"run directory: {run_dir}")
    return results
