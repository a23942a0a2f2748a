"""`lifelora update`: feedback since the active version becomes a new period, one PESO step trains from
that version, both are judged on held-out feedback, and the decision (published or kept) is logged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serving import tiny_runs

from lifelora.config import load_config
from lifelora.data.prepared import PreparedData
from lifelora.errors import LifeloraError
from lifelora.io import read_json
from lifelora.serve.feedback import FeedbackEvent, FeedbackLog
from lifelora.serve.service import FEEDBACK_FILE
from lifelora.serve.update import UpdateSettings, decide, feedback_interactions, update, with_feedback
from lifelora.serve.versions import VersionStore


@pytest.fixture(scope="module")
def setup(home, tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    runs = tiny_runs(root)
    return runs["next-item"], PreparedData.load(runs["data"])


def _events(data: PreparedData, users: int, per_user: int, start: int = 0) -> list[FeedbackEvent]:
    """Each of the first `users` users rates `per_user` items they have not seen (ids unique per start)."""
    rng = np.random.default_rng(start)
    events = []
    for u in range(users):
        user = data.users["user"][u]
        unseen = data.unseen_items(u)
        for j, item in enumerate(rng.choice(unseen, per_user, replace=False)):
            events.append(
                FeedbackEvent(
                    f"{start}-{u}-{j}", user, data.items["item"][int(item)], "rating", 5.0, 1_800_000_000 + j
                )
            )
    return events


def test_too_little_feedback_is_a_logged_decision_to_wait(setup):
    run, data = setup
    with FeedbackLog(run / FEEDBACK_FILE) as log:
        log.record(_events(data, 2, 2, start=100))
    decision = update(run, UpdateSettings(min_events=50), log=lambda _m: None)
    assert decision["published"] is None and "nothing to learn" in decision["reason"]
    lines = (run / "updates" / "decisions.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["feedback"]["events"] == 4


def test_an_update_trains_from_the_active_version_and_publishes_within_tolerance(setup):
    run, data = setup
    with FeedbackLog(run / FEEDBACK_FILE) as log:
        log.record(_events(data, 12, 4, start=200))
    settings = UpdateSettings(min_events=10, tolerance=1.0, epochs=1)
    decision = update(run, settings, log=lambda _m: None)
    assert decision["published"] == 2, decision
    store = VersionStore(run)
    assert store.active() == 2
    info = store.info(2)
    assert info["parent"] == 1 and info["period"] == 1
    assert info["feedback_upto"] == decision["feedback"]["upto_seq"]
    assert set(info["metrics"]) >= {"ndcg@10", "hit@10"}
    assert decision["held_out"] > 0 and decision["train"]["drift"]["distance"] > 0
    store.verify(2)
    paired = decision["paired"]  # new − active on the same held-out users, with its interval
    assert paired["low"] <= paired["difference"] <= paired["high"] and "p = " in decision["reason"]
    # the next update starts after what version 2 learnt from: nothing new yet
    again = update(run, settings, log=lambda _m: None)
    assert again["feedback"]["events"] == 0 and again["published"] is None


def test_the_new_period_holds_the_new_feedback_after_the_served_data(setup, tmp_path):
    _, data = setup
    import polars as pl

    from lifelora.serve.feedback import COLUMNS

    rows = [(1, "e1", data.users["user"][0], data.items["item"][3], "rating", 4.0, 5, 0.0),
            (2, "e2", data.users["user"][0], data.items["item"][4], "click", 1.0, 6, 0.0),
            (3, "e3", "brand-new", data.items["item"][5], "click", 0.0, 7, 0.0)]  # fmt: skip
    events = pl.DataFrame(rows, schema=COLUMNS, orient="row")
    interactions = feedback_interactions(events, False, 5.0, 1.0)
    assert interactions["rating"].to_list() == [4.0, 5.0]  # a skipped item is not a next item
    prepared, counts = with_feedback(data, interactions, since=1, directory=tmp_path / "with")
    assert counts["events_new"] == 1 and counts["events_before"] == 1
    periods = prepared.sequences["period"].to_numpy()
    assert periods.sum() == 1 and prepared.sequences.height == data.sequences.height + 2
    ctr = feedback_interactions(events, True, 5.0, 1.0)
    assert ctr["rating"].to_list() == [4.0, 5.0, 1.0]


@pytest.mark.parametrize(
    ("active", "candidate", "metric", "tolerance", "published"),
    [
        ({"ndcg@10": 0.20}, {"ndcg@10": 0.21}, "ndcg@10", 0.0, True),
        ({"ndcg@10": 0.20}, {"ndcg@10": 0.20}, "ndcg@10", 0.0, True),
        ({"ndcg@10": 0.20}, {"ndcg@10": 0.19}, "ndcg@10", 0.0, False),
        ({"ndcg@10": 0.20}, {"ndcg@10": 0.19}, "ndcg@10", 0.02, True),
        ({"LogLoss": 0.50}, {"LogLoss": 0.52}, "LogLoss", 0.0, False),
        ({"LogLoss": 0.50}, {"LogLoss": 0.48}, "LogLoss", 0.0, True),
    ],
)
def test_decide_publishes_only_at_least_as_good_within_tolerance(
    active, candidate, metric, tolerance, published
):
    decision, reason = decide(active, candidate, metric, tolerance)
    assert decision is published
    assert metric in reason


def test_an_unknown_metric_and_a_bad_setting_are_one_line_errors(tmp_path):
    with pytest.raises(LifeloraError, match="metric: 'auc' is not one of"):
        decide({"ndcg@10": 0.2}, {"ndcg@10": 0.2}, "auc", 0.0)
    with pytest.raises(LifeloraError, match="tolerance"):
        load_config(UpdateSettings, None, ["tolerance=-1"])
    assert load_config(UpdateSettings, "update/peso.yaml", ["strategy.weight=5"]).strategy.weight == 5


def test_the_cli_prints_the_decision_as_json(setup, run_cli):
    run, _ = setup
    result = run_cli("update", run, "min_events=100000")
    assert result.code == 0, result.stderr
    decision = json.loads(result.stdout.strip().splitlines()[-1])
    assert decision["published"] is None
    assert read_json(run / "versions" / "active.json")["active"] >= 1
    bad = run_cli("update", run, "no_such_setting=1")
    assert bad.code == 2 and len(bad.error_lines) == 1


def test_paired_differences_read_each_tasks_own_predictions(tmp_path):
    import polars as pl

    from lifelora.tasks.ctr.task import CTRTask
    from lifelora.tasks.next_item.task import NextItemTask

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir(), theirs.mkdir()
    ranks = {"ours": [0, 1, None, 3], "theirs": [0, None, None, 12]}
    for side, directory in (("ours", ours), ("theirs", theirs)):
        pl.DataFrame({"user_idx": [1, 2, 3, 4], "rank": ranks[side]}).write_parquet(
            directory / "ranked_block-1.parquet"
        )
        scores = [0.9, 0.2, 0.8, 0.3] if side == "ours" else [0.2, 0.9, 0.3, 0.8]
        pl.DataFrame({"sample_id": [1, 2, 3, 4], "label": [1, 0, 1, 0], "score": scores}).write_parquet(
            directory / "predictions_block-1.parquet"
        )
    hits = NextItemTask.paired_difference(None, ours, theirs, "block-1", "hit@10")
    assert hits["difference"] == pytest.approx((3 - 1) / 4)
    assert NextItemTask.paired_difference(None, ours, theirs, "block-1", "mrr") is None
    auc = CTRTask.paired_difference(None, ours, theirs, "block-1", "AUC")
    assert auc["difference"] == pytest.approx(1.0)
    assert CTRTask.paired_difference(None, ours, theirs, "block-1", "LogLoss") is None
