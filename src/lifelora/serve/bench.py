"""`lifelora bench serve`: the HTTP server's latency and throughput against the model alone.

A served run (by default SmolLM2 on ML-100K, click-through, with a fresh untrained LoRA adapter: serving
speed does not depend on the adapter's weights) is put behind the real app, in this process (uvicorn in a
thread, on a free loopback port). Client threads (httpx) send `/recommend` requests of known users; in the
middle, a second version (the adapter with its weights perturbed) is published and activated, as
`lifelora update` does, and the server picks it up as it would from another process, so the figures
include a hot swap.

The same requests are also answered offline: by the task directly, on the same model, in the batches the
worker forms (at most `max_batch` requests, never more than there are clients), without HTTP, queueing or
threads. The requests are split into rounds, each answered offline and then served, so that load from
other jobs, which comes and goes within seconds, falls on both sides alike (see `lifelora.bench.timing`:
timed one after the other, a burst on one side swung this ratio sevenfold). `served_vs_offline` is the
offline ÷ served time over all rounds (1: the server adds nothing to the model's own time; target ≥ 0.8),
with the per-round median, min and max beside it.

Results are appended to `benchmarks/results/serve.json` like every `lifelora bench NAME` (the benchmarks
live in `lifelora.bench`, which must not import the serving layer: this one lives here).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lifelora.errors import LifeloraError
from lifelora.io import write_json
from lifelora.precision import resolve
from lifelora.run import environment
from lifelora.serve.load import Clients, InProcessServer, Result
from lifelora.serve.service import Limits, Recommender
from lifelora.serve.versions import VersionStore

DEFAULT_OUT = Path("benchmarks/results/serve.json")
DATASET = "ml-100k"
RUN_CONFIG = "llm/lora-ml100k-demo.yaml"  # SmolLM2, a LoRA on q/v, 5 history items
# (requests, clients, rounds, click-through candidates per request): quick takes 2–3 minutes on 2 CPU cores
QUICK = (24, 4, 3, 20)
FULL = (192, 8, 8, 50)
K = 10
TARGET = 0.8  # served_vs_offline at least this
PERTURB_STD = 0.02
SWAP_TIMEOUT_S = 600
FRESH_NOTE = (
    "the adapter is a fresh, untrained LoRA (and version 2 that LoRA perturbed): serving speed does not "
    "depend on its weights, so the figures hold for a trained one"
)
RUN_NOTE = "version 2 is the run's adapter perturbed: serving speed does not depend on the weights"
SERVED_RUN_SKIP = ("versions", "feedback.sqlite*", "updates")  # the copy starts without versions/feedback


def run_serve_bench(
    quick: bool,
    out: Path | None = None,
    log: Callable[[str], object] = print,
    run_dir: Path | None = None,
    dataset: str | None = None,
    requests: int | None = None,
    clients: int | None = None,
) -> dict:
    """Measure the server (see the module docstring); append the result to `out` (default
    benchmarks/results/serve.json) and return the figures. `run_dir`: serve a copy of that trained run
    instead of a fresh SmolLM2 LoRA (the run itself is not changed); `dataset` overrides ML-100K for the
    fresh run; `requests` and `clients` override the preset's."""
    if run_dir is not None and dataset is not None:
        raise LifeloraError("bench serve: --dataset applies to the fresh SmolLM2 run, not to a given run")
    n_requests, n_clients, n_rounds, candidates = QUICK if quick else FULL
    n_requests, n_clients = requests or n_requests, clients or n_clients
    if n_requests < 2 or n_clients < 1:
        raise LifeloraError("bench serve: at least 2 requests and 1 client")
    n_rounds = min(n_rounds, n_requests // 2)
    load_start = os.getloadavg()[0]
    limits = Limits(candidates=candidates)
    with tempfile.TemporaryDirectory(prefix="lifelora-bench-serve-") as tmp:
        work = Path(tmp)
        if run_dir is None:
            served, note = _fresh_run(work / "run", dataset or DATASET, log), FRESH_NOTE
        else:
            served, note = _copy_run(Path(run_dir), work / "run"), RUN_NOTE
        recommender = Recommender(served, limits, work / "feedback.sqlite", log)
        try:
            second = _perturbed_copy(recommender, work / "version-2")
            users = _users(recommender, n_requests)
            batch = min(limits.max_batch, n_clients)
            log(
                f"bench serve: {n_requests} /recommend requests (k={K}) from {n_clients} clients on "
                f"{recommender.task.backbone.name} ({recommender.task_name}, {recommender.task.data.name}), "
                f"in {n_rounds} rounds of offline then served"
            )
            rounds = _measure(recommender, users, n_clients, n_rounds, batch, second, log)
            precision = resolve(recommender.cfg.scoring_precision, "cpu")
            model, task = recommender.task.backbone.name, recommender.task_name
            data = recommender.task.data.name
            batches = dict(sorted(recommender.batches.items()))
        finally:
            recommender.close()
    offline_s, served_s = sum(rounds["offline_s"]), sum(rounds["served_s"])
    ratios = [o / s for o, s in zip(rounds["offline_s"], rounds["served_s"], strict=True)]
    latencies = rounds["latencies_ms"]
    figures = {
        "quick": quick,
        "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "requests_per_s": round(n_requests / served_s, 3),
        "failed": rounds["failed"],
        "served_vs_offline": round(offline_s / served_s, 3),
        "served_vs_offline_target": TARGET,
        "served_vs_offline_rounds": {
            "median": round(statistics.median(ratios), 3),
            "min": round(min(ratios), 3),
            "max": round(max(ratios), 3),
            "rounds": len(ratios),
        },
        "served_s": round(served_s, 3),
        "offline_s": round(offline_s, 3),
        "requests": n_requests,
        "clients": n_clients,
        "k": K,
        "model": model,
        "task": task,
        "dataset": data,
        "precision": precision,
        "max_batch": limits.max_batch,
        "max_wait_ms": limits.max_wait_ms,
        "offline_batch": batch,
        "batch_sizes": {str(size): n for size, n in batches.items()},
        "recommend_options": recommender.recommend_options,
        **({"errors": rounds["errors"]} if rounds["errors"] else {}),
        "swap": rounds["swap"],
        "torch_threads": torch.get_num_threads(),
        "note": note,
    }
    _record(out or DEFAULT_OUT, figures, run_dir, dataset)
    _print_table(figures)
    return figures


# --- the served run -------------------------------------------------------------------------------------


def _fresh_run(run_dir: Path, dataset: str, log) -> Path:
    """A click-through run directory on `dataset` whose adapter is a fresh (untrained) LoRA of SmolLM2."""
    from lifelora.config import load_config, shipped_config
    from lifelora.data.store import open_prepared
    from lifelora.run import record_run
    from lifelora.tasks.ctr.config import CTRConfig
    from lifelora.tasks.ctr.task import CTRTask
    from lifelora.tasks.jobs import build

    cfg = load_config(CTRConfig, shipped_config(RUN_CONFIG), [f"dataset={dataset}"])
    data = open_prepared(cfg.dataset, cfg.preset, cfg.data_dir, prepare_missing=True)
    task = CTRTask(data, cfg.model, log=log)
    run_dir.mkdir(parents=True)
    record_run(run_dir, cfg, "lifelora bench serve")
    adapter = build(task, cfg)  # also makes the item vectors the prompts retrieve with (cached)
    try:
        adapter.save(run_dir / "adapter")
    finally:
        adapter.unload()
    return run_dir


def _copy_run(source: Path, run_dir: Path) -> Path:
    if not (source / "config.yaml").is_file():
        raise LifeloraError(f"{source}: not a run directory (no config.yaml)")
    shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns(*SERVED_RUN_SKIP))
    return run_dir


