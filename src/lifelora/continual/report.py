"""The results of a continual run, rebuilt from its directory alone (`lifelora continual report RUN`):
per strategy and seed the period × block matrix of the headline metric, the mean over blocks 1.. (block
0 is the first period's) of the model after period t on block t (PESO's protocol) and on block t+1 (what
a deployed recommender faces next), returning versus new users, transfer and forgetting, storage and
time; then the mean ± std over the seeds that finished as a table (Markdown and JSON) and a per-period
plot (PNG)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from rich.table import Table

from lifelora.continual import blocks, selection
from lifelora.continual.config import ContinualConfig
from lifelora.continual.engine import FIRST, blocks_after, eval_path, model_after
from lifelora.io import atomic_path, read_json, write_json
from lifelora.metrics.continual import transfer_summary
from lifelora.report import plot_lines
from lifelora.tasks.registry import task_class


def headline(task: str) -> tuple[str, ...]:
    """The metrics a report leads with (the first one ranks), the task's own."""
    return task_class(task).headline


def _value(metrics: dict | None, metric: str, group: str | None = None) -> float:
    if metrics is None:
        return math.nan
    if group is not None:
        metrics = metrics.get(group, {})
    value = metrics.get(metric)
    return math.nan if value is None else float(value)


def _matrix(
    root: Path, title: str, cfg: ContinualConfig, metric: str, group: str | None = None
) -> np.ndarray:
    """R[t, j]: the model after period t on block j's test set (NaN: not evaluated, or not run yet)."""
    n = cfg.continual.periods.n_periods
    matrix = np.full((n, n), np.nan)
    for period in range(n):
        key = model_after(root, title, period)
        if key is None:
            continue
        for block in blocks_after(n, cfg.continual.matrix, period):
            path = eval_path(root / "evals", cfg, key, period, block)
            matrix[period, block] = _value(read_json(path) if path.is_file() else None, metric, group)
    return matrix


def _baseline(root: Path, cfg: ContinualConfig, metric: str) -> np.ndarray | None:
    """The period-0 model's score on every block (what forward transfer is measured against)."""
    n = cfg.continual.periods.n_periods
    paths = [eval_path(root / "evals", cfg, FIRST, 0, j) for j in range(n)]
    if not all(p.is_file() for p in paths):
        return None
    return np.array([_value(read_json(p), metric) for p in paths])


def _later_mean(values: np.ndarray) -> float:
    later = values[1:]
    return float(np.nanmean(later)) if len(later) and not np.isnan(later).all() else math.nan


def _storage(root: Path, title: str, n: int) -> dict:
    """What the strategy keeps after its last finished period: adapter branches and their bytes (NaN
    where the weights are not on this machine: results travel without them)."""
    for period in range(n - 1, -1, -1):
        directory = root / (FIRST if period == 0 else f"{title}/period-{period}")
        if (directory / "done.json").is_file():
            files = [f for f in (directory / "adapter").rglob("*") if f.is_file()]
            state = directory / "strategy.safetensors"
            adapters = len(read_json(directory / "branches.json")["branches"])
            if not files:
                return {"adapters": adapters, "adapter_mb": math.nan, "state_mb": math.nan}
            return {
                "adapters": adapters,
                "adapter_mb": round(sum(f.stat().st_size for f in files) / 2**20, 2),
                "state_mb": round(state.stat().st_size / 2**20, 2) if state.is_file() else 0.0,
            }
    return {}


def seed_result(root: Path, title: str, cfg: ContinualConfig) -> dict:
    """One strategy, one seed: per-period figures and their summary."""
    n = cfg.continual.periods.n_periods
    metrics = headline(cfg.task)
    result: dict = {"per_period": {}, "summary": {}}
    for metric in metrics:
        matrix = _matrix(root, title, cfg, metric)
        diagonal = np.diag(matrix)
        following = np.array([matrix[t, t + 1] for t in range(n - 1)] + [math.nan])
        result["per_period"][metric] = {"same_block": diagonal.tolist(), "next_block": following.tolist()}
        result["summary"][metric] = _later_mean(diagonal)
        result["summary"][f"{metric} next"] = float(np.nanmean(following)) if n > 1 else math.nan
        for group in ("returning", "new"):
            result["summary"][f"{metric} {group}"] = _later_mean(
                np.diag(_matrix(root, title, cfg, metric, group))
            )
        if metric == metrics[0]:
            result["matrix"] = matrix.tolist()
            transfer = transfer_summary(matrix, _baseline(root, cfg, metric))
            result["summary"].update({k: transfer[k] for k in ("bwt", "fwt", "forgetting") if k in transfer})
    seconds = [
        read_json(root / title / f"period-{t}" / "done.json")["seconds"]
        for t in range(1, n)
        if (root / title / f"period-{t}" / "done.json").is_file()
    ]
    if len(seconds) + 1 < n:  # still running: its means would be over other blocks than the others'
        result["summary"] = dict.fromkeys(result["summary"], math.nan)
    result["summary"]["seconds"] = float(sum(seconds))
    result["summary"]["periods_done"] = len(seconds) + 1
    result["summary"].update(_storage(root, title, n))
    return result


