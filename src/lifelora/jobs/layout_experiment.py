"""`lifelora experiment next-item`: generative next-item quality at equal training time, on every test
user: popularity and SASRec beside the LLM with a shared LoRA and with the SASRec-routed personalized
LoRA in the `sequence` layout, and the shared LoRA in the `prompt` layout.

Each LLM row trains for the same wall time, in segments (`--every` minutes): after each it is checkpointed
and evaluated (all test users, 10-beam search, the user's earlier items never recommended, as for the
baselines), which gives a curve of NDCG@10 against training time. Items are coded from the experiment's
own SASRec (collaborative semantic IDs, as in the demo). The job is resumable at any point: a finished evaluation is never redone, a segment goes on
from its checkpoint, so a run cut short by a session's end continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lifelora.config import load_config, shipped_config
from lifelora.io import read_json, write_json
from lifelora.lens.popularity import run_popularity
from lifelora.lens.sasrec.config import SASRecConfig
from lifelora.lens.sasrec.train import train_sasrec
from lifelora.metrics.intervals import mean_interval, paired_mean_difference
from lifelora.metrics.ranking import NOT_FOUND, ndcg_gains, ranking_metrics
from lifelora.report import markdown_table, metrics_table, plot_lines, print_table
from lifelora.run import record_run

SASREC_CONFIG = "lens/sasrec-ml100k.yaml"
LORA_CONFIG = "next_item/lora-ml100k-demo.yaml"
PERSONALIZED_CONFIG = "next_item/personalized-ml100k-demo.yaml"
SASREC_EPOCHS = ["train.epochs=60"]
COLUMNS = ("minutes", "steps", "users", "hit@5", "ndcg@5", "hit@10", "ndcg@10", "NDCG@10 95% CI")
RESULTS = "results.json"


@dataclass(frozen=True)
class LLMRow:
    name: str  # its directory under the experiment's
    title: str
    config: str
    overrides: tuple[str, ...]


SEQUENCE = ("layout=sequence", "train.batch_size=4", "train.grad_accum=1")
PROMPT = ("layout=prompt", "train.batch_size=8", "train.grad_accum=1")
ROWS = (
    LLMRow("lora-sequence", "LoRA, sequence layout", LORA_CONFIG, SEQUENCE),
    LLMRow(
        "personalized-sequence",
        "personalized LoRA (SASRec-routed), sequence layout",
        PERSONALIZED_CONFIG,
        (*SEQUENCE, "adapter.mixing=products"),
    ),
    LLMRow("lora-prompt", "LoRA, prompt layout", LORA_CONFIG, PROMPT),
)


def budget_overrides(lr: float) -> list[str]:
    """Every row: all training windows/targets in a seeded order, all test users, a constant rate."""
    return ["subset.train=null", "subset.eval=null", "train.schedule=constant", f"train.lr={lr}",
            "train.epochs=20", "train.checkpoint_every=1000000"]  # fmt: skip


def lens_overrides(out: Path) -> list[str]:
    """Every row's item codes: the experiment's own SASRec's item embeddings quantized."""
    return [f"semantic_ids.lens={out / 'sasrec'}"]


def _row_metrics(ranks: np.ndarray) -> dict:
    metrics = ranking_metrics(ranks, ks=(5, 10), cutoff=10)
    _, low, high = mean_interval(ndcg_gains(ranks))
    return {**metrics, "ndcg@10_low": low, "ndcg@10_high": high, "NDCG@10 95% CI": f"{low:.4f}–{high:.4f}"}


def _ranks(path: Path, users: np.ndarray, column: str = "rank") -> np.ndarray:
    """Each of `users`' test-target rank from a run's ranked lists (NOT_FOUND past a beam's list)."""
    ranked = pl.read_parquet(path).select("user_idx", pl.col(column).alias("rank"))
    joined = pl.DataFrame({"user_idx": users}).join(ranked, on="user_idx", how="left", maintain_order="left")
    return joined["rank"].fill_null(NOT_FOUND).to_numpy().astype(np.int64)


def _baselines(data, out: Path, command: str, log) -> dict[str, Path]:
    """Popularity and SASRec (full ranking, every test user, seen items removed); their ranked lists."""
    popularity = out / "popularity"
    if not (popularity / "ranked_test.parquet").is_file():
        popularity.mkdir(parents=True, exist_ok=True)
        run_popularity(data, popularity)
    sasrec = out / "sasrec"
    if not (sasrec / "ranked_test.parquet").is_file():
        config = load_config(SASRecConfig, shipped_config(SASREC_CONFIG), SASREC_EPOCHS)
        sasrec.mkdir(parents=True, exist_ok=True)
        record_run(sasrec, config, command)
        log("training SASRec (full cross-entropy, 60 epochs)")
        train_sasrec(config, data, sasrec, log=log)
    return {"most popular": popularity / "ranked_test.parquet", "SASRec (CE)": sasrec / "ranked_test.parquet"}