@torch.no_grad()
def _perturbed_copy(recommender: Recommender, out: Path) -> Path:
    """The served adapter with N(0, PERTURB_STD²) added to every weight, saved to `out` (version 2).

    Done before any request is submitted (the worker is idle, waiting for one); the live weights are put
    back from the version's snapshot afterwards."""
    adapter = recommender.adapter
    live = adapter.branch_parameters()
    generator = torch.Generator().manual_seed(0)
    for value in live.values():
        value.add_(PERTURB_STD * torch.randn(value.shape, generator=generator).to(value))
    try:
        adapter.save(out)
    finally:
        for name, value in recommender.weights[recommender.live].items():
            live[name].copy_(value)
    return out


def _users(recommender: Recommender, n: int) -> list[str]:
    """`n` known users (distinct while there are enough), a fixed random choice."""
    known = sorted(recommender.known_users)
    if not known:
        raise LifeloraError(f"{recommender.run_dir}: its data has no user with a history to recommend for")
    picks = np.random.default_rng(0).choice(len(known), size=n, replace=n > len(known))
    return [known[int(i)] for i in picks]


# --- offline and served, round by round ---------------------------------------------------------------


def _measure(
    recommender: Recommender,
    users: list[str],
    n_clients: int,
    n_rounds: int,
    batch: int,
    second: Path,
    log,
) -> dict:
    """Each round's requests answered offline, then served; during the middle round, once half of its
    requests are answered, `second` is published and activated (the next round starts once it is active:
    offline answers must not run while the worker swaps the adapter)."""
    store = VersionStore(recommender.run_dir)
    swap_round = n_rounds // 2
    measured: dict = {"offline_s": [], "served_s": [], "latencies_ms": [], "failed": 0}
    versions: Counter = Counter()
    errors: Counter = Counter()
    swap: dict = {}
    after: list[Result] = []  # answers to requests sent once the new version was active
    _offline_seconds(recommender, users[:1], batch)  # warm-up
    with InProcessServer(recommender) as base, Clients(base, n_clients, K, SWAP_TIMEOUT_S) as clients:
        clients.warm()
        for index, part in enumerate(np.array_split(np.array(users, dtype=object), n_rounds)):
            part = [str(u) for u in part]
            measured["offline_s"].append(_offline_seconds(recommender, part, batch))
            on_half = (lambda: _publish(recommender, store, second, swap)) if index == swap_round else None
            served = clients.send(part, on_half)
            measured["served_s"].append(served["wall_s"])
            measured["latencies_ms"] += [r.ms for r in served["results"]]
            measured["failed"] += sum(not r.ok for r in served["results"])
            versions.update(r.version for r in served["results"] if r.version is not None)
            errors.update(r.error for r in served["results"] if r.error)
            if index == swap_round:
                active_at = _wait_active(swap, log)
                after += [r for r in served["results"] if r.start >= active_at]
            elif index > swap_round:
                after += served["results"]
    measured["swap"] = {
        "version": swap["version"],
        "publish_to_active_s": round(swap["active_at"] - swap["published"], 3),
        "answers_per_version": {str(v): n for v, n in sorted(versions.items())},
        "sent_after_activation": len(after),
        "old_version_after_activation": sum(r.ok and r.version != swap["version"] for r in after),
    }
    measured["errors"] = dict(errors)
    return measured


