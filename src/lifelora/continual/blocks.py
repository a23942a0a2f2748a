"""Per-block results with 95% intervals over the tested users (PESO's protocol: the model after period t
on block t), rebuilt from the ranked lists a run saves: Hit@K and NDCG@K per block, their mean over blocks
1.., and paired differences of every PESO-style strategy against the single evolving adapter on the same
users. A user's outcome is its target's rank, so any metric and any pairing can be recomputed later."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
from scipy.stats import norm

from lifelora.continual.baselines import baseline_dir
from lifelora.continual.config import ContinualConfig
from lifelora.continual.engine import eval_path, model_after
from lifelora.io import read_json
from lifelora.metrics.intervals import mean_interval, paired_mean_difference
from lifelora.metrics.ranking import NOT_FOUND, metric_gains

Z95 = 1.959963984540054
BASELINE = "finetune"  # paired differences are taken against the single evolving adapter


def outcomes(root: Path, cfg: ContinualConfig, title: str, block: int) -> pl.DataFrame | None:
    """(user_idx, rank) of the model after period `block` on block `block`'s tested users (rank null:
    not in the beam); None until that model has been evaluated."""
    key = model_after(root, title, block)
    if key is None:
        return None
    path = eval_path(root / "evals", cfg, key, block, block)
    ranked = path.parent / f"ranked_{path.stem}.parquet"
    return pl.read_parquet(ranked).select("user_idx", "rank") if ranked.is_file() else None


def gains(ranks: pl.Series, metric: str) -> np.ndarray:
    """Per-user value of `metric` (hit@K or ndcg@K) from 0-based ranks (null: a miss)."""
    return metric_gains(ranks.fill_null(NOT_FOUND).to_numpy(), metric)


def _interval(values: np.ndarray) -> dict:
    mean, low, high = mean_interval(values)
    return {"mean": mean, "low": low, "high": high, "users": len(values)}


def _pooled(per_block: list[dict]) -> dict:
    """The mean over blocks of the block means, with the interval of independent blocks."""
    means = np.array([b["mean"] for b in per_block])
    se2 = [((b["high"] - b["low"]) / (2 * Z95)) ** 2 for b in per_block]  # unclipped halves are ≥ these
    half = Z95 * math.sqrt(sum(se2)) / len(per_block)
    mean = float(means.mean())
    return {
        "mean": mean,
        "low": max(0.0, mean - half),
        "high": min(1.0, mean + half),
        "blocks": len(per_block),
    }


def block_intervals(run_dir: Path, cfg: ContinualConfig, metrics: tuple[str, ...]) -> dict:
    """{seed: {strategy: {metric: {"blocks": {j: interval}, "mean": pooled over blocks 1..}}},
    "paired": {strategy: {metric: {j: difference}}}} for every finished (strategy, seed, block)."""
    n = cfg.continual.periods.n_periods
    baseline = next((s.title for s in cfg.continual.strategies if s.name == BASELINE), None)
    result: dict = {}
    for seed in cfg.continual.seeds:
        root = run_dir / f"seed-{seed}"
        if not root.is_dir():
            continue
        per_seed: dict = {"strategies": {}, "paired": {}, "baseline": baseline}
        for strategy in cfg.continual.strategies:
            tables = {j: outcomes(root, cfg, strategy.title, j) for j in range(n)}
            tables = {j: t for j, t in tables.items() if t is not None}
            per_seed["strategies"][strategy.title] = {m: _figures(tables, m, n) for m in metrics}
            if strategy.name == "peso" and baseline is not None:
                per_seed["paired"][strategy.title] = _paired(root, cfg, strategy.title, baseline, metrics)
        for name in cfg.continual.baselines:  # seed-independent rows, beside every seed's
            tables = {j: baseline_outcomes(run_dir, name, j) for j in range(n)}
            tables = {j: t for j, t in tables.items() if t is not None}
            per_seed["strategies"][name] = {m: _figures(tables, m, n) for m in metrics}
        result[str(seed)] = per_seed
    return result


def baseline_outcomes(run_dir: Path, name: str, block: int) -> pl.DataFrame | None:
    path = baseline_dir(run_dir, name) / f"ranked_block-{block}.parquet"
    return pl.read_parquet(path) if path.is_file() else None


def _figures(tables: dict[int, pl.DataFrame], metric: str, n: int) -> dict:
    """Per block the interval of `metric`, and their pooled mean over blocks 1.. once all are there."""
    blocks = {j: _interval(gains(t["rank"], metric)) for j, t in tables.items() if t.height > 1}
    later = [blocks[j] for j in range(1, n) if j in blocks]
    return {"blocks": blocks, "mean": _pooled(later) if len(later) == n - 1 else None}


def _paired(root: Path, cfg: ContinualConfig, title: str, baseline: str, metrics: tuple[str, ...]) -> dict:
    """Per metric and later block: `title` − `baseline` over the users both were tested on."""
    paired: dict = {metric: {} for metric in metrics}
    for block in range(1, cfg.continual.periods.n_periods):
        ours, theirs = outcomes(root, cfg, title, block), outcomes(root, cfg, baseline, block)
        if ours is None or theirs is None:
            continue
        both = ours.join(theirs, on="user_idx", suffix="_base")
        if both.height < 2:
            continue
        for metric in metrics:
            paired[metric][block] = paired_mean_difference(
                gains(both["rank"], metric), gains(both["rank_base"], metric)
            )
    return paired


def paired_over_seeds(intervals: dict, metrics: tuple[str, ...], n_periods: int) -> dict:
    """{strategy: {metric: difference}}: each PESO-style strategy − the single evolving adapter, the mean
    of its per-block paired differences over blocks 1.. and every seed that has them all, with the
    interval of independent blocks and seeds (given each seed's D1 model: it says whether the strategies
    differ, not how much another D1 would move both)."""
    later = range(1, n_periods)
    parts: dict = {}
    for seed, per_seed in intervals.items():
        for title, paired in per_seed["paired"].items():
            for metric in metrics:
                by_block = paired.get(metric, {})
                if later and all(j in by_block for j in later):
                    entry = parts.setdefault(title, {}).setdefault(metric, {"seeds": [], "blocks": []})
                    entry["seeds"].append(int(seed))
                    entry["blocks"] += [by_block[j] for j in later]
    return {
        title: {metric: _pooled_difference(e["blocks"]) | {"seeds": e["seeds"]} for metric, e in per.items()}
        for title, per in parts.items()
    }


def _pooled_difference(differences: list[dict]) -> dict:
    mean = float(np.mean([d["difference"] for d in differences]))
    se = math.sqrt(sum(((d["high"] - d["low"]) / (2 * Z95)) ** 2 for d in differences)) / len(differences)
    p_value = float(2 * norm.sf(abs(mean) / se)) if se > 0 else float(mean == 0)
    return {"difference": mean, "low": mean - Z95 * se, "high": mean + Z95 * se, "p_value": p_value}


def paired_over_seeds_markdown(pooled: dict, baseline: str, metrics: tuple[str, ...]) -> str:
    lines = table_head(
        f"**Paired with {baseline}, over seeds and blocks 1..** (points of %): the mean of the per-block "
        "paired differences over every seed that has finished all blocks, 95% interval of independent blocks "
        "and seeds, given each seed's D1 model.",
        "strategy",
        ["seeds", *metrics],
    )
    for title, per in pooled.items():
        seeds = ", ".join(map(str, next(iter(per.values()))["seeds"]))
        lines.append(
            f"| {title} | {seeds} | " + " | ".join(difference_cell(per.get(m)) for m in metrics) + " |"
        )
    return "\n".join(lines) + "\n"


def difference_cell(d: dict | None) -> str:
    if d is None:
        return "–"
    return (
        f"{100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] p={d['p_value']:.2f}"
    )


def proximal_force(run_dir: Path, cfg: ContinualConfig) -> dict:
    """{seed: {strategy: {block: {"ratio": mean ‖∇ proximal‖ / ‖∇ task‖ over the block's steps (absent
    without a proximal term), "distance"/"relative": how far the block's training moved the adapter}}}}."""
    result: dict = {}
    for seed in cfg.continual.seeds:
        root = run_dir / f"seed-{seed}"
        per_seed: dict = {}
        for strategy in cfg.continual.strategies:
            rows = {}
            for block in range(1, cfg.continual.periods.n_periods):
                directory = root / strategy.title / f"period-{block}"
                if not (directory / "done.json").is_file():
                    continue
                train = read_json(directory / "done.json")["train"] or {}
                row = dict(train.get("drift", {}))
                curve = directory / "curve.json"
                ratios = [r.get("proximal_grad_ratio") for r in read_json(curve)] if curve.is_file() else []
                ratios = [r for r in ratios if r is not None and math.isfinite(r)]
                if ratios:
                    row["ratio"] = float(np.mean(ratios))
                if row:
                    rows[block] = row
            if rows:
                per_seed[strategy.title] = rows
        if per_seed:
            result[str(seed)] = per_seed
    return result


def force_markdown(force: dict, n_periods: int) -> str:
    """Per seed: the proximal gradient's share of the task's, and how far each block moved the adapter."""
    lines: list[str] = []
    blocks = list(range(1, n_periods))
    for seed, per_seed in force.items():
        lines += table_head(
            f"**The proximal force, seed {seed}**: per block, mean ‖∇ proximal‖ / ‖∇ task‖ over its steps "
            "(– without a proximal term), and ‖Δ‖ of the LoRA factors over the block's training "
            "(relative to where it started).",
            "strategy",
            [f"block {j}" for j in blocks],
        )
        for title, rows in per_seed.items():
            cells = []
            for j in blocks:
                row = rows.get(j)
                if row is None:
                    cells.append("–")
                    continue
                ratio = f"{row['ratio']:.1e}" if "ratio" in row else "–"
                moved = f"{row['distance']:.3g} ({row['relative']:.1%})" if "distance" in row else "–"
                cells.append(f"{ratio}; {moved}")
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def table_head(caption: str, first: str, columns: list[str]) -> list[str]:
    """A caption, then a Markdown table's header and rule."""
    return [caption, "", f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]


def cell(figure: dict | None, scale: float = 100.0) -> str:
    if figure is None:
        return "–"
    return f"{scale * figure['mean']:.2f} [{scale * figure['low']:.2f}, {scale * figure['high']:.2f}]"


def markdown(intervals: dict, metrics: tuple[str, ...], n_periods: int) -> str:
    """Per seed: one table per metric (blocks 1.. and their mean, in %, 95% intervals over users), then
    the paired differences against the single evolving adapter."""
    lines: list[str] = []
    blocks = list(range(1, n_periods))
    for seed, per_seed in intervals.items():
        for metric in metrics:
            lines += table_head(
                f"**{metric} (%), seed {seed}**: the model after block t on block t's tested users, 95% "
                "intervals over users; the mean over blocks 1.. with the interval of independent blocks "
                "(block 0: the D1 model every strategy starts from).",
                "strategy",
                [*(f"block {j}" for j in range(n_periods)), "mean 1.."],
            )
            for title, figures in per_seed["strategies"].items():
                row = figures[metric]
                if not any(j in row["blocks"] for j in blocks):
                    continue
                cells = [cell(row["blocks"].get(j)) for j in range(n_periods)]
                lines.append(f"| {title} | " + " | ".join(cells) + f" | {cell(row['mean'])} |")
            lines.append("")
        for title, paired in per_seed["paired"].items():
            if not any(paired.values()):
                continue
            lines += table_head(
                f"**{title} − {per_seed['baseline']} (points of %), seed {seed}**, paired over the same "
                "users (95% interval, p):",
                "metric",
                [f"block {j}" for j in blocks],
            )
            for metric in metrics:
                cells = [difference_cell(paired[metric].get(j)) for j in blocks]
                lines.append(f"| {metric} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def bands(intervals: dict, metric: str, n_periods: int) -> tuple[dict, dict]:
    """The first seed's per-block means and (low, high) bands of `metric`, per strategy, for a plot;
    a strategy with no block but the shared block 0 yet is left out (it would only repeat D1's point)."""
    if not intervals:
        return {}, {}
    per_seed = next(iter(intervals.values()))
    lines, shaded = {}, {}
    for title, figures in per_seed["strategies"].items():
        blocks = figures[metric]["blocks"]
        if any(j > 0 for j in blocks) or (blocks and n_periods == 1):
            lines[title] = _series(blocks, "mean", n_periods)
            shaded[title] = (_series(blocks, "low", n_periods), _series(blocks, "high", n_periods))
    return lines, shaded


def _series(blocks: dict, key: str, n_periods: int) -> list[float]:
    return [blocks[j][key] if j in blocks else math.nan for j in range(n_periods)]
