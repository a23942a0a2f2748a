"""The load of `lifelora bench serve`: the app under uvicorn in a thread of this process, and client
threads that send `/recommend` requests and time each answer."""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from collections.abc import Callable

from lifelora.errors import LifeloraError
from lifelora.serve.service import Recommender

# one request: when it was sent (perf_counter), its latency, whether it succeeded, the version that answered
Result = namedtuple("Result", "start ms ok version error")


class Clients:
    """`n` httpx clients (connections kept between rounds) that send `/recommend?k=k` requests in threads."""

    def __init__(self, base: str, n: int, k: int, timeout_s: float):
        import httpx

        self.k = k
        self.http = [httpx.Client(base_url=base, timeout=timeout_s) for _ in range(n)]

    def warm(self) -> None:
        """Open every client's connection (GET /health) before the clock starts."""
        for http in self.http:
            http.get("/health").raise_for_status()

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for http in self.http:
            http.close()

    def send(self, users: list[str], on_half: Callable[[], None] | None = None) -> dict:
        """GET /recommend for each user; `on_half` is called (in this thread) once half are answered."""
        import httpx

        lock, todo, half = threading.Lock(), iter(range(len(users))), threading.Event()
        results: list = [None] * len(users)
        answered = 0

        def client(http: httpx.Client) -> None:
            nonlocal answered
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                start, ok, version, error = time.perf_counter(), False, None, None
                try:
                    response = http.get("/recommend", params={"user": users[i], "k": self.k})
                    ok = response.is_success
                    version = response.json().get("version") if ok else None
                    error = None if ok else f"HTTP {response.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    error = type(exc).__name__
                results[i] = Result(start, (time.perf_counter() - start) * 1000, ok, version, error)
                with lock:
                    answered += 1
                    if answered * 2 >= len(users):
                        half.set()

        threads = [threading.Thread(target=client, args=(http,), name="bench-client") for http in self.http]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        if on_half is not None:
            while not half.wait(0.01) and any(t.is_alive() for t in threads):
                pass
            on_half()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        lost = Result(start, 0.0, False, None, "no answer")
        return {"wall_s": wall, "results": [r or lost for r in results]}


# --- the server -----------------------------------------------------------------------------------------


class InProcessServer:
    """The app under uvicorn in a daemon thread, on a free loopback port; entering gives its URL."""

    def __init__(self, recommender: Recommender):
        import uvicorn

        from lifelora.serve.app import create_app

        app = create_app(recommender)
        self.server = uvicorn.Server(uvicorn.Config(app, port=0, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="bench-uvicorn", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise LifeloraError("bench serve: the server did not start on 127.0.0.1")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
