"""`lifelora update RUN_DIR`: the feedback recorded since the active version becomes a new period, one
continual step (PESO by default) trains from the active version on it, both are evaluated on a held-out
slice of that feedback, and the new adapter is published only if it does at least as well.

The step is the continual engine's own: the served data plus all feedback so far is prepared again as two
given periods (0: everything the active version has seen, 1: the new feedback), the active version is
written as that run's period-0 model, and the strategy trains period 1 exactly as in `lifelora continual`.
Per user, the newest feedback event tests and the one before validates (next-item, PESO's protocol);
click-through takes the new period's samples in time order, the last 10% tested.

Feedback becomes interactions in the order the log recorded it, after every interaction of the served
data (its timestamps are the log's sequence numbers past the data's last timestamp; the clients' own
times stay in the log). A click counts as the top rating, a shown-but-not-clicked item as the lowest;
next-item learns only from ratings and clicks.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from lifelora.continual.config import continual_config_class
from lifelora.continual.engine import FIRST, eval_path, evaluate_model, restore_period, run_strategy
from lifelora.continual.strategies import AnyStrategyConfig, PesoConfig, make_strategy
from lifelora.continual.stream import Stream
from lifelora.data.prepare import Preset, prepare, save_prepared
from lifelora.data.prepared import PreparedData, fingerprints
from lifelora.data.raw import RawDataset
from lifelora.data.store import open_prepared
from lifelora.errors import LifeloraError
from lifelora.io import read_json, write_json
from lifelora.serve.feedback import open_log
from lifelora.serve.service import FEEDBACK_FILE, first_version_meta, metric_values, model_identity
from lifelora.serve.versions import VersionStore
from lifelora.tasks.registry import task_class
from lifelora.tasks.runs import open_task, task_in, trained_config

UPDATES = "updates"
DECISIONS = "decisions.jsonl"


def _default_strategy() -> PesoConfig:
    """PESO with the sized softmax-KL pull: the released softmax-KL's gradient is ~1e-6 of the loss's on
    the released data (BENCHMARKS.md), i.e. no pull at all."""
    return PesoConfig(proximal="softmax_kl_sized", weight=2.0)


class UpdateSettings(BaseModel):
    """How `lifelora update` learns from feedback and when it publishes (`-c FILE` and KEY=VALUE)."""

    model_config = ConfigDict(extra="forbid")

    strategy: AnyStrategyConfig = Field(default_factory=_default_strategy, description="the continual step")
    lr_scale: float = Field(0.1, gt=0, description="the step's learning rate as a fraction of the run's")
    epochs: int | None = Field(None, ge=1, description="epochs over the new period (default: the run's)")
    train_samples: int | None = Field(
        None, ge=1, description="most training samples (default: the run's subset)"
    )
    min_events: int = Field(20, ge=1, description="fewer new events than this: nothing to learn yet")
    min_user_events: int = Field(
        3,
        ge=1,
        description="users with fewer new events neither train nor test in the step (next-item: "
        "the newest tests, the one before validates)",
    )
    metric: str | None = Field(None, description="the deciding metric (default: the task's first headline)")
    tolerance: float = Field(
        0.0, ge=0, description="publish when new ≥ active − tolerance on the deciding metric"
    )
    activate: bool = Field(True, description="make a published version active")


def feedback_interactions(events: pl.DataFrame, negatives: bool, top: float, low: float) -> pl.DataFrame:
    """Events as (user, item, rating, seq): clicks become the `top` rating, skipped items the `low` one;
    without `negatives` (a task that learns only what users chose, next-item) skipped items are left out."""
    rating = (
        pl.when(pl.col("kind") == "click")
        .then(pl.when(pl.col("value") > 0).then(pl.lit(top)).otherwise(pl.lit(low)))
        .otherwise(pl.col("value"))
    )
    frame = events.with_columns(rating=rating.cast(pl.Float64))
    if not negatives:
        frame = frame.filter((pl.col("kind") != "click") | (pl.col("value") > 0))
    return frame.select("user", "item", "rating", "seq")


def with_feedback(
    data: PreparedData, feedback: pl.DataFrame, since: int, directory: Path
) -> tuple[PreparedData, dict]:
    """`data` plus `feedback` prepared again into `directory` as two given periods: 0 = the data and the
    feedback up to `since`, 1 = the feedback after it. Events of users the data does not know are added
    when users carry no features, else left out (counted)."""
    users = data.users.drop("user_idx", "seq_offset", "seq_len")
    items = data.items.drop("item_idx")
    sequence = data.sequences
    base = pl.DataFrame(
        {
            "user": users["user"].gather(data.sequence_users()),
            "item": items["item"].gather(sequence["item_idx"].to_numpy()),
            "rating": sequence["rating"].cast(pl.Float64),
            "timestamp": sequence["timestamp"].cast(pl.Int64),
            "period": pl.Series(np.zeros(sequence.height, dtype=np.int32)),
        }
    )
    known = set(users["user"].to_list())
    newcomers = sorted(set(feedback["user"].to_list()) - known)
    left_out = 0
    if newcomers and users.width > 1:
        left_out = feedback.filter(pl.col("user").is_in(newcomers)).height
        feedback = feedback.filter(~pl.col("user").is_in(newcomers))
    elif newcomers:
        users = pl.concat([users, pl.DataFrame({"user": newcomers}, schema=users.schema)])
    last = int(base["timestamp"].max()) if base.height else 0
    extra = feedback.select(
        "user",
        "item",
        "rating",
        timestamp=pl.col("seq") + last,
        period=(pl.col("seq") > since).cast(pl.Int32),
    )
    codes_file = data.directory / "item_codes.parquet"
    codes = None
    if codes_file.is_file():
        codes = pl.read_parquet(codes_file).join(data.items.select("item_idx", "item"), on="item_idx")
        codes = codes.select("item", "codes")
    raw = RawDataset(
        data.name, pl.concat([base, extra]), items, users, f"{data.directory} + feedback", codes
    ).validate()
    prepared = prepare(raw, Preset.model_validate(data.meta["preset"]))
    prepared["meta"]["extends"] = list(fingerprints(data.meta))  # the served data's lens and codes still fit
    save_prepared(prepared, directory)
    counts = {
        "events_new": int((extra["period"] == 1).sum()),
        "events_before": int((extra["period"] == 0).sum()),
        "events_of_unknown_users_left_out": left_out,
        "users_added": len(newcomers) if users.width == 1 else 0,
    }
    return PreparedData.load(directory), counts


def _step_config(cfg: Any, settings: UpdateSettings, data_dir: Path) -> Any:
    """The run's config as a two-period continual config on the data with feedback."""
    tree = cfg.model_dump(mode="json")
    tree["data_dir"] = str(data_dir)
    if settings.epochs is not None:
        tree["train"]["epochs"] = settings.epochs
    if settings.train_samples is not None:
        tree["subset"]["train"] = settings.train_samples
    tree["subset"]["eval"] = None  # every held-out event
    tree["continual"] = {
        "periods": {"given": 2},
        "strategies": [settings.strategy.model_dump(mode="json")],
        "later_lr": settings.lr_scale,
        "later_lr_for": "all",
        "min_period_items": settings.min_user_events,
        "select": "last",
        "matrix": "same",
        "seeds": [cfg.train.seed],
    }
    return continual_config_class(cfg.task).model_validate(tree)


