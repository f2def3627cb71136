"""Tests for service.api.limits: concurrent requests against a real uvicorn server."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import FastAPI
from serving import run_server, wait_for

from service.api import create_app
from service.api.limits import ConcurrencyLimit
from service.settings import Settings

pytestmark = pytest.mark.timeout(60)

LIMIT = 3


class Gated:
    """A test app whose /slow and /feed/events routes block until ``gate`` opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = {"slow": 0, "feed": 0}
        self._lock = threading.Lock()
        app = FastAPI()
        app.get("/slow")(self._waiter("slow"))
        app.get("/feed/events")(self._waiter("feed"))
        app.get("/fast")(lambda: {"ok": True})
        self.limit = ConcurrencyLimit(app, max_requests=LIMIT, exclude_prefixes=("/feed",))

    def _waiter(self, kind: str) -> Callable[[], dict[str, str]]:
        def wait() -> dict[str, str]:
            with self._lock:
                self.entered[kind] += 1
            assert self.gate.wait(20.0)
            return {"kind": kind}

        return wait


def test_the_request_over_the_limit_gets_503_and_feeds_are_exempt() -> None:
    gated = Gated()
    with (
        run_server(gated.limit) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client,
        ThreadPoolExecutor(LIMIT + 3) as pool,
    ):
        slow = [pool.submit(client.get, "/slow") for _ in range(LIMIT)]
        assert wait_for(lambda: gated.entered["slow"] == LIMIT, 10.0)
        assert gated.limit.active == LIMIT
        refused = client.get("/fast")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert f"{LIMIT} requests in progress" in refused.json()["detail"]
        assert client.get("/feedback").status_code == 503  # not under /feed
        feeds = [pool.submit(client.get, "/feed/events") for _ in range(2)]
        assert wait_for(lambda: gated.entered["feed"] == 2, 10.0)  # admitted while full
        gated.gate.set()
        assert [f.result().status_code for f in slow + feeds] == [200] * (LIMIT + 2)
        assert gated.limit.refused == 2
        assert wait_for(lambda: gated.limit.active == 0, 5.0)
        assert client.get("/fast").json() == {"ok": True}


def test_requests_up_to_the_limit_all_succeed() -> None:
    gated = Gated()
    gated.gate.set()
    with (
        run_server(gated.limit) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client,
        ThreadPoolExecutor(LIMIT) as pool,
    ):
        for _ in range(5):
            responses = list(pool.map(lambda _: client.get("/slow"), range(LIMIT)))
            assert [r.status_code for r in responses] == [200] * LIMIT
    assert gated.limit.refused == 0 and gated.limit.active == 0


def test_create_app_installs_the_limit_outside_the_host_check() -> None:
    app = create_app(Settings(token="t"), max_concurrent_requests=7)
    outer = app.user_middleware[0]
    assert outer.cls is ConcurrencyLimit
    assert outer.kwargs == {"max_requests": 7, "exclude_prefixes": ("/api/v1/feed",)}


@pytest.mark.parametrize("kwargs", [{"max_requests": 0}, {"max_requests": 1.5},
                                    {"retry_after_s": -1}])  # fmt: skip
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be"):
        ConcurrencyLimit(FastAPI(), **kwargs)
