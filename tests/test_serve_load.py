"""`lifelora serve` as a real process on loopback: concurrent clients through a version published and
activated by another process (no request fails, later answers carry the new version), feedback
acknowledged before a SIGKILL is all in the log afterwards, bad requests and a bad API key get a 4xx
with a message (never a 500), and `lifelora bench serve` on a tiny run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import perturbed_adapter, tiny_runs

from lifelora.serve.feedback import FeedbackLog
from lifelora.serve.versions import VersionStore

KEY = "load-test-key"
CLIENTS = 8
USERS = [str(u) for u in range(1, 21)]  # synthetic users "1".."60" all have a history
ITEMS = [str(i) for i in range(1, 41)]
STARTUP_S = 120
PHASE_CAP_S = 60


@pytest.fixture(scope="module")
def runs(home, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-load")
    runs = tiny_runs(root, ("next-item", "ctr"))
    return {**runs, "v2": perturbed_adapter(runs["next-item"], root / "v2"), "root": root}


def _event(**fields) -> dict:
    return {
        "event_id": "bad-1",
        "user": "3",
        "item": "5",
        "rating": 4.0,
        "timestamp": 1_700_000_000,
        **fields,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LIFELORA_API_KEY"}
    return {**env, "TQDM_DISABLE": "1"}  # LIFELORA_HOME is the module's (the `home` fixture)


class Server:
    """`python -m lifelora serve RUN_DIR ...` on a free loopback port, its output in a log file."""

    def __init__(self, run_dir: Path, log: Path, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lifelora", "serve", str(run_dir), "--port", str(self.port), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(),
            )
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited ({self.proc.returncode}):\n{self.tail()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"the server did not answer /health in {STARTUP_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(runs):
    """The next-item run served with an API key (clients send it in X-API-Key)."""
    served = Server(runs["next-item"], runs["root"] / "server.log", "--api-key", KEY)
    yield served
    served.stop()


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def test_concurrent_clients_see_no_failure_through_a_swap_by_another_process(server, runs):
    store = VersionStore(runs["next-item"])
    before = store.active()
    stop = threading.Event()
    lock = threading.Lock()
    records: list[tuple[str, float, float, int | None, int | None]] = []  # kind, start, end, status, version
    failures: list[str] = []

    def client(c: int) -> None:
        rng = np.random.default_rng(c)
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as http:
            i = 0
            while not stop.is_set():
                i += 1
                start = time.perf_counter()
                try:
                    if i % 3 == 0:
                        kind = "feedback"
                        user, item = str(rng.choice(USERS)), str(rng.choice(ITEMS))
                        event = _event(
                            event_id=f"load-{c}-{i}", user=user, item=item, timestamp=1_700_000_000 + i
                        )
                        response = http.post("/feedback", json={"events": [event]})
                    else:
                        kind = "recommend"
                        user = str(rng.choice(USERS)) if i % 7 else f"new-user-{c}"  # some cold starts
                        response = http.get("/recommend", params={"user": user, "k": 5})
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"client {c}: {type(exc).__name__}: {exc}")
                    continue
                end = time.perf_counter()
                version = (
                    response.json().get("version") if kind == "recommend" and response.is_success else None
                )
                with lock:
                    records.append((kind, start, end, response.status_code, version))
                    if not response.is_success:
                        failures.append(f"client {c}: {kind} → {response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()

    def run_on(seconds: float, enough: Callable[[], bool]) -> None:
        """At least `seconds`, then until `enough()` (at most PHASE_CAP_S: a loaded machine is slow)."""
        start = time.monotonic()
        while time.monotonic() - start < seconds or not enough():
            if time.monotonic() - start > PHASE_CAP_S:
                return
            time.sleep(0.05)

    def recommends(since: float = 0.0) -> int:
        with lock:
            return sum(r[0] == "recommend" and r[1] >= since for r in records)

    active_at = None
    try:
        run_on(1.5, lambda: recommends() >= 2 * CLIENTS)
        number = store.publish(runs["v2"], {"period": 1, "note": "load test"}, activate=True)
        for _ in range(600):  # another process's activation is picked up within ~0.2 s
            if httpx.get(f"{server.url}/health", timeout=10).json()["active_version"] == number:
                active_at = time.perf_counter()
                break
            time.sleep(0.05)
        if active_at is not None:
            run_on(1.5, lambda: recommends(active_at) >= CLIENTS)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert active_at is not None, f"version {number} never became active:\n{server.tail()}"
    assert failures == [], failures[:5]
    answers = [r for r in records if r[0] == "recommend"]
    assert len(answers) >= 3 * CLIENTS and any(r[0] == "feedback" for r in records)
    assert {r[4] for r in answers} >= {before, number}  # answers from both versions
    after = [r for r in answers if r[1] >= active_at]
    assert after and all(r[4] == number for r in after), [r[4] for r in after]
    latencies = [(end - start) * 1000 for _, start, end, _, _ in records]
    print(
        f"\n{len(records)} requests from {CLIENTS} clients, {len(after)} after the swap: "
        f"p50 {_percentile(latencies, 50):.1f} ms, p99 {_percentile(latencies, 99):.1f} ms"
    )


def test_every_acknowledged_feedback_event_survives_a_sigkill(runs, tmp_path):
    log_file = tmp_path / "feedback.sqlite"
    served = Server(runs["next-item"], tmp_path / "server.log", "--feedback", str(log_file))
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(c: int) -> None:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                i += 1
                ids = [f"kill-{c}-{i}-{j}" for j in range(3)]
                users = [USERS[(c + j) % len(USERS)] for j in range(len(ids))]
                events = [
                    _event(event_id=e, user=u, item=ITEMS[i % len(ITEMS)], rating=None, click=j % 2 == 0)
                    for j, (e, u) in enumerate(zip(ids, users, strict=True))
                ]
                try:
                    response = http.post("/feedback", json={"events": events})
                except httpx.HTTPError:
                    continue  # the server is gone: nothing of this request was acknowledged
                if response.status_code == 200:
                    with lock:
                        acked.extend(ids)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 100 and time.monotonic() < deadline and served.proc.poll() is None:
            time.sleep(0.01)
        os.kill(served.proc.pid, signal.SIGKILL)  # while the clients are still writing
        served.proc.wait(timeout=30)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        served.stop()
    with lock:
        acknowledged = set(acked)
    assert len(acknowledged) >= 100, served.tail()
    with FeedbackLog(log_file) as log:
        stored = set(log.since(0)["event_id"].to_list())
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:5]}"


def test_the_api_key_guards_the_real_server(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
        refused = httpx.get(f"{server.url}/recommend", params={"user": "3"}, headers=headers)
        assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
    refused = httpx.post(f"{server.url}/feedback", json={"events": []})
    assert refused.status_code == 401
    ok = httpx.get(f"{server.url}/recommend", params={"user": "3", "k": 2}, headers={"X-API-Key": KEY})
    assert ok.status_code == 200


def test_off_loopback_without_a_key_exits_2_with_one_line(runs):
    result = subprocess.run(
        [sys.executable, "-m", "lifelora", "serve", str(runs["next-item"]), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "API key" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("post", "/feedback", b"{not json", 422, "JSON"),
        ("post", "/feedback", b"\xff\xfe\x00 not utf-8", 4, ""),
        ("post", "/feedback", [1, 2], 422, "body"),
        ("post", "/feedback", {"events": [_event(item="no-such-item")]}, 422, "no-such-item"),
        ("post", "/feedback", {"events": [_event(rating=None)]}, 422, "exactly one of rating and click"),
        ("post", "/feedback", b'{"events": [{"event_id": "n", "user": "3", "item": "5", "rating": NaN, '
                              b'"timestamp": 1}]}', 422, "rating"),
        ("post", "/feedback", {"events": [_event(timestamp=10**30)]}, 4, ""),
        ("post", "/feedback", {"events": [_event(event_id=f"m{i}") for i in range(1001)]}, 413, "1000"),
        ("post", "/feedback", b"x" * ((1 << 20) + 1), 413, "bytes"),
        ("post", "/score", {"user": "3", "items": ["no-such-item"]}, 422, "no-such-item"),
        ("get", "/recommend?user=3&k=1000", None, 422, "k"),
        ("get", "/recommend?user=3&k=abc", None, 422, "k"),
        ("get", "/recommend?user=" + "u" * 500, None, 422, "user"),
    ],
    ids=["malformed-json", "not-utf8", "not-an-object", "unknown-item", "no-signal", "nan-rating",
         "huge-timestamp", "too-many-events", "oversized", "score-unknown-item", "k-too-big", "k-not-int",
         "long-user"],
)  # fmt: skip
def test_bad_requests_to_the_real_server_get_a_4xx_with_a_detail(server, method, path, body, status, message):
    headers = {"X-API-Key": KEY, **JSON}
    if isinstance(body, bytes):
        response = httpx.request(method, server.url + path, content=body, headers=headers, timeout=60)
    else:
        response = httpx.request(method, server.url + path, json=body, headers=headers, timeout=60)
    if status == 4:  # any 4xx
        assert 400 <= response.status_code < 500, response.text
    else:
        assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and message in detail


def test_an_oversized_body_without_a_declared_length_is_refused_not_a_500(server):
    def chunks():  # chunked transfer: no Content-Length for the server to check up front
        for _ in range(20):
            yield b"x" * 65536

    response = httpx.post(
        f"{server.url}/feedback", content=chunks(), headers={"X-API-Key": KEY, **JSON}, timeout=60
    )
    assert response.status_code == 413, response.text
    assert "bytes" in response.json()["detail"]
    assert httpx.get(f"{server.url}/health").status_code == 200  # and the server goes on


def test_bench_serve_on_a_tiny_run(runs, tmp_path, capsys):
    from lifelora.serve.bench import run_serve_bench

    out = tmp_path / "results" / "serve.json"
    figures = run_serve_bench(True, out, lambda _m: None, run_dir=runs["ctr"], requests=64, clients=4)
    assert {"p50_ms", "p99_ms", "requests_per_s", "failed", "served_vs_offline"} <= set(figures)
    assert figures["failed"] == 0
    assert figures["served_vs_offline"] > 0 and figures["requests_per_s"] > 0
    assert figures["served_vs_offline_rounds"]["rounds"] == 3 and "errors" not in figures
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert figures["requests"] == 64 and figures["clients"] == 4 and figures["task"] == "ctr"
    swap = figures["swap"]
    assert swap["old_version_after_activation"] == 0
    assert sum(swap["answers_per_version"].values()) == 64
    assert swap["publish_to_active_s"] is not None and "2" in swap["answers_per_version"]
    history = json.loads(out.read_text())
    assert history[-1]["figures"] == figures and history[-1]["machine"]["cpu_count"]
    assert not (runs["ctr"] / "versions").exists()  # a copy of the run was served, not the run
    assert "served ÷ offline" in capsys.readouterr().out
