"""Tests for the live dashboard: headless Chromium (Playwright) against a real uvicorn server
decoding a SessionPlayer stream with adaptation on. Saves a screenshot to
``artifacts/dashboard.png`` (the README's ``docs/dashboard.png`` is a copy of one)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright
from serving import N_CHANNELS, run_server, train_checkpoint, wait_for

from bci.checkpoint import load_checkpoint, load_decoder, save_checkpoint
from service.api import create_app
from service.daemon import Daemon
from service.settings import Settings
from streams.player import SessionPlayer, simulate_stream
from streams.synthetic import SyntheticConfig

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dashboard-token-123"
WAIT_MS = 30_000  # generous: a loaded 2-core machine

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


@dataclass
class Dashboard:
    page: Page
    errors: list[str]
    url: str
    ids: dict[str, str]
    paths: set[str]
    stream: str
    player: SessionPlayer


def start_player(name: str) -> SessionPlayer:
    """The simulated population looping under ``name`` (source_id ``bci-player-<name>``)."""
    config = SyntheticConfig(n_channels=N_CHANNELS, duration_s=30.0, seed=3)
    player = simulate_stream(config, name=name, speed=1.0, loop=True)
    player.start()
    return player


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    models = tmp_path_factory.mktemp("models")
    ids = {}
    for name, seed in (("a", 0), ("b", 1)):
        path = train_checkpoint(models / f"{name}.safetensors", seed)
        checkpoint = load_checkpoint(path)  # re-saved with test metrics for the page to show
        metrics = {"test": {"snn": {"r2": 0.5 + seed / 10}}}
        save_checkpoint(path, checkpoint.model, kinematics_labels=("vx", "vy"), metrics=metrics)
        ids[name] = load_decoder(path).model_id
    name = f"bci-test-dash-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        stream=name,
        source_id=f"bci-player-{name}",
        model=models / "a.safetensors",
        models_dir=models,
        adapt=True,
        target_stream=f"{name}-kinematics",  # the player's true velocity: the learning target
        token=TOKEN,
        output_name=f"{name}-decoded",
    )
    app = create_app(settings, Daemon(settings))
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} at {message.location.get('url')}")

    players = []
    try:
        with run_server(app) as port, sync_playwright() as playwright:
            url = f"http://127.0.0.1:{port}"
            paths = set(httpx.get(f"{url}/openapi.json").json()["paths"])
            players.append(start_player(name))
            assert wait_for(lambda: httpx.get(f"{url}/api/v1/health").json()["state"] == "decoding")
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1500})
                page.set_default_timeout(WAIT_MS)
                page.on("console", on_console)
                page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
                dashboard = Dashboard(page, errors, url, ids, paths, name, players[0])
                yield dashboard
                players.append(dashboard.player)  # a test may have restarted the stream
                page.close()
            finally:
                browser.close()
    finally:
        for player in players:
            player.stop()


@pytest.fixture
def page(dashboard: Dashboard) -> Page:
    """The dashboard's page, freshly loaded and live, adaptation on and running (whatever
    ran before), its error log empty."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for control in ("enable", "resume"):
        response = httpx.post(f"{dashboard.url}/api/v1/adaptation/{control}", headers=auth)
        assert response.status_code == 200, response.text
    page = dashboard.page
    dashboard.errors.clear()  # each test sees the errors logged from its own page load on
    page.goto(dashboard.url + "/")
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
    return page


def last_seq(page: Page) -> int:
    return int(page.locator("#last-seq").get_attribute("data-seq") or -1)