def _train_row(task, row: LLMRow, out: Path, points: list[float], lr: float, command: str, log) -> None:
    """Train `row` to each budget in `points` (minutes) not evaluated yet, evaluating after each."""
    from lifelora.tasks.jobs import build, evaluate, evaluated, fit
    from lifelora.tasks.next_item.config import NextItemConfig

    directory = out / row.name
    overrides = [*row.overrides, *budget_overrides(lr), *lens_overrides(out), f"lens={out / 'sasrec'}"]
    base = load_config(NextItemConfig, shipped_config(row.config), overrides)
    done = {p["minutes"] for p in _results(out).get(row.name, [])}
    todo = [m for m in points if m not in done]
    if not todo:
        return
    directory.mkdir(parents=True, exist_ok=True)
    record_run(directory, base, command)
    adapter = build(task, base)
    try:
        for minutes in todo:
            cfg = base.model_copy(update={"train": base.train.model_copy(update={"max_minutes": minutes})})
            log(f"{row.title}: training to {minutes:g} minutes")
            trained = fit(task, adapter, cfg, directory, resume=True)
            point_dir = directory / f"eval-{minutes:g}min"
            point_dir.mkdir(exist_ok=True)
            with evaluated(task, adapter):
                metrics = evaluate(task, adapter.model, cfg, point_dir)
            point = {"minutes": minutes, "steps": trained["steps"], "metrics": metrics,
                     "ranked": str(point_dir.relative_to(out) / "ranked_test.parquet")}  # fmt: skip
            _record(out, row.name, point)
            log(
                f"{row.title} at {minutes:g} min: NDCG@10 {metrics['ndcg@10']:.4f} ({trained['steps']} steps)"
            )
    finally:
        adapter.unload()


def _results(out: Path) -> dict:
    path = out / RESULTS
    return read_json(path) if path.is_file() else {}


def _record(out: Path, name: str, point: dict) -> None:
    results = _results(out)
    results.setdefault(name, []).append(point)
    write_json(out / RESULTS, results)


def _paired(ranks: dict[str, np.ndarray]) -> dict[str, dict]:
    """NDCG@10 differences on the same users: each LLM row against popularity, the personalized against
    the shared adapter, and the two layouts of the shared adapter."""
    shared, personal, prompt = (row.title for row in ROWS)
    pairs = [(row.title, "most popular") for row in ROWS] + [(personal, shared), (shared, prompt)]
    return {
        f"{a} − {b}": paired_mean_difference(ndcg_gains(ranks[a]), ndcg_gains(ranks[b]))
        for a, b in pairs
        if a in ranks and b in ranks
    }


def report(data, out: Path, baselines: dict[str, Path], log) -> dict:
    """The table at the last budget every LLM row reached, the curve and the paired differences."""
    users = np.flatnonzero(data.users["seq_len"].to_numpy() >= 2)
    ranks = {name: _ranks(path, users, "rank_seen_removed") for name, path in baselines.items()}
    rows = [(name, {"minutes": "", "steps": "", **_row_metrics(r)}) for name, r in ranks.items()]
    results, curves = _results(out), {}
    for row in ROWS:
        points = results.get(row.name, [])
        if not points:
            continue
        last = points[-1]
        ranks[row.title] = _ranks(out / last["ranked"], users)
        budget = {"minutes": f"{last['minutes']:g}", "steps": last["steps"]}
        rows.append((row.title, {**budget, **_row_metrics(ranks[row.title])}))
        curves[row.title] = [{"minutes": p["minutes"], "ndcg@10": p["metrics"]["ndcg@10"]} for p in points]
    title = f"{data.name} next item, all {len(users)} test users, seen items removed, LLM by 10-beam search"
    print_table(metrics_table(title, rows, COLUMNS))
    paired = _paired(ranks)
    summary = {"users": len(users), "rows": dict(rows), "curves": curves, "paired": paired}
    markdown = f"## {title}\n\n{markdown_table(rows, COLUMNS)}\n"
    if paired:
        lines = [f"| {name} | {t['difference']:+.4f} | {t['low']:+.4f} to {t['high']:+.4f} | {t['p_value']:.3g} |"
                 for name, t in paired.items()]  # fmt: skip
        markdown += (
            "\nPaired differences of NDCG@10 on the same users (95% interval, two-sided p):\n\n"
            "| comparison | difference | 95% CI | p |\n|---|---|---|---|\n" + "\n".join(lines) + "\n"
        )
    if curves:
        chart = _curve_chart(curves, rows, out / "curve.png", data.name)
        markdown += f"\n![NDCG@10 against training minutes]({chart.name})\n"
    (out / "results.md").write_text(markdown)
    write_json(out / "summary.json", summary)
    log(f"experiment directory: {out}")
    return summary


def _curve_chart(curves: dict, rows: list, path: Path, dataset: str) -> Path:
    """NDCG@10 of each LLM row at each budget, the baselines as flat lines."""
    minutes = sorted({p["minutes"] for points in curves.values() for p in points})
    series = {
        title: [next((p["ndcg@10"] for p in points if p["minutes"] == m), np.nan) for m in minutes]
        for title, points in curves.items()
    }
    series |= {name: [metrics["ndcg@10"]] * len(minutes) for name, metrics in rows[:2]}
    title = f"{dataset}: test NDCG@10 against training time"
    return plot_lines([("NDCG@10", series)], path, title, "training minutes", x=minutes)


def run_layout_experiment(
    out: Path, minutes: float, every: float, lr: float, only: list[str] | None, command: str, log=print
) -> dict:
    from lifelora.data.store import open_prepared
    from lifelora.tasks.next_item.config import NextItemConfig
    from lifelora.tasks.next_item.task import NextItemTask

    data = open_prepared("ml-100k", prepare_missing=True)
    baselines = _baselines(data, out, command, log)
    points = [round(every * k, 6) for k in range(1, int(np.ceil(minutes / every)) + 1)]
    points[-1] = minutes
    base = load_config(NextItemConfig, shipped_config(LORA_CONFIG), lens_overrides(out))
    task = NextItemTask(data, base.model, base.semantic_ids, log=log)
    for row in ROWS:
        if only is None or any(part in row.name for part in only):
            _train_row(task, row, out, points, lr, command, log)
    return report(data, out, baselines, log)
