"""`lifelora bench serve`: the HTTP server's latency and throughput against the model alone.

A served run (by default SmolLM2 on ML-100K, click-through, with a fresh untrained LoRA adapter: serving
speed does not depend on the adapter's weights) is put behind the real app, in this process (uvicorn in a
thread, on a free loopback port). Client threads (httpx) send `/recommend` requests of known users;
halfway, a second version (the adapter with its weights perturbed) is published and activated, as
`lifelora update` would, so the figures include a hot swap. The same requests are then answered offline:
by the task directly on the same model, in the batches the worker forms (at most `max_batch` requests and
never more than there are clients), without HTTP, queueing or threads. `served_vs_offline` is offline ÷
served wall time: 1 means the server adds nothing to the model's own time; the target is ≥ 0.8.

Results are appended to `benchmarks/results/serve.json` like every `lifelora bench NAME` (the benchmarks
live in `lifelora.bench`, which must not import the serving layer: this one lives here).
"""

from __future__ import annotations

import json
import os
import shutil
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
from lifelora.serve.service import Limits, Recommender
from lifelora.serve.versions import VersionStore

DEFAULT_OUT = Path("benchmarks/results/serve.json")
DATASET = "ml-100k"
RUN_CONFIG = "llm/lora-ml100k-demo.yaml"  # SmolLM2, a LoRA on q/v, 5 history items
# (requests, clients, click-through candidates per request): quick finishes in 1–3 minutes on 2 CPU cores
QUICK = (24, 4, 20)
FULL = (192, 8, 50)
K = 10
TARGET = 0.8  # served_vs_offline at least this
PERTURB_STD = 0.02
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
    n_requests, n_clients, candidates = QUICK if quick else FULL
    n_requests, n_clients = requests or n_requests, clients or n_clients
    if n_requests < 2 or n_clients < 1:
        raise LifeloraError("bench serve: at least 2 requests (the swap is halfway) and 1 client")
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
                f"{recommender.task.backbone.name} ({recommender.task_name}, {recommender.task.data.name})"
            )
            offline_s = _offline_seconds(recommender, users, batch)
            served_figures = _serve(recommender, users, n_clients, second, log)
            precision = resolve(recommender.cfg.scoring_precision, "cpu")
            model, task, data = (
                recommender.task.backbone.name,
                recommender.task_name,
                recommender.task.data.name,
            )
            batches = dict(sorted(recommender.batches.items()))
        finally:
            recommender.close()
    wall = served_figures.pop("wall_s")
    figures = {
        "quick": quick,
        "load_avg_1m": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "p50_ms": served_figures.pop("p50_ms"),
        "p99_ms": served_figures.pop("p99_ms"),
        "requests_per_s": round(n_requests / wall, 3),
        "failed": served_figures.pop("failed"),
        "served_vs_offline": round(offline_s / wall, 3),
        "served_vs_offline_target": TARGET,
        "served_s": round(wall, 3),
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
        **({"candidates": limits.candidates} if task == "ctr" else {}),
        **served_figures,
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


# --- offline: the task alone ----------------------------------------------------------------------------


@torch.inference_mode()
def _offline_seconds(recommender: Recommender, users: list[str], batch: int) -> float:
    """Seconds to answer every request by calling the task directly, `batch` requests at a time as the
    worker batches them (click-through: one user after another over the same candidates as served;
    next-item: `recommend_many` on the batch). One untimed warm-up request first."""
    task, cfg, model = recommender.task, recommender.cfg, recommender.adapter.model
    model.eval()

    def answer(group: list[str]) -> None:
        if recommender.task_name == "ctr":
            for user in group:
                task.recommend(model, cfg, user, K, {"items": recommender._candidates(user)})
        else:
            task.recommend_many(model, cfg, group, K, {})

    answer(users[:1])
    start = time.perf_counter()
    for i in range(0, len(users), batch):
        answer(users[i : i + batch])
    return time.perf_counter() - start


# --- served: HTTP clients against the app ---------------------------------------------------------------


class _Server:
    """The app under uvicorn in a daemon thread, on a free loopback port."""

    def __init__(self, recommender: Recommender):
        import uvicorn

        from lifelora.serve.app import create_app

        config = uvicorn.Config(
            create_app(recommender), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="bench-uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise LifeloraError("bench serve: the server did not start on 127.0.0.1")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _serve(recommender: Recommender, users: list[str], n_clients: int, second: Path, log) -> dict:
    """Latencies of the requests sent by `n_clients` threads, a new version published and activated after
    half of them are answered; `wall_s` from the first request to the last answer."""
    import httpx

    n = len(users)
    lock = threading.Lock()
    todo = iter(range(n))
    answered = 0
    half = threading.Event()
    ready = threading.Barrier(n_clients + 1)
    # per request: (start, end, ok, version or None)
    results: list[tuple[float, float, bool, int | None] | None] = [None] * n
    errors: Counter = Counter()

    def client(base: str) -> None:
        nonlocal answered
        with httpx.Client(base_url=base, timeout=600) as http:
            try:
                http.get("/health")  # the connection is open before the clock starts
            finally:
                ready.wait(timeout=600)
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                start = time.perf_counter()
                try:
                    response = http.get("/recommend", params={"user": users[i], "k": K})
                    ok = response.is_success
                    version = response.json().get("version") if ok else None
                    if not ok:
                        errors[f"HTTP {response.status_code}"] += 1
                except (httpx.HTTPError, ValueError) as exc:
                    ok, version = False, None
                    errors[type(exc).__name__] += 1
                results[i] = (start, time.perf_counter(), ok, version)
                with lock:
                    answered += 1
                    if answered >= n // 2:
                        half.set()

    store = VersionStore(recommender.run_dir)
    with _Server(recommender) as base:
        threads = [
            threading.Thread(target=client, args=(base,), name=f"bench-client-{c}") for c in range(n_clients)
        ]
        for thread in threads:
            thread.start()
        ready.wait(timeout=600)
        start = time.perf_counter()
        while not half.wait(0.05) and any(t.is_alive() for t in threads):
            pass
        published = time.perf_counter()
        number = store.publish(second, {"note": "bench serve: the adapter perturbed"}, activate=True)
        while recommender.active != number and any(t.is_alive() for t in threads):
            time.sleep(0.005)
        active_at = time.perf_counter() if recommender.active == number else None
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    if active_at is not None:
        log(f"bench serve: version {number} active {active_at - published:.2f} s after its publish began")
    done = [r for r in results if r is not None]
    latencies = np.array([(end - begin) * 1000 for begin, end, _, _ in done])
    versions = Counter(v for *_, v in done if v is not None)
    after = [r for r in done if active_at is not None and r[0] >= active_at]
    return {
        "wall_s": wall,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "failed": sum(not ok for _, _, ok, _ in done) + (n - len(done)),
        **({"errors": dict(errors)} if errors else {}),
        "swap": {
            "version": number,
            "publish_to_active_s": round(active_at - published, 3) if active_at is not None else None,
            "answers_per_version": {str(v): c for v, c in sorted(versions.items())},
            "sent_after_activation": len(after),
            "old_version_after_activation": sum(v != number for *_, v in after),
        },
    }


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

    swap = figures["swap"]
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
        ("served / offline time", f"{figures['served_s']:.1f} / {figures['offline_s']:.1f} s"),
        (
            "swap: publish → active",
            f"{swap['publish_to_active_s']} s" if swap["publish_to_active_s"] is not None else "–",
        ),
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