def _publish(recommender: Recommender, store: VersionStore, second: Path, swap: dict) -> None:
    """Publish and activate `second`; a thread notes in `swap` when the server has made it active."""
    swap["published"] = time.perf_counter()
    swap["version"] = number = store.publish(
        second, {"note": "bench serve: the adapter perturbed"}, activate=True
    )

    def watch() -> None:
        deadline = time.monotonic() + SWAP_TIMEOUT_S
        while recommender.active != number and time.monotonic() < deadline:
            time.sleep(0.002)
        if recommender.active == number:
            swap["active_at"] = time.perf_counter()

    swap["watcher"] = threading.Thread(target=watch, name="bench-swap", daemon=True)
    swap["watcher"].start()


def _wait_active(swap: dict, log) -> float:
    """When (perf_counter) the published version became active on the server."""
    swap["watcher"].join()
    number, active_at = swap["version"], swap.get("active_at")
    if active_at is None:
        raise LifeloraError(f"bench serve: version {number} was not active {SWAP_TIMEOUT_S} s after publish")
    log(f"bench serve: version {number} active {active_at - swap['published']:.2f} s after its publish began")
    return active_at


@torch.inference_mode()
def _offline_seconds(recommender: Recommender, users: list[str], batch: int) -> float:
    """Seconds to answer the requests by calling the task directly, `batch` requests at a time as the
    worker batches them (click-through: one user after another over the same candidates as served;
    next-item: `recommend_many` on the batch). The worker must be idle: it shares the model."""
    task, cfg, model = recommender.task, recommender.cfg, recommender.adapter.model
    model.eval()
    start = time.perf_counter()
    for i in range(0, len(users), batch):
        group = users[i : i + batch]
        options = recommender.recommend_options
        if task.recommends_together:
            task.recommend_many(model, cfg, group, K, options)
        else:
            for user in group:
                task.recommend(model, cfg, user, K, options)
    return time.perf_counter() - start


# --- results --------------------------------------------------------------------------------------------


def _record(out: Path, figures: dict, run_dir: Path | None, dataset: str | None) -> None:
    """Append {command, date, machine, figures} to `out`, as `lifelora bench NAME` does."""
    history = json.loads(out.read_text()) if out.is_file() else []
    machine = environment()
    command = ["lifelora", "bench", "serve", *(["--quick"] if figures["quick"] else [])]
    command += [f"--dataset {dataset}"] if dataset else []
    command += [f"(run {run_dir})"] if run_dir is not None else []
    entry = {"command": " ".join(command), "date": machine.pop("date"), "machine": machine}
    history.append({**entry, "figures": figures})
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, history)


def _print_table(figures: dict) -> None:
    from rich.table import Table

    from lifelora.report import print_table

    swap, rounds = figures["swap"], figures["served_vs_offline_rounds"]
    verdict = "meets" if figures["served_vs_offline"] >= TARGET else "below"
    table = Table(title=f"lifelora serve: {figures['model']}, {figures['task']} on {figures['dataset']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("requests (clients)", f"{figures['requests']} ({figures['clients']})"),
        ("latency p50 / p99", f"{figures['p50_ms']:.0f} / {figures['p99_ms']:.0f} ms"),
        ("requests per second", f"{figures['requests_per_s']:.2f}"),
        ("failed", str(figures["failed"])),
        ("served ÷ offline", f"{figures['served_vs_offline']:.2f} ({verdict} the {TARGET} target)"),
        ("per round: median", f"{rounds['median']:.2f} ({rounds['min']:.2f}–{rounds['max']:.2f})"),
        ("served / offline time", f"{figures['served_s']:.1f} / {figures['offline_s']:.1f} s"),
        ("swap: publish → active", f"{swap['publish_to_active_s']:.2f} s"),
        ("answers per version", ", ".join(f"v{v}: {n}" for v, n in swap["answers_per_version"].items())),
        (
            "precision, batch",
            f"{figures['precision']}, ≤ {figures['max_batch']} ({figures['max_wait_ms']} ms)",
        ),
        ("load avg start / end", f"{figures['load_avg_1m']['start']} / {figures['load_avg_1m']['end']}"),
    ]
    for row in rows:
        table.add_row(*row)
    print_table(table)
