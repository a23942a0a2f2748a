"""`lifelora continual`: every strategy of a config over every seed on one stream, then the report.

Period 0 is trained once per seed and shared; the strategies then run one after another, each resumable
after its last finished period (`engine`); the report is rewritten after each seed, so a long run shows
its results as they come."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lifelora.continual.baselines import evaluate_baselines
from lifelora.continual.config import ContinualConfig
from lifelora.continual.engine import run_strategy, train_first_period
from lifelora.continual.report import statistics_table, write_report
from lifelora.continual.strategies import make_strategy
from lifelora.continual.stream import Stream, open_stream
from lifelora.errors import LifeloraError
from lifelora.io import write_parquet
from lifelora.report import print_table


def select(cfg: ContinualConfig, strategies: list[str] | None, seeds: list[int] | None) -> ContinualConfig:
    """The config with only the named strategies (by title, in the given order) and the given seeds."""
    continual = cfg.continual
    update: dict = {}
    if strategies:
        known = {s.title: s for s in continual.strategies}
        unknown = [name for name in strategies if name not in known]
        if unknown:
            raise LifeloraError(
                f"--strategies: {unknown[0]!r} is not in the config's strategies ({', '.join(known)})"
            )
        update["strategies"] = [known[name] for name in strategies]
    if seeds:
        update["seeds"] = seeds
    return cfg.model_copy(update={"continual": continual.model_copy(update=update)}) if update else cfg


def run_continual(
    cfg: ContinualConfig,
    run_dir: Path,
    log: Callable[[str], object] = print,
    stream: Stream | None = None,
    report: ContinualConfig | None = None,
) -> dict:
    """Run (or continue) every strategy × seed of `cfg` into `run_dir`; returns the summary of the
    report over `report`'s strategies and seeds (default: `cfg`'s), whatever of them has run."""
    stream = stream or open_stream(cfg, log)
    stream.run_dir = run_dir
    statistics = stream.statistics()
    write_parquet(run_dir / "periods.parquet", statistics)
    print_table(statistics_table(statistics, stream.data.name))
    evaluate_baselines(stream, run_dir, log)
    for seed in cfg.continual.seeds:
        root = run_dir / f"seed-{seed}"
        log(f"seed {seed}: period 0 (shared by every strategy)")
        train_first_period(stream, seed, root, log=log)
        for strategy_cfg in cfg.continual.strategies:
            log(f"seed {seed}: {strategy_cfg.title}")
            run_strategy(stream, make_strategy(strategy_cfg), seed, root, log)
        summary = write_report(run_dir, report or cfg)
    return summary
