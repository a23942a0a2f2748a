"""`lifelora serve`'s web page in a real headless browser (Debian's Chromium driven by Playwright) over a
real uvicorn server on a tiny trained next-item run with two versions: the header, the versions plot and
table, recommendations (adapter and cold start), sending a rating, errors with the server's message, the
API key from the URL fragment, and screenshots that are not blank.

Without /usr/bin/chromium the tests are skipped, unless LIFELORA_REQUIRE_BROWSER=1 (then they fail)."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from serving import perturbed_adapter, tiny_runs

from lifelora.serve.app import create_app
from lifelora.serve.service import Limits, Recommender
from lifelora.serve.versions import VersionStore

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "s3cret"
TIMEOUT_MS = 20_000


def _no_browser(reason: str) -> None:
    if os.environ.get("LIFELORA_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (LIFELORA_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        _no_browser(f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("playwright is not installed")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def recommender(home, tmp_path_factory):
    """A tiny next-item run serving version 2 (a perturbed adapter with metrics) after version 1."""
    root = tmp_path_factory.mktemp("page")
    run = tiny_runs(root)["next-item"]
    served = Recommender(run, Limits(max_batch=4, max_wait_ms=10), log=lambda _m: None)
    try:
        store = VersionStore(run)
        first = store.info(1).get("metrics") or {"ndcg@10": 0.1, "hit@10": 0.2}
        later = {name: value * 0.8 + 0.05 for name, value in first.items()}
        meta = {"period": 1, "metrics": later, "metrics_split": "test", "note": "a perturbed adapter"}
        number = store.publish(perturbed_adapter(run, root / "v2"), meta, activate=True)
        deadline = time.monotonic() + 60
        while served.active != number and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.active == number, served.activation_error
        yield served
    finally:
        served.close()


@contextmanager
def _server(app):
    """`app` on a free local port in a background thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url(recommender):
    with _server(create_app(recommender)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(recommender):
    with _server(create_app(recommender, api_key=API_KEY)) as url:
        yield url


@pytest.fixture
def page(browser, base_url):
    """The page loaded (header filled in); `page.problems` collects console errors and uncaught exceptions."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.problems = []
    tab.on("console", lambda m: tab.problems.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda exc: tab.problems.append(str(exc)))
    response = tab.goto(base_url + "/")
    assert response is not None and response.status == 200
    expect(tab.locator("#active-version")).to_have_text("2")
    yield tab
    context.close()


def _get_json(url: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _recommend(page, user: str, k: int) -> None:
    page.fill("#user", user)
    page.fill("#k", str(k))
    page.click("#recommend-button")


def test_the_page_shows_the_active_version_and_a_plot_and_table_of_the_versions(page, recommender):
    from playwright.sync_api import expect

    expect(page.locator("#dataset")).to_have_text("ml-synthetic")
    expect(page.locator("#task")).to_have_text("next-item")
    expect(page.locator("#versions-table tbody tr")).to_have_count(2)
    rows = page.locator("#versions-table tbody tr")
    expect(rows.first).to_contain_text("active")  # newest first: version 2 is the active one
    expect(rows.first).to_contain_text("a perturbed adapter")
    expect(rows.nth(1)).not_to_contain_text("active")

    listing = recommender.versions.listing()
    names = list(dict.fromkeys(name for v in listing for name in v["metrics"]))
    rates = [n for n in names if "@" in n]  # hit@5, ndcg@10...; and users, seconds, users_per_s, beams
    assert rates and len(rates) < len(names)
    plot = page.locator("#versions-plot svg")
    expect(plot).to_be_visible()
    assert plot.locator("g.legend-entry").count() == len(names)
    assert plot.locator("text.axis-label").all_text_contents() == ["adapter version", "metric value"]
    drawn = plot.locator("g.series").evaluate_all("gs => gs.map(g => g.dataset.metric)")
    assert drawn == rates  # counts and timings would flatten the rates: hidden at first
    for name in drawn:  # one line per metric through both versions, the active one highlighted
        series = plot.locator(f'g.series[data-metric="{name}"]')
        assert series.locator("circle.point").count() == 2
        assert series.locator("polyline").count() == 1
        assert series.locator('circle.point.active[data-version="2"]').count() == 1
    other = next(n for n in names if n not in rates)
    plot.locator(f'g.legend-entry[data-metric="{other}"]').click()  # the legend shows a hidden one
    expect(plot.locator(f'g.series[data-metric="{other}"] circle.point')).to_have_count(2)
    plot.locator(f'g.legend-entry[data-metric="{rates[0]}"]').click()  # and hides a shown one
    expect(plot.locator(f'g.series[data-metric="{rates[0]}"]')).to_have_count(0)
    assert page.locator("#error").is_hidden()
    assert page.problems == []


def test_recommendations_for_a_known_and_an_unknown_user(page):
    from playwright.sync_api import expect

    _recommend(page, "3", 5)
    rows = page.locator("#recommendations tbody tr")
    expect(rows).to_have_count(5)
    expect(page.locator("#rec-path")).to_have_text("adapter")
    expect(page.locator("#rec-version")).to_have_text("2")
    expect(page.locator("#rec-ms")).to_contain_text("ms")
    cells = [rows.nth(i).locator("td").all_text_contents() for i in range(5)]
    assert [c[0] for c in cells] == ["1", "2", "3", "4", "5"]
    assert all(item and title for _, item, title, _ in cells)

    _recommend(page, "somebody-new", 3)
    expect(page.locator("#rec-path")).to_contain_text("cold-start")
    expect(rows).to_have_count(3)
    assert page.problems == []


def test_a_rating_sent_from_the_form_shows_up_in_the_recent_feedback(page, recommender):
    from playwright.sync_api import expect

    page.fill("#fb-user", "3")
    page.fill("#fb-item", "5")
    page.select_option("#fb-rating", "5")
    page.click("#feedback-button")
    expect(page.locator("#feedback-result")).to_contain_text("stored page-")
    event_id = page.locator("#feedback-result").inner_text().split()[-1]
    newest = page.locator("#feedback-table tbody tr").first
    expect(newest).to_have_attribute("data-event-id", event_id)
    assert newest.locator("td").all_text_contents()[2:] == ["3", "5", "rating", "5"]
    stored = recommender.feedback.recent(1).row(0, named=True)
    assert (stored["event_id"], stored["user"], stored["item"], stored["value"]) == (event_id, "3", "5", 5.0)
    assert page.problems == []


def test_a_refused_request_shows_the_servers_message(page, base_url):
    from playwright.sync_api import expect

    status, body = _get_json(base_url + "/recommend?user=3&k=1000")
    assert status == 422
    _recommend(page, "3", 1000)
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text(body["detail"])
    expect(page.locator("#error")).to_contain_text("422")

    page.click("#error-close")
    expect(page.locator("#error")).to_be_hidden()
    page.fill("#fb-user", "3")
    page.fill("#fb-item", "no-such-item")
    page.click("#feedback-button")
    expect(page.locator("#error")).to_contain_text("'no-such-item' is not an item of ml-synthetic")

    _recommend(page, "3", 2)  # the next request that succeeds clears the message
    expect(page.locator("#recommendations tbody tr")).to_have_count(2)
    expect(page.locator("#error")).to_be_hidden()


def test_an_api_key_in_the_url_fragment_goes_with_every_request(browser, keyed_url):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(keyed_url + "/#key=" + API_KEY)
        expect(page.locator("#active-version")).to_have_text("2")
        expect(page.locator("#versions-table tbody tr")).to_have_count(2)
        _recommend(page, "3", 2)
        expect(page.locator("#recommendations tbody tr")).to_have_count(2)
        expect(page.locator("#error")).to_be_hidden()

        page.goto(keyed_url + "/#key=wrong")
        expect(page.locator("#error")).to_contain_text("missing or wrong X-API-Key header")
    finally:
        context.close()


def test_with_an_api_key_the_page_itself_opens_without_one(keyed_url):
    """A browser opening the page cannot send a header: the page holds no data, its requests carry the key."""
    with urllib.request.urlopen(keyed_url + "/", timeout=30) as response:  # raises on a 401
        assert response.status == 200


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path}: not a PNG"
    return struct.unpack(">II", data[16:24])


def _assert_not_blank(path: Path, min_width: int, min_height: int) -> None:
    width, height = _png_size(path)
    assert width >= min_width and height >= min_height, (width, height)
    try:
        from PIL import Image
    except ImportError:
        assert path.stat().st_size > 4096, f"{path}: {path.stat().st_size} bytes, blank?"
        return
    with Image.open(path) as image:
        gray = image.convert("L")
        low, high = gray.getextrema()
        colors = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert high - low > 100, f"{path}: no contrast ({low}..{high})"
    assert colors is None or len(colors) > 20, f"{path}: only {len(colors)} colours"


def test_screenshots_of_the_page_and_the_plot_are_not_blank(page, tmp_path):
    from playwright.sync_api import expect

    _recommend(page, "3", 10)
    expect(page.locator("#recommendations tbody tr")).to_have_count(10)
    shot = tmp_path / "page.png"
    page.screenshot(path=shot, full_page=True)
    _assert_not_blank(shot, 800, 600)
    plot = tmp_path / "plot.png"
    page.locator("#versions-plot svg").screenshot(path=plot)
    _assert_not_blank(plot, 400, 150)
