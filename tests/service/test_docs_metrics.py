"""``/docs`` with no internet (headless Chromium, every request off 127.0.0.1 refused) and
Prometheus at ``/metrics`` beside its older path, on a real uvicorn server."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Route, expect, sync_playwright
from prometheus_client.parser import text_string_to_metric_families
from serving import run_server

from service.api import create_app
from service.api.link import DecoderLink
from service.settings import Settings
from service.shared_state import SharedState

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """An API app linked to a shared block that the test writes (no decoder process)."""
    shared = SharedState.create(2, latency_capacity=100)
    link = DecoderLink(Settings(token="t"), shared, queue.Queue(), queue.Queue())
    try:
        with run_server(create_app(Settings(token="t"), link)) as port:
            yield f"http://127.0.0.1:{port}"
    finally:
        link.close()
        shared.close()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_prometheus_at_metrics_and_at_the_old_path(server: str) -> None:
    root = httpx.get(f"{server}/metrics")
    old = httpx.get(f"{server}/api/v1/metrics/prometheus")
    for response in (root, old):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert samples(root.text) == samples(old.text)  # one registry: the same scrape
    assert samples(root.text)[("bci_daemon_state", (("state", "starting"),))] == 1.0
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/metrics", "/api/v1/metrics/prometheus"} <= set(paths)


def test_docs_assets_come_from_the_package(server: str) -> None:
    page = httpx.get(f"{server}/docs")
    assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text
    assert "cdn." not in page.text and "https://" not in page.text
    script = httpx.get(f"{server}/docs/static/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert httpx.get(f"{server}/docs/static/index.html").status_code == 404  # listed files only
    assert httpx.get(f"{server}/redoc").status_code == 404  # ReDoc would need a CDN


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Chromium at {CHROMIUM}")
def test_docs_render_in_chromium_with_no_network(server: str) -> None:
    refused: list[str] = []

    def local_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("**/*", local_only)
            page.goto(f"{server}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("bci decoding daemon")
            operations = page.locator(".opblock-summary-path")
            expect(operations.filter(has_text="/api/v1/health")).to_have_count(1)
            expect(operations.filter(has_text="/metrics")).not_to_have_count(0)
            assert operations.count() >= 15  # every route of the API is listed
        finally:
            browser.close()
    assert refused == [] and errors == []
