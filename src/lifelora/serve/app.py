"""The HTTP API (FastAPI) over a `Recommender`: recommend, score, feedback, versions, health, Prometheus
metrics, the OpenAPI schema and a small web page. Every bad request gets a 4xx with a one-line message."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from lifelora.errors import LifeloraError
from lifelora.serve.feedback import FeedbackEvent
from lifelora.serve.service import Busy, Recommender

OPEN_PATHS = {"/health", "/"}  # answered without the API key: probes, and the page (its requests carry it)
API_KEY_HEADER = "X-API-Key"


class ScoreRequest(BaseModel):
    user: str = Field(min_length=1)
    items: list[str] = Field(min_length=1)


class Event(BaseModel):
    """One thing a user did with an item: a rating, or a click (1) / a shown item not clicked (0)."""

    event_id: str = Field(min_length=1, max_length=200, description="the client's id; a retry is ignored")
    user: str = Field(min_length=1, max_length=200)
    item: str = Field(min_length=1, max_length=200)
    rating: float | None = None
    click: bool | None = None
    timestamp: int = Field(description="when it happened, seconds since 1970")

    @model_validator(mode="after")
    def _one_signal(self) -> Event:
        if (self.rating is None) == (self.click is None):
            raise ValueError("give exactly one of rating and click")
        return self

    def to_event(self) -> FeedbackEvent:
        kind, value = ("rating", self.rating) if self.rating is not None else ("click", float(self.click))
        return FeedbackEvent(self.event_id, self.user, self.item, kind, float(value), self.timestamp)


class FeedbackRequest(BaseModel):
    events: list[Event] = Field(min_length=1)


class _Metrics:
    """The Prometheus series of one app (its own registry: several apps may live in one process)."""

    def __init__(self, recommender: Recommender):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lifelora_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lifelora_request_seconds",
            "request latency",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.events = Counter(
            "lifelora_feedback_events", "feedback events", ["result"], registry=self.registry
        )
        gauge = Gauge("lifelora_active_version", "the active adapter version", registry=self.registry)
        gauge.set_function(lambda: recommender.active)
        queued = Gauge("lifelora_queued_requests", "requests waiting for the model", registry=self.registry)
        queued.set_function(lambda: recommender.status()["queued"])
        batches = Counter("lifelora_batches", "model batches run, by size", ["size"], registry=self.registry)
        self._batches, self._recommender = batches, recommender

    def render(self) -> bytes:
        for size, n in self._recommender.batches.items():
            child = self._batches.labels(str(size))
            child.inc(n - child._value.get())
        return generate_latest(self.registry)


class _BodyLimit:
    """Refuse a request body over `limit` bytes (413) before the app parses it: a declared length at once,
    a streamed (chunked) body as soon as it passes the limit; a body within it is handed on as read."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_json(send, 413, f"request body over {self.limit} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _send_json(send, 413, f"request body over {self.limit} bytes")
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return await self.app(scope, replay, send)


async def _send_json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def create_app(recommender: Recommender, api_key: str | None = None) -> FastAPI:
    """The app; with `api_key`, every endpoint but /health wants it in the X-API-Key header."""
    limits = recommender.limits
    metrics = _Metrics(recommender)
    app = FastAPI(
        title="lifelora",
        summary="An LLM recommender whose LoRA adapter evolves with the feedback it records.",
        version="1",
    )

    @app.middleware("http")
    async def measure_and_guard(request: Request, call_next):
        start = time.perf_counter()
        if api_key is not None and request.url.path not in OPEN_PATHS:
            given = request.headers.get(API_KEY_HEADER, "")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                metrics.requests.labels("refused", "401").inc()
                return _problem(401, f"missing or wrong {API_KEY_HEADER} header")
        response = await call_next(request)
        matched = request.scope.get("route")  # the route's template: unknown paths make no new series
        endpoint = getattr(matched, "path", "other")
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(LifeloraError)
    async def _user_error(_request: Request, exc: LifeloraError):
        return _problem(400, str(exc))

    @app.exception_handler(Busy)
    async def _busy(_request: Request, exc: Busy):
        return _problem(503, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError):
        return _problem(422, _validation_message(exc))

    @app.get("/health")
    async def health() -> dict:
        """Whether the model answers, and which version is active."""
        return {"status": "ok", **recommender.status()}

    @app.get("/recommend")
    async def recommend(
        user: str = Query(min_length=1, max_length=200),
        k: int = Query(10, ge=1, le=limits.max_k),
    ) -> dict:
        """The user's top-k items. A user the data has never seen gets the most popular items."""
        start = time.perf_counter()
        if not recommender.is_known(user):
            items, version, path = (
                recommender.cold_start(k),
                recommender.active,
                "cold-start: popularity",
            )
        else:
            items, version = await asyncio.wrap_future(recommender.recommend(user, k))
            path = "adapter"
        ms = round((time.perf_counter() - start) * 1000, 2)
        return {"user": user, "k": k, "version": version, "path": path, "items": items, "ms": ms}

    @app.post("/score")
    async def score(request: ScoreRequest) -> dict:
        """P(yes) of each item for the user (click-through runs)."""
        if len(request.items) > limits.max_items:
            return _problem(413, f"items: at most {limits.max_items} per request")
        unknown = recommender.unknown_items(request.items)
        if unknown:
            return _problem(422, f"items: {unknown[0]!r} is not an item of {recommender.task.data.name}")
        if not recommender.is_known(request.user):
            scores, version, path = (
                recommender.cold_scores(request.items),
                recommender.active,
                "cold-start: item prior",
            )
        else:
            scores, version = await asyncio.wrap_future(recommender.score(request.user, request.items))
            path = "adapter"
        pairs = [{"item": i, "p_yes": p} for i, p in zip(request.items, scores, strict=True)]
        return {"user": request.user, "version": version, "path": path, "scores": pairs}

    @app.post("/feedback")
    async def feedback(request: FeedbackRequest) -> Any:
        """Record events; answered only once they are committed. A repeated event_id is not stored twice."""
        if len(request.events) > limits.max_events:
            return _problem(413, f"events: at most {limits.max_events} per request")
        unknown = recommender.unknown_items([e.item for e in request.events])
        if unknown:
            return _problem(
                422, f"events: item {unknown[0]!r} is not an item of {recommender.task.data.name}"
            )
        low, high = recommender.rating_range
        off_scale = [e.rating for e in request.events if e.rating is not None and not low <= e.rating <= high]
        if off_scale:
            return _problem(422, f"events: rating {off_scale[0]:g} is off the data's scale {low:g}–{high:g}")
        stored = await run_in_threadpool(recommender.feedback.record, [e.to_event() for e in request.events])
        new = sum(stored)
        metrics.events.labels("stored").inc(new)
        metrics.events.labels("duplicate").inc(len(stored) - new)
        return {"stored": new, "duplicates": len(stored) - new}

    @app.get("/feedback/recent")
    async def recent_feedback(
        n: int = Query(20, ge=1, le=1000), user: str | None = Query(None, max_length=200)
    ) -> dict:
        """The newest events, newest first."""
        frame = await run_in_threadpool(recommender.feedback.recent, n, user)
        return {"events": frame.to_dicts(), "total": await run_in_threadpool(recommender.feedback.count)}

    @app.get("/versions")
    async def versions() -> dict:
        """Every adapter version with its metadata; `active` is the one answering."""
        return {"active": recommender.active, "versions": recommender.versions.listing()}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(files("lifelora.serve").joinpath("page.html").read_text(encoding="utf-8"))

    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
    return app
