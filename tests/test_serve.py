"""`lifelora serve`: the API on tiny random models — recommend (beams, cold start), score, feedback,
versions switched while requests run (none fails, each finishes on the version it started on), and every
bad request a 4xx with a message."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from serving import perturbed_adapter, tiny_runs

from lifelora.serve.app import create_app
from lifelora.serve.service import Limits, Recommender
from lifelora.serve.versions import VersionStore
from lifelora.tasks.ctr.ranking import popular_candidates


def _span(data, user: str) -> tuple[int, int]:
    row = data.users.row(data.user_index(user), named=True)
    return int(row["seq_offset"]), int(row["seq_len"])


@pytest.fixture(scope="module")
def runs(home, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    return {**tiny_runs(root, ("next-item", "ctr")), "root": root}


@pytest.fixture(scope="module")
def served(runs):
    recommender = Recommender(runs["next-item"], Limits(max_batch=4, max_wait_ms=20), log=lambda _m: None)
    yield recommender, TestClient(create_app(recommender))
    recommender.close()


def test_recommend_answers_with_version_one_and_titles(served):
    recommender, client = served
    response = client.get("/recommend", params={"user": "3", "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == 1 and body["path"] == "adapter"
    assert [row["rank"] for row in body["items"]] == [1, 2, 3, 4, 5]
    assert all(row["title"] and row["item"] for row in body["items"])
    direct = recommender.task.recommend(recommender.adapter.model, recommender.cfg, "3", 5, {})
    assert [row["item"] for row in body["items"]] == direct.table["item"].cast(str).to_list()


def test_an_unknown_user_gets_the_cold_start_path(served):
    recommender, client = served
    body = client.get("/recommend", params={"user": "somebody-new", "k": 3}).json()
    assert body["path"].startswith("cold-start")
    assert [row["item"] for row in body["items"]] == recommender.item_ids[recommender.popular[:3]].tolist()


def test_feedback_is_stored_once_and_listed(served):
    _, client = served
    event = {"event_id": "e-1", "user": "3", "item": "5", "rating": 4.0, "timestamp": 1_700_000_000}
    first = client.post("/feedback", json={"events": [event]})
    again = client.post("/feedback", json={"events": [event]})
    assert first.json() == {"stored": 1, "duplicates": 0}
    assert again.json() == {"stored": 0, "duplicates": 1}
    recent = client.get("/feedback/recent", params={"n": 5}).json()
    assert recent["events"][0]["event_id"] == "e-1"


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "message"),
    [
        ("post", "/feedback", b"{not json", 422, "JSON"),
        ("post", "/feedback", {"events": [{"event_id": "x", "user": "3", "item": "no-such-item",
                                          "click": True, "timestamp": 1}]}, 422, "no-such-item"),
        ("post", "/feedback", {"events": [{"event_id": "x", "user": "3", "item": "5",
                                          "timestamp": 1}]}, 422, "exactly one of rating and click"),
        ("post", "/feedback", {"events": []}, 422, "events"),
        ("get", "/recommend?user=3&k=1000", None, 422, "k"),
        ("get", "/recommend", None, 422, "user"),
        ("post", "/score", {"user": "3", "items": ["5"]}, 400, "does not score"),
        ("post", "/feedback", b"x" * (2 << 20), 413, "bytes"),
    ],
    ids=["malformed-json", "unknown-item", "no-signal", "no-events", "k-too-big", "no-user",
         "score-on-next-item", "oversized"],
)  # fmt: skip
def test_bad_requests_get_a_4xx_with_a_message(served, method, path, payload, status, message):
    _, client = served
    if isinstance(payload, bytes):
        response = client.request(method, path, content=payload, headers={"content-type": "application/json"})
    else:
        response = client.request(method, path, json=payload)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_health_metrics_and_openapi(served):
    _, client = served
    assert client.get("/health").json()["active_version"] >= 1
    client.get("/recommend", params={"user": "3", "k": 2})
    assert sum(client.get("/health").json()["answered"].values()) >= 1
    text = client.get("/metrics").text
    assert 'lifelora_requests_total{endpoint="/recommend",status="200"}' in text
    assert "lifelora_active_version" in text
    schema = client.get("/openapi.json").json()
    assert {"/recommend", "/score", "/feedback", "/health", "/metrics", "/versions"} <= set(schema["paths"])


def test_an_api_key_guards_everything_but_health(runs):
    recommender = Recommender(runs["next-item"], log=lambda _m: None)
    try:
        client = TestClient(create_app(recommender, api_key="s3cret"))
        assert client.get("/health").status_code == 200
        refused = client.get("/recommend", params={"user": "3"})
        assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
        assert (
            client.get("/recommend", params={"user": "3"}, headers={"X-API-Key": "wrong"}).status_code == 401
        )
        ok = client.get("/recommend", params={"user": "3", "k": 2}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
    finally:
        recommender.close()


def test_click_through_scores_are_the_tasks_probabilities(runs):
    recommender = Recommender(runs["ctr"], log=lambda _m: None)
    try:
        client = TestClient(create_app(recommender))
        body = client.post("/score", json={"user": "3", "items": ["5", "7", "9"]}).json()
        direct = recommender.task.score_items(
            recommender.adapter.model, recommender.cfg, "3", ["5", "7", "9"]
        )
        assert [s["p_yes"] for s in body["scores"]] == pytest.approx(direct.tolist(), abs=1e-6)
        assert all(0 <= s["p_yes"] <= 1 for s in body["scores"])
        top = client.get("/recommend", params={"user": "3", "k": 4}).json()
        assert top["path"] == "adapter" and len(top["items"]) == 4
        data = recommender.task.data  # the LLM re-ranks the user's most popular unseen items
        pool = popular_candidates(data, data.user_index("3"), recommender.limits.candidates)
        assert {row["item"] for row in top["items"]} <= set(recommender.item_ids[pool])
        assert not set(pool) & set(data.sequences["item_idx"].slice(*_span(data, "3")).to_list())
        cold = client.post("/score", json={"user": "new-user", "items": ["5"]}).json()
        assert cold["path"].startswith("cold-start")
    finally:
        recommender.close()


def test_a_version_switch_drops_no_request_and_each_finishes_on_its_version(runs):
    run = runs["next-item"]
    store = VersionStore(run)
    recommender = Recommender(run, Limits(max_batch=4, max_wait_ms=10), log=lambda _m: None)
    try:
        client = TestClient(create_app(recommender))
        before = client.get("/recommend", params={"user": "4", "k": 5}).json()
        second = store.publish(perturbed_adapter(run, runs["root"] / "v2"), {"period": 1}, activate=False)
        answers, failures = [], []

        def ask():
            for _ in range(6):
                response = client.get("/recommend", params={"user": "4", "k": 5})
                (answers if response.status_code == 200 else failures).append(response)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        recommender.switch(second).result(timeout=60)
        for t in threads:
            t.join(timeout=120)
        assert failures == []
        assert len(answers) == 24
        after = client.get("/recommend", params={"user": "4", "k": 5}).json()
        assert after["version"] == second
        by_version = {r.json()["version"]: [i["item"] for i in r.json()["items"]] for r in answers}
        for version, items in by_version.items():  # every answer equals its version's own answer
            expected = before if version == 1 else after
            assert items == [i["item"] for i in expected["items"]]
        assert [i["item"] for i in after["items"]] != [i["item"] for i in before["items"]]
        assert recommender.switch(1).result(timeout=60) is None  # back: the old weights were kept or reloaded
        again = client.get("/recommend", params={"user": "4", "k": 5}).json()
        assert again["version"] == 1 and again["items"] == before["items"]
    finally:
        recommender.close()


def test_a_version_activated_by_another_process_is_picked_up(runs):
    run = runs["next-item"]
    store = VersionStore(run)
    recommender = Recommender(run, log=lambda _m: None)
    try:
        number = store.publish(
            perturbed_adapter(run, runs["root"] / "v3", seed=11), {"period": 2}, activate=True
        )
        for _ in range(300):
            if recommender.active == number:
                break
            threading.Event().wait(0.05)
        assert recommender.active == number
        store.rollback()
        for _ in range(300):
            if recommender.active != number:
                break
            threading.Event().wait(0.05)
        assert recommender.active == store.active()
    finally:
        recommender.close()