def _write_first_period(root: Path, adapter_dir: Path, version: int) -> None:
    """The active version as the step's period-0 model (the layout `engine.save_period` writes)."""
    directory = root / FIRST
    if (directory / "done.json").is_file():
        return
    shutil.copytree(adapter_dir, directory / "adapter" / "default", dirs_exist_ok=True)
    write_json(directory / "branches.json", {"branches": ["default"], "trainable": {"default": True}})
    write_json(directory / "done.json", {"model": FIRST, "version": version})


def _log_decision(run_dir: Path, decision: dict) -> None:
    """One line per update in RUN_DIR/updates/decisions.jsonl (appended; the file is the audit trail)."""
    path = run_dir / UPDATES / DECISIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(decision) + "\n")
        handle.flush()


def update(
    run_dir: Path,
    settings: UpdateSettings,
    feedback: str | Path | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """One update of a served run; returns the decision (also appended to updates/decisions.jsonl)."""
    start = time.perf_counter()
    name = task_in(run_dir / "config.yaml")
    cfg = trained_config(name, run_dir)
    task_type = task_class(name)
    versions = VersionStore(run_dir)
    active = versions.active()
    if active is None:
        meta = first_version_meta(run_dir, open_task(name, cfg, log, run_dir), cfg)
        active = versions.publish(run_dir / "adapter", meta, activate=True)
    info = versions.info(active)
    since = int(info.get("feedback_upto", 0))
    with open_log(feedback or run_dir / FEEDBACK_FILE) as events_log:
        upto = events_log.last_seq()
        everything = events_log.since(0, upto)
    new = everything.filter(pl.col("seq") > since)
    decision: dict = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "active_version": active,
        "feedback": {"after_seq": since, "upto_seq": upto, "events": new.height},
    }
    if new.height < settings.min_events:
        decision.update(published=None, reason=f"{new.height} new events, fewer than min_events "
                        f"{settings.min_events}: nothing to learn yet")  # fmt: skip
        _log_decision(run_dir, decision)
        return decision

    number = len(list((run_dir / UPDATES).glob("[0-9]*"))) + 1
    root = run_dir / UPDATES / f"{number:04d}"
    root.mkdir(parents=True, exist_ok=True)
    log(f"update {number}: {new.height} new events since version {active} (feedback seq {since}..{upto}]")
    served = open_prepared(cfg.dataset, cfg.preset, cfg.data_dir)
    threshold = float(served.meta["preset"]["label_threshold"])
    top = float(served.sequences["rating"].max())
    low = float(served.sequences["rating"].min())
    catalogue = served.items["item"].cast(pl.Utf8)
    unknown_items = everything.filter(~pl.col("item").is_in(catalogue.to_list())).height
    everything = everything.filter(pl.col("item").is_in(catalogue.to_list()))
    interactions = feedback_interactions(
        everything, task_type.learns_from_negatives, max(top, threshold + 1), min(low, threshold)
    )
    data, counts = with_feedback(served, interactions, since, root / "data")
    decision["feedback"].update(counts, events_of_unknown_items_left_out=unknown_items)

    step_cfg = _step_config(cfg, settings, root / "data")
    task = task_type.open(step_cfg, data, log, run=run_dir)
    stream = Stream(task, step_cfg, log)
    stream.run_dir = root
    tested = task.size(stream.targets(1, "test"))
    trained = task.size(stream.targets(1, "train"))
    decision["held_out"] = tested
    decision["train_samples"] = trained
    if tested == 0 or trained == 0:
        decision.update(published=None, reason=f"the new period has {trained} training and {tested} held-out "
                        "samples: nothing to learn or judge yet")  # fmt: skip
        _log_decision(run_dir, decision)
        return decision

    seed = cfg.train.seed
    seed_root = root / f"seed-{seed}"
    _write_first_period(seed_root, versions.adapter_dir(active), active)
    strategy = make_strategy(step_cfg.continual.strategies[0])
    run_strategy(stream, strategy, seed, seed_root, log)
    active_adapter = restore_period(seed_root / FIRST, task.backbone.model, None)
    try:
        before = evaluate_model(stream, active_adapter, FIRST, 1, seed_root / "evals")[1]
    finally:
        active_adapter.unload()
    done = read_json(seed_root / strategy.title / "period-1" / "done.json")
    candidate_file = eval_path(seed_root / "evals", step_cfg, done["model"], 1, 1)
    after = read_json(candidate_file)
    active_file = eval_path(seed_root / "evals", step_cfg, FIRST, 1, 1)

    metric = settings.metric or task_type.headline[0]
    publish, reason = decide(before, after, metric, settings.tolerance)
    paired = task.paired_difference(candidate_file.parent, active_file.parent, candidate_file.stem, metric)
    if paired is not None:
        reason += (f"; new − active {paired['difference']:+.4f} [{paired['low']:+.4f}, {paired['high']:+.4f}], "
                   f"p = {paired['p_value']:.2f}, on {tested} held-out")  # fmt: skip
    decision.update(
        strategy=strategy.title,
        metric=metric,
        active=before[metric],
        candidate=after[metric],
        tolerance=settings.tolerance,
        paired=paired,
        candidate_metrics=metric_values(after),
        active_metrics=metric_values(before),
        train=done.get("train"),
    )
    if publish:
        adapter_dir = seed_root / strategy.title / "period-1" / "adapter" / "default"
        meta = {
            **model_identity(task, cfg),
            "period": int(info.get("period", 0)) + 1,
            "parent": active,
            "feedback_upto": upto,
            "data": {"feedback_seq": [since + 1, upto], **decision["feedback"]},
            "metrics": metric_values(after),
            "metrics_split": f"held-out feedback of update {number}",
            "compared_with": {"version": active, "metrics": metric_values(before)},
            "strategy": step_cfg.continual.strategies[0].model_dump(mode="json"),
            "decision": f"published: {metric} {after[metric]:.4f} vs {before[metric]:.4f}",
        }
        decision["published"] = versions.publish(adapter_dir, meta, activate=settings.activate)
        decision["activated"] = settings.activate
    else:
        decision["published"] = None
    decision["reason"] = reason
    decision["seconds"] = round(time.perf_counter() - start, 1)
    write_json(root / "decision.json", decision)
    _log_decision(run_dir, decision)
    return decision


def decide(active: dict, candidate: dict, metric: str, tolerance: float) -> tuple[bool, str]:
    """Publish when the candidate does at least as well as the active version on `metric`, within
    `tolerance` (LogLoss: lower is better, every other metric higher); and why, in words."""
    if metric not in candidate or metric not in active:
        known = ", ".join(k for k, v in candidate.items() if isinstance(v, int | float))
        raise LifeloraError(f"metric: {metric!r} is not one of the evaluated metrics ({known})")
    new, old = float(candidate[metric]), float(active[metric])
    lower_is_better = metric.lower() in ("logloss", "loss")
    gain = old - new if lower_is_better else new - old
    sign = "≤" if lower_is_better else "≥"
    if gain >= -tolerance:
        bound = old + tolerance if lower_is_better else old - tolerance
        return True, f"{metric} {new:.4f} {sign} {bound:.4f} (active {old:.4f}, tolerance {tolerance})"
    return False, f"{metric} {new:.4f} worse than active {old:.4f} beyond tolerance {tolerance}: kept"