def test_page_is_live_without_console_errors(dashboard: Dashboard, page: Page) -> None:
    expect(page.locator("#daemon-state")).to_have_attribute("data-state", "decoding")
    assert wait_for(lambda: last_seq(page) >= 0)
    seq, values = last_seq(page), page.locator("#latest-values").text_content()
    # the plotted values move within 2 s (the page's CSP forbids Playwright's eval-based waits)
    expect(page.locator("#last-seq")).not_to_have_attribute("data-seq", str(seq), timeout=2_000)
    expect(page.locator("#latest-values")).not_to_have_text(values, timeout=2_000)
    assert last_seq(page) > seq
    assert page.locator("#traces canvas").count() == 2
    expect(page.locator("#target-note")).to_have_text("")  # targets come with the bins
    expect(page.locator("#model-id")).to_have_text(dashboard.ids["a"])
    expect(page.locator("#model-table")).to_contain_text(dashboard.ids["a"])
    expect(page.locator("#metrics-table")).to_contain_text("test.snn.r2")
    expect(page.locator("#stream-table")).to_contain_text("samples_received")
    expect(page.locator("#stream-table")).to_contain_text("gap_missing_samples")
    expect(page.locator("#latency-table")).to_contain_text("deadline_misses")
    expect(page.locator("#adaptation-table")).to_contain_text("paused")
    expect(page.locator("#rate-summary")).to_contain_text("mean over all 32")
    assert page.locator("#state-banner").is_hidden()
    assert wait_for(lambda: last_seq(page) > 220)  # traces and raster filled
    (ROOT / "artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(ROOT / "artifacts" / "dashboard.png"), full_page=True)
    assert unexpected_errors(dashboard) == []
    assert "/" not in dashboard.paths and "/api/v1/feed" in dashboard.paths


def unexpected_errors(dashboard: Dashboard, *statuses: int) -> list[str]:
    """Errors logged except Chromium's notes on answers with the given statuses (a refused
    control is logged like a failed resource)."""
    allowed = [f"status of {code} " for code in statuses]
    return [e for e in dashboard.errors if not any(a in e for a in allowed)]


def use_token(page: Page, token: str) -> None:
    expect(page.locator("#token-form")).to_be_visible()
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")


def expect_answer(page: Page, status: int, text: str) -> None:
    expect(page.locator("#answer")).to_have_attribute("data-status", str(status))
    expect(page.locator("#answer")).to_contain_text(text)


def test_pause_and_resume_need_the_token(dashboard: Dashboard, page: Page) -> None:
    page.evaluate("sessionStorage.clear()")
    page.click("[data-adapt=pause]")
    use_token(page, "wrong-token")
    expect_answer(page, 401, "bearer token")
    use_token(page, TOKEN)  # a 401 forgets the token and asks again; the pause is retried
    expect_answer(page, 200, "paused over HTTP")
    expect(page.locator("#adaptation-table")).to_contain_text("paused over HTTP")
    assert page.evaluate("sessionStorage.getItem('bci-token')") == TOKEN
    page.click("[data-adapt=resume]")  # the stored token: no form
    expect_answer(page, 200, '"paused": false')
    assert page.locator("#token-form").is_hidden()
    page.evaluate("sessionStorage.setItem('bci-token', 'stale')")
    page.click("[data-adapt=pause]")
    expect_answer(page, 401, "bearer token")
    page.click("#token-cancel")
    assert page.evaluate("sessionStorage.getItem('bci-token')") is None
    assert httpx.get(f"{dashboard.url}/api/v1/adaptation").json()["status"]["paused"] is False
    assert unexpected_errors(dashboard, 401) == []


@pytest.mark.parametrize(
    ("action", "enabled"), [("disable", False), ("enable", True), ("reset", True)]
)
def test_adaptation_controls(dashboard: Dashboard, page: Page, action: str, enabled: bool) -> None:
    page.evaluate(f"sessionStorage.setItem('bci-token', '{TOKEN}')")
    page.click(f"[data-adapt={action}]")
    expect_answer(page, 200, f'"enabled": {str(enabled).lower()}')
    expect(page.locator("#adaptation-table tr").first).to_contain_text(str(enabled).lower())
    page.evaluate("sessionStorage.setItem('bci-token', 'wrong')")
    page.click(f"[data-adapt={action}]")
    expect_answer(page, 401, "bearer token")
    page.click("#token-cancel")
    assert unexpected_errors(dashboard, 401) == []


def test_rollback_and_swap(dashboard: Dashboard, page: Page) -> None:
    page.evaluate(f"sessionStorage.setItem('bci-token', '{TOKEN}')")
    page.click("#rollback")
    expect_answer(page, 409, "no previous model")
    page.evaluate("sessionStorage.setItem('bci-token', 'wrong')")
    page.click("#rollback")
    expect_answer(page, 401, "bearer token")
    page.click("#token-cancel")
    page.evaluate(f"sessionStorage.setItem('bci-token', '{TOKEN}')")
    page.select_option("#model-select", "b.safetensors")
    page.click("#swap")
    expect_answer(page, 200, dashboard.ids["b"])
    expect(page.locator("#model-id")).to_have_text(dashboard.ids["b"])
    page.click("#rollback")
    expect_answer(page, 200, dashboard.ids["a"])
    expect(page.locator("#model-id")).to_have_text(dashboard.ids["a"])
    assert unexpected_errors(dashboard, 401, 409) == []


def test_feed_disconnected_is_shown_and_reconnects(dashboard: Dashboard) -> None:
    browser = dashboard.page.context.browser
    assert browser is not None
    page = browser.new_page()  # its refused requests are not counted as errors
    try:
        page.route("**/api/v1/feed*", lambda route: route.abort())
        page.goto(dashboard.url + "/")
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "disconnected")
        expect(page.locator("#feed-banner")).to_contain_text("Live feed disconnected")
        page.unroute_all()
        # EventSource retries on its own clock (seconds, backing off): generous on a busy box
        expect(page.locator("#feed-state")).to_have_attribute("data-state", "live", timeout=30_000)
        assert page.locator("#feed-banner").is_hidden()
    finally:
        page.close()


def test_stream_lost_is_shown_and_cleared_when_it_returns(dashboard: Dashboard, page: Page) -> None:
    dashboard.player.stop()
    expect(page.locator("#daemon-state")).to_have_attribute("data-state", "stream-lost")
    expect(page.locator("#state-banner")).to_contain_text("Stream lost")
    expect(page.locator("#daemon-state")).to_contain_text("holding")
    dashboard.player = start_player(dashboard.stream)  # the same source_id comes back
    expect(page.locator("#daemon-state")).to_have_attribute("data-state", "decoding")
    expect(page.locator("#state-banner")).to_be_hidden()
    assert unexpected_errors(dashboard, 401, 409) == []
