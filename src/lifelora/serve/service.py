"""The recommender behind the server: one task, one backbone and one live adapter, owned by one worker
thread that runs requests in micro-batches.

Hot swap without dropping a request: every request is stamped with the version active when it arrives,
and a batch only ever holds requests of one version. Versions are kept as copies of the adapter's weights;
before a batch the worker copies its version's weights into the live adapter (a few MB for a LoRA), so a
request started on version 3 finishes on version 3 even if version 4 became active meanwhile. A new
version's weights are read by the same worker between batches (the adapter is unloaded and the version
loaded on the bare backbone, the only step that works for every adapter kind), and only then made active.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from lifelora.adapters import Adapter, load
from lifelora.data.embedded import EMBEDDED
from lifelora.errors import LifeloraError
from lifelora.io import read_json
from lifelora.serve.feedback import FeedbackLog, open_log
from lifelora.serve.versions import VersionStore
from lifelora.tasks.base import Task
from lifelora.tasks.runs import open_task, task_in, trained_config

FEEDBACK_FILE = "feedback.sqlite"
POLL_S = 0.2  # how often the active version is looked up on disk (another process may switch it)
CONTROL_POLL_S = 0.05  # how long an idle worker waits for a request before looking for a version to load


class Limits(BaseModel):
    """What one request may ask for, and how requests are batched."""

    max_k: int = Field(100, ge=1, description="largest k of /recommend")
    max_items: int = Field(200, ge=1, description="most items of one /score, most click-through candidates")
    max_events: int = Field(1000, ge=1, description="most events of one /feedback")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body")
    max_batch: int = Field(8, ge=1, description="most requests run together")
    max_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits to fill")
    max_queue: int = Field(1024, ge=1, description="requests waiting beyond this are refused (503)")
    candidates: int = Field(50, ge=1, description="click-through: popular unseen items the LLM re-ranks")


class Busy(Exception):
    """The request queue is full."""


@dataclass
class Job:
    kind: str  # "recommend" or "score"
    version: int
    args: dict
    future: Future = field(default_factory=Future)

    def key(self) -> tuple:
        return (self.kind, self.version)


def first_version_meta(run_dir: Path, task: Task, cfg: Any) -> dict:
    """What version 1 (the trained run's own adapter) records: where it comes from and how it scored."""
    metrics_file = run_dir / "metrics.json"
    summary = read_json(metrics_file) if metrics_file.is_file() else {}
    split = cfg.eval.split
    metrics = summary.get("metrics", {}).get(split, {})
    return {
        **model_identity(task, cfg),
        "period": 0,
        "data": {"dataset": task.data.name, "interactions": task.data.sequences.height},
        "metrics": metric_values(metrics),
        "metrics_split": split,
        "note": f"the trained run {run_dir.name}",
    }


BOOKKEEPING = ("block", "after_period", "seconds", "tokens_per_s", "users_per_s", "samples_per_s")


def metric_values(metrics: dict) -> dict:
    """The metrics of an evaluation (no timings or counters), NaN (undefined: gAUC with one label) as None."""
    return {
        k: (None if v != v else v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in BOOKKEEPING
    }


def model_identity(task: Task, cfg: Any) -> dict:
    """The base model, task and adapter kind a version belongs to (every version of a run shares them)."""
    asset = EMBEDDED.get(cfg.model)
    revision = f"{asset.requirement} sha256:{asset.sha256[:16]}" if asset else None
    return {
        "task": task.name,
        "base_model": task.backbone.base_model_name,
        "base_model_revision": revision,
        "adapter_kind": cfg.adapter.kind,
    }


def _like_rates(data) -> np.ndarray:
    """Per item, the share of its samples labelled positive (the overall share for items without any)."""
    samples = data.samples
    n = data.items.height
    items = samples["item_idx"].to_numpy()
    labels = samples["label"].to_numpy().astype(np.float64)
    seen = np.bincount(items, minlength=n)
    liked = np.bincount(items, weights=labels, minlength=n)
    overall = float(labels.mean()) if len(labels) else 0.0
    return np.where(seen > 0, liked / np.maximum(seen, 1), overall)


class Recommender:
    """Answers recommend and score requests with the active version; `close` stops it."""

    def __init__(
        self,
        run_dir: Path,
        limits: Limits | None = None,
        feedback: str | Path | None = None,
        log: Callable[[str], object] = print,
    ):
        self.run_dir, self.limits, self.log = Path(run_dir), limits or Limits(), log
        self.task_name = task_in(self.run_dir / "config.yaml")
        self.cfg = trained_config(self.task_name, self.run_dir)
        if getattr(self.cfg.adapter, "kind", None) is None:
            raise LifeloraError(f"{run_dir}: the run has no adapter to serve")
        self.task = open_task(self.task_name, self.cfg, log, self.run_dir)
        self.versions = VersionStore(self.run_dir)
        if self.versions.active() is None:
            meta = first_version_meta(self.run_dir, self.task, self.cfg)
            number = self.versions.publish(self.run_dir / "adapter", meta, activate=True)
            log(f"published the run's adapter as version {number}")
        self.feedback: FeedbackLog = open_log(feedback or self.run_dir / FEEDBACK_FILE)
        data = self.task.data
        self.counts = np.bincount(data.sequences["item_idx"].to_numpy(), minlength=data.items.height)
        self.popular = np.argsort(-self.counts, kind="stable")
        self.like_rate = _like_rates(data)
        ratings = data.sequences["rating"]
        self.rating_range = (float(ratings.min()), float(ratings.max())) if ratings.len() else (0.0, 0.0)
        self.item_ids = data.items["item"].to_numpy().astype(str)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        self.known_users = set(data.users.filter(data.users["seq_len"] > 0)["user"].cast(str).to_list())
        self.titles = self._titles()
        # a task that ranks a candidate pool (click-through) re-ranks the user's most popular unseen items
        self.recommend_options = {"pool": "popular", "candidates": self.limits.candidates}

        self.task.before_adapter(self.cfg)
        number = self.versions.active()
        self.adapter: Adapter = load(self.task.backbone.model, self.versions.adapter_dir(number))
        self.weights: dict[int, dict[str, torch.Tensor]] = {number: self.adapter.snapshot()}
        self.live = self.active = number
        self.activation_error: str | None = None
        self.served: Counter = Counter()  # requests answered per version
        self.batches: Counter = Counter()  # batch sizes
        self._queue: queue.Queue = queue.Queue(maxsize=self.limits.max_queue)
        self._control: queue.Queue = queue.Queue()  # versions to load
        self._held: deque[Job] = deque()  # taken from the queue, waiting for a batch of their kind
        self._pending: Counter = Counter()  # requests per version not answered yet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._active_stamp = self._stamp()
        self._worker = threading.Thread(target=self._work, name="lifelora-model", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="lifelora-versions", daemon=True)
        self._worker.start()
        self._watcher.start()

    # --- requests -------------------------------------------------------------------------------------

    def is_known(self, user: str) -> bool:
        return user in self.known_users

    def recommend(self, user: str, k: int) -> Future:
        """A future of (rows, version): the top-k items of a known user (`cold_start` for others)."""
        return self._submit("recommend", {"user": user, "k": k})

    def score(self, user: str, items: Sequence[str]) -> Future:
        """A future of (P(yes) per item, version)."""
        return self._submit("score", {"user": user, "items": list(items)})

    def cold_start(self, k: int) -> list[dict]:
        """The most popular items (score: their interaction count): what a user the data has never seen gets."""
        return [self._row(rank + 1, int(i), float(self.counts[i])) for rank, i in enumerate(self.popular[:k])]

    def cold_scores(self, items: Sequence[str]) -> list[float]:
        """A user the data has never seen: each item's share of positive labels (its prior P(yes))."""
        return [float(self.like_rate[self.item_index[item]]) for item in items]

    def unknown_items(self, items: Sequence[str]) -> list[str]:
        return [item for item in items if item not in self.item_index]

    def _submit(self, kind: str, args: dict) -> Future:
        with self._lock:
            job = Job(kind, self.active, args)
            self._pending[job.version] += 1
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                self._pending[job.version] -= 1
            raise Busy(f"{self._queue.qsize()} requests are waiting; try again") from None
        return job.future

    # --- the worker -----------------------------------------------------------------------------------

    def _next_batch(self) -> list[Job]:
        """A version to load (first: it never waits behind requests), else up to `max_batch` requests of
        one kind and one version, waiting up to `max_wait_ms` for more."""
        try:
            return [self._control.get_nowait()]
        except queue.Empty:
            pass
        first = self._held.popleft() if self._held else self._queue.get(timeout=CONTROL_POLL_S)
        batch, others = [first], deque()
        while self._held and len(batch) < self.limits.max_batch:
            job = self._held.popleft()
            (batch if job.key() == first.key() else others).append(job)
        deadline = time.perf_counter() + self.limits.max_wait_ms / 1000
        while len(batch) < self.limits.max_batch:
            left = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            (batch if job.key() == first.key() else others).append(job)
        self._held.extendleft(reversed(others))
        return batch

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._next_batch()
            except queue.Empty:
                continue
            if batch[0].kind == "load":
                self._load(batch[0])
                continue
            self._use(batch[0].version)
            self.batches[len(batch)] += 1
            if batch[0].kind == "recommend" and self.task.recommends_together:
                self._answer(batch, partial(self._recommend_together, batch))
            else:  # the task scores one user at a time: each request is answered as soon as it is done
                for job in batch:
                    self._answer([job], partial(self._one, job))

    def _answer(self, jobs: list[Job], compute: Callable[[], list[Any]]) -> None:
        """Run `compute` for `jobs` and settle their futures (an error goes to every one of them)."""
        try:
            with torch.inference_mode():
                self.adapter.model.eval()
                results = compute()
        except Exception as exc:  # the requests get the error, the worker goes on
            results = [exc] * len(jobs)
        with self._lock:
            for job in jobs:
                self._pending[job.version] -= 1
                self.served[job.version] += 1
            self._forget_unused()
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result((result, job.version))

    def _use(self, version: int) -> None:
        if version != self.live:
            live = self.adapter.branch_parameters()
            with torch.no_grad():
                for name, value in self.weights[version].items():
                    live[name].copy_(value)
            self.live = version

    def _recommend_together(self, batch: list[Job]) -> list[list[dict]]:
        """One search over every user of the batch (next-item's beams), each cut to its own k."""
        k = max(job.args["k"] for job in batch)
        users = [job.args["user"] for job in batch]
        found = self.task.recommend_many(self.adapter.model, self.cfg, users, k, self.recommend_options)
        return [self._rows(top, job.args["k"]) for top, job in zip(found, batch, strict=True)]

    def _one(self, job: Job) -> list[Any]:
        model, cfg, user = self.adapter.model, self.cfg, job.args["user"]
        if job.kind == "score":
            return [[float(p) for p in self.task.score_items(model, cfg, user, job.args["items"])]]
        top = self.task.recommend(model, cfg, user, job.args["k"], self.recommend_options)
        return [self._rows(top, job.args["k"])]

    def _rows(self, top, k: int) -> list[dict]:
        table = top.table.head(k)
        ids = table["item"].cast(str).to_list() if "item" in table.columns else None
        if ids is None:
            ids = self.item_ids[table["item_idx"].to_numpy()].tolist()
        return [
            {"rank": int(r), "item": item, "title": title, "score": float(s)}
            for r, item, title, s in zip(table["rank"], ids, table["title"], table[top.score], strict=True)
        ]

    def _row(self, rank: int, item_idx: int, score: float) -> dict:
        return {"rank": rank, "item": self.item_ids[item_idx], "title": self.titles[item_idx], "score": score}

    def _titles(self) -> list[str]:
        items = self.task.data.items
        column = "title" if "title" in items.columns else "item"
        return items[column].cast(str).to_list()

    # --- versions -------------------------------------------------------------------------------------

    def _stamp(self) -> tuple:
        path = self.versions.root / "active.json"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return ()
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def _watch(self) -> None:
        """Follow active.json: a version activated by any process is loaded, then made active here."""
        while not self._stop.wait(POLL_S):
            stamp = self._stamp()
            if stamp == self._active_stamp:
                continue
            self._active_stamp = stamp
            try:
                number = self.versions.active()
            except LifeloraError as exc:
                self.activation_error = str(exc)
                continue
            if number is not None and number != self.active:
                self.switch(number).result()

    def switch(self, number: int) -> Future:
        """Load version `number` (in the worker, before any waiting request) and make it active; a future
        of None."""
        job = Job("load", number, {})
        self._control.put(job)
        return job.future

    def _load(self, job: Job) -> None:
        number = job.version
        try:
            if number not in self.weights:
                self.versions.verify(number)
                base = self.adapter.unload()
                try:
                    self.adapter = load(base, self.versions.adapter_dir(number))
                except Exception:
                    self.adapter = load(base, self.versions.adapter_dir(self.live))
                    raise
                weights = self.adapter.snapshot()
                previous = self.weights[self.live]
                if set(weights) != set(previous) or any(
                    weights[n].shape != previous[n].shape for n in weights
                ):
                    raise LifeloraError(f"version {number}: its adapter's shape differs from the served one")
                with self._lock:
                    self.weights[number] = weights
                self.live = number
            with self._lock:
                self.active = number
                self.activation_error = None
                self._forget_unused()
            self.log(f"version {number} is active")
            job.future.set_result(None)
        except Exception as exc:
            self.activation_error = f"version {number}: {exc}"
            self.log(f"could not activate version {number}: {exc}")
            job.future.set_exception(exc)

    def _forget_unused(self) -> None:
        """Drop the weights of versions that are neither active, live, nor awaited by a request."""
        for number in list(self.weights):
            if number not in (self.active, self.live) and self._pending[number] <= 0:
                del self.weights[number]

    def status(self) -> dict:
        with self._lock:
            return {
                "task": self.task_name,
                "dataset": self.task.data.name,
                "active_version": self.active,
                "loaded_versions": sorted(self.weights),
                "queued": self._queue.qsize() + len(self._held),
                "answered": {str(version): n for version, n in sorted(self.served.items())},
                "activation_error": self.activation_error,
            }

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=10)
        self._watcher.join(timeout=10)
        self.feedback.close()