def summarize(run_dir: Path, cfg: ContinualConfig) -> dict:
    """Every strategy over every seed: per-seed results, mean and std of each summary figure over the
    seeds that finished every period (`finished_seeds`; while none has, over every seed, to show
    progress), so a seed still at its first period does not average its seconds into a finished one's."""
    strategies = {}
    ran = selection.seeds_that_ran(run_dir, cfg)
    n = cfg.continual.periods.n_periods
    for strategy in cfg.continual.strategies:
        seeds = {str(seed): seed_result(run_dir / f"seed-{seed}", strategy.title, cfg) for seed in ran}
        finished = [seed for seed, result in seeds.items() if result["summary"]["periods_done"] == n]
        in_mean = finished or list(seeds)
        keys = next(iter(seeds.values()))["summary"].keys() if seeds else []
        mean, std = {}, {}
        for key in keys:
            values = np.array([seeds[seed]["summary"].get(key, math.nan) for seed in in_mean], dtype=float)
            finite = values[~np.isnan(values)]
            mean[key] = float(finite.mean()) if len(finite) else math.nan
            std[key] = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
        strategies[strategy.title] = {"seeds": seeds, "finished_seeds": [int(seed) for seed in finished],
                                      "mean": mean, "std": std}  # fmt: skip
    return {"task": cfg.task, "dataset": cfg.dataset, "model": cfg.model, "metric": headline(cfg.task)[0],
            "periods": cfg.continual.periods.n_periods, "seeds": ran, "strategies": strategies}  # fmt: skip


def table_columns(task: str) -> list[str]:
    first = headline(task)[0]
    return [*headline(task), f"{first} next", f"{first} returning", f"{first} new", "bwt", "forgetting",
            "adapters", "adapter_mb", "seconds", "periods_done"]  # fmt: skip


