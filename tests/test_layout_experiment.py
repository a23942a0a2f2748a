"""The equal-time experiment's report: its table, curve and paired differences from the rows' ranked
lists (no training: the lists are written here)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from lifelora.io import write_json
from lifelora.jobs.layout_experiment import ROWS, report
from lifelora.metrics.ranking import ndcg_gains


def write_ranks(path, ranks, column: str = "rank") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ranks = [None if r is None else int(r) for r in ranks]
    pl.DataFrame(
        {"user_idx": np.arange(len(ranks)), column: ranks}, schema_overrides={column: pl.Int64}
    ).write_parquet(path)


def test_report_pairs_every_llm_row_with_popularity_and_the_adapters_and_layouts_with_each_other(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    data = SimpleNamespace(name="toy", users=pl.DataFrame({"seq_len": [5] * n}))
    baselines = {}
    for name, column in (("most popular", "rank_seen_removed"), ("SASRec (CE)", "rank_seen_removed")):
        baselines[name] = tmp_path / name / "ranked_test.parquet"
        write_ranks(baselines[name], rng.integers(0, 30, n), column)
    llm = {row.name: rng.integers(0, 30, n) for row in ROWS}
    llm["personalized-sequence"] = np.where(np.arange(n) % 2, None, 0)  # half the users at the top
    results = {}
    for row in ROWS:
        ranked = f"{row.name}/eval-5min/ranked_test.parquet"
        write_ranks(tmp_path / ranked, llm[row.name])
        results[row.name] = [{"minutes": 5.0, "steps": 12, "metrics": {"ndcg@10": 0.1}, "ranked": ranked}]
    write_json(tmp_path / "results.json", results)

    summary = report(data, tmp_path, baselines, log=lambda _: None)

    shared, personal, prompt = (row.title for row in ROWS)
    assert set(summary["paired"]) == {
        f"{shared} − most popular", f"{personal} − most popular", f"{prompt} − most popular",
        f"{personal} − {shared}", f"{shared} − {prompt}",
    }  # fmt: skip
    gains = {
        name: ndcg_gains(np.array([10**9 if r is None else r for r in ranks])) for name, ranks in llm.items()
    }
    expected = gains["personalized-sequence"].mean() - gains["lora-sequence"].mean()
    assert summary["paired"][f"{personal} − {shared}"]["difference"] == pytest.approx(expected)
    assert summary["rows"][personal]["ndcg@10"] == pytest.approx(0.5)
    assert summary["rows"][prompt]["steps"] == 12
    markdown = (tmp_path / "results.md").read_text()
    assert f"| {shared} − {prompt} |" in markdown and (tmp_path / "curve.png").is_file()