def _cell(mean: float, std: float, key: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if key in ("adapters", "periods_done", "seconds"):
        return f"{mean:.0f}"
    if key == "adapter_mb":
        return f"{mean:.1f}"
    return f"{mean:.4f}" + ("" if std is None or math.isnan(std) else f" ± {std:.4f}")


def table_rows(summary: dict) -> list[list[str]]:
    columns = table_columns(summary["task"])
    return [
        [
            title,
            ", ".join(map(str, s["finished_seeds"])) or "–",
            *(_cell(s["mean"].get(c, math.nan), s["std"].get(c, math.nan), c) for c in columns),
        ]
        for title, s in summary["strategies"].items()
    ]


def results_table(summary: dict) -> Table:
    table = Table(title=f"continual {summary['task']} on {summary['dataset']} ({summary['model']}), "
                  f"mean over blocks 1..{summary['periods'] - 1}")  # fmt: skip
    for column in ["strategy", "seeds", *table_columns(summary["task"])]:
        table.add_column(column, justify="left" if column in ("strategy", "seeds") else "right")
    for row in table_rows(summary):
        table.add_row(*row)
    return table


def statistics_table(statistics, dataset: str) -> Table:
    """The periods' table (PESO's Table 1 shape): dates, users new and returning, items, samples."""
    from lifelora.data.periods import iso

    table = Table(title=f"{dataset}: {statistics.height} periods")
    columns = ["period", "from", "to", "users", "new_users", "returning_users", "items", "new_items",
               "interactions", "train_samples", "valid_samples", "test_samples"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for row in statistics.iter_rows(named=True):
        dated = "first_timestamp" in row
        dates = {
            c: iso(row[k])[:10] if dated else "–"
            for c, k in (("from", "first_timestamp"), ("to", "last_timestamp"))
        }
        table.add_row(*(str(dates.get(c, row.get(c))) for c in columns))
    return table


def markdown(summary: dict) -> str:
    columns = ["strategy", "seeds", *table_columns(summary["task"])]
    lines = [
        f"Mean over blocks 1..{summary['periods'] - 1} of the model after block t on block t's test set "
        f"(`next`: on block t+1, after blocks 0..{summary['periods'] - 2}; block 0 is the first period's); "
        "mean ± std over the seeds that finished every block (`seeds`; ran: "
        f"{', '.join(map(str, summary['seeds']))}; a row no seed has finished shows its progress).",
        "",
        "| " + " | ".join(columns) + " |",
        "|---" * len(columns) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(summary)]
    return "\n".join(lines) + "\n"


def rows_markdown(summary: dict, intervals: dict, run_dir: Path, metrics: tuple[str, ...]) -> str:
    """The results table a paper would print: one row per strategy and seed (the seed-independent
    baselines once), each ranked metric's mean over blocks 1.. with its 95% interval, the kept epochs'
    validation loss and the minutes blocks 1.. took with their evaluations; rows not finished are left out."""
    columns = [*(f"{m} (%), mean 1.." for m in metrics), "kept-epoch valid loss", "minutes, blocks 1.."]
    lines = blocks.table_head(
        "**The table, per seed**: the model after block t on block t's tested users, the mean over blocks "
        "1.. (95% interval); the validation loss of the kept epochs, mean over blocks 1..",
        "strategy",
        ["seed", *columns],
    )
    baselines: dict[str, dict] = {}
    for title, s in summary["strategies"].items():
        for seed, result in s["seeds"].items():
            figures = intervals.get(seed, {}).get("strategies", {}).get(title)
            if not figures or figures[metrics[0]]["mean"] is None:
                continue
            loss = selection.validation_loss(run_dir / f"seed-{seed}", title, summary["periods"])
            cells = [blocks.cell(figures[m]["mean"]) for m in metrics]
            cells += ["–" if loss is None else f"{loss:.4f}", f"{result['summary']['seconds'] / 60:.0f}"]
            lines.append(f"| {title} | {seed} | " + " | ".join(cells) + " |")
    for per_seed in intervals.values():
        for title, figures in per_seed["strategies"].items():
            if title not in summary["strategies"] and figures[metrics[0]]["mean"] is not None:
                baselines.setdefault(title, figures)
    for title, figures in baselines.items():
        cells = [blocks.cell(figures[m]["mean"]) for m in metrics]
        lines.append(f"| {title} | – | " + " | ".join(cells) + " | – | – |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path:
    """The headline metric per period, same block and next block, one line per strategy (seed mean); a
    strategy that has run nothing after the shared period 0 is left out until it has."""
    metric = summary["metric"]
    panels = []
    for which, label in (("same_block", f"{metric}, block t"), ("next_block", f"{metric}, block t+1")):
        series = {}
        for title, s in summary["strategies"].items():
            rows = np.array([seed["per_period"][metric][which] for seed in s["seeds"].values()], dtype=float)
            if len(rows) and (rows.shape[1] == 1 or not np.isnan(rows[:, 1:]).all()):
                series[title] = np.nanmean(rows, axis=0)
        panels.append((label, series))
    title = f"{summary['task']} on {summary['dataset']}, {summary['model']}: model after period t"
    return plot_lines(panels, path, title, "period t")


def write_report(run_dir: Path, cfg: ContinualConfig) -> dict:
    """results.json, results.md and results.png in the run directory, and for ranked outcomes the
    per-block intervals (blocks.json, their tables in results.md, blocks.png); returns the summary."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # means of all-NaN slices are NaN, as intended
        summary = summarize(run_dir, cfg)
        found = selection.choices(run_dir, cfg)
        if found:
            summary["chosen_on_validation"] = found
        ranked = tuple(m for m in headline(cfg.task) if m.split("@")[0] in ("hit", "ndcg"))
        intervals = blocks.block_intervals(run_dir, cfg, ranked) if ranked else {}
        text = markdown(summary)
        if any(any(f[ranked[0]]["blocks"] for f in s["strategies"].values()) for s in intervals.values()):
            write_json(run_dir / "blocks.json", intervals)
            text += "\n" + rows_markdown(summary, intervals, run_dir, ranked[:2])
            pooled = blocks.paired_over_seeds(intervals, ranked, cfg.continual.periods.n_periods)
            if pooled:
                summary["paired_over_seeds"] = pooled
                baseline = next(iter(intervals.values()))["baseline"]
                text += "\n" + blocks.paired_over_seeds_markdown(pooled, baseline, ranked)
            text += "\n" + blocks.markdown(intervals, ranked, cfg.continual.periods.n_periods)
            lines, shaded = blocks.bands(intervals, ranked[0], cfg.continual.periods.n_periods)
            title = f"{summary['task']} on {summary['dataset']}, {summary['model']}: model after block t on block t"
            plot_lines(
                [(f"{ranked[0]}, 95% interval", lines)],
                run_dir / "blocks.png",
                title,
                "block t",
                bands=shaded,
                dashed=cfg.continual.baselines,
            )
        if found:
            text += "\n" + selection.choices_markdown(found, cfg.continual.periods.n_periods)
        write_json(run_dir / "results.json", summary)
        force = blocks.proximal_force(run_dir, cfg)
        if force:
            write_json(run_dir / "force.json", force)
            text += "\n" + blocks.force_markdown(force, cfg.continual.periods.n_periods)
        with atomic_path(run_dir / "results.md") as tmp:
            tmp.write_text(text)
        plot(summary, run_dir / "results.png")
    return summary
