"""Tests for service.api.guard: tokens, body caps, budgets and timeouts against a real
uvicorn server, with raw sockets where a client must not send (or must stall) its body."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import FastAPI, Request
from serving import run_server, wait_for

from service.api import create_app
from service.api.guard import Budget, RequestGuard
from service.settings import Settings

pytestmark = pytest.mark.timeout(60)

TOKEN = "guard-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLOTS = 2
BODY_LIMIT = 1000


class Gated:
    """A test app: /slow blocks until ``gate`` opens, /echo returns the body's size,
    /sleep sleeps (async) for longer than the anonymous timeout."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = {"slow": 0, "feed": 0, "echo": 0}
        self._lock = threading.Lock()
        app = FastAPI()
        app.get("/slow")(self._waiter("slow"))
        app.get("/feed/events")(self._waiter("feed"))
        app.get("/fast")(lambda: {"ok": True})

        @app.post("/echo")
        async def echo(request: Request) -> dict[str, int]:
            self.entered["echo"] += 1
            return {"bytes": len(await request.body())}

        @app.get("/sleep")
        async def sleep() -> dict[str, bool]:
            await asyncio.sleep(2.0)
            return {"slept": True}

        self.guard = RequestGuard(
            app,
            TOKEN,
            default_body_limit=BODY_LIMIT,
            authorized_slots=SLOTS,
            anonymous_slots=SLOTS,
            anonymous_timeout_s=1.0,
            body_timeout_s=1.0,
            exclude_prefixes=("/feed",),
        )

    def _waiter(self, kind: str) -> Callable[[], dict[str, str]]:
        def wait() -> dict[str, str]:
            with self._lock:
                self.entered[kind] += 1
            assert self.gate.wait(20.0)
            return {"kind": kind}

        return wait


@pytest.fixture
def served() -> Iterator[tuple[Gated, int, httpx.Client]]:
    gated = Gated()
    with (
        run_server(gated.guard) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client,
    ):
        yield gated, port, client
        gated.gate.set()


def raw_request(port: int, head: str, body: bytes = b"", pause_s: float = 0.0) -> str:
    """Send ``head`` (and ``body``, after ``pause_s``) on a fresh socket; the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as sock:
        sock.sendall(head.encode())
        time.sleep(pause_s)
        if body:
            sock.sendall(body)
        return sock.recv(65536).decode(errors="replace").split("\r\n")[0]


def test_a_tokenless_post_is_refused_before_its_body_is_sent(served) -> None:
    gated, port, _ = served
    head = (
        "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 300000000\r\n"
        "Expect: 100-continue\r\n\r\n"
    )
    assert raw_request(port, head) == "HTTP/1.1 401 Unauthorized"  # no body was ever sent
    wrong = head.replace("Expect", "Authorization: Bearer nope\r\nExpect")
    assert raw_request(port, wrong) == "HTTP/1.1 401 Unauthorized"
    assert gated.entered["echo"] == 0


def test_bodies_over_the_cap_are_413_declared_or_not(served) -> None:
    _, port, client = served
    head = (
        f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {BODY_LIMIT + 1}\r\nExpect: 100-continue\r\n\r\n"
    )
    assert raw_request(port, head) == "HTTP/1.1 413 Request Entity Too Large"
    chunked = client.post("/echo", headers=AUTH, content=iter([b"x" * 600, b"x" * 600]))
    assert chunked.status_code == 413
    assert f"at most {BODY_LIMIT:,} bytes" in chunked.json()["detail"]
    assert client.post("/echo", headers=AUTH, content=b"x" * BODY_LIMIT).json() == {
        "bytes": BODY_LIMIT
    }


def test_a_stalled_body_is_408(served) -> None:
    _, port, _ = served
    head = (
        f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Length: 10\r\n\r\n12345"
    )
    assert raw_request(port, head) == "HTTP/1.1 408 Request Timeout"


def test_anonymous_clients_never_take_the_token_holders_slots(served) -> None:
    gated, _, client = served
    with ThreadPoolExecutor(2 * SLOTS + 2) as pool:
        slow = [pool.submit(client.get, "/slow") for _ in range(SLOTS)]
        assert wait_for(lambda: gated.entered["slow"] == SLOTS, 10.0)
        refused = client.get("/fast")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert f"{SLOTS} requests without a token" in refused.json()["detail"]
        assert client.get("/fast", headers=AUTH).json() == {"ok": True}  # own budget
        held = [pool.submit(client.get, "/slow", headers=AUTH) for _ in range(SLOTS)]
        assert wait_for(lambda: gated.entered["slow"] == 2 * SLOTS, 10.0)
        assert client.get("/fast", headers=AUTH).status_code == 503
        feeds = [pool.submit(client.get, "/feed/events") for _ in range(2)]
        assert wait_for(lambda: gated.entered["feed"] == 2, 10.0)  # outside both budgets
        gated.gate.set()
        assert [f.result().status_code for f in slow + held + feeds] == [200] * (2 * SLOTS + 2)
    assert gated.guard.anonymous.refused == 1 and gated.guard.authorized.refused == 1
    assert wait_for(lambda: gated.guard.anonymous.active == gated.guard.authorized.active == 0)


def test_an_anonymous_request_is_cut_at_its_deadline_a_token_holders_is_not(served) -> None:
    _, _, client = served
    cut = client.get("/sleep")
    assert cut.status_code == 503 and "longer than 1 s" in cut.json()["detail"]
    assert client.get("/sleep", headers=AUTH).json() == {"slept": True}


def test_create_app_installs_the_guard_outside_the_host_check() -> None:
    app = create_app(Settings(token="t"), authorized_slots=7, anonymous_slots=3)
    outer = app.user_middleware[0]
    assert outer.cls is RequestGuard
    assert outer.kwargs["token"] == "t"
    assert (outer.kwargs["authorized_slots"], outer.kwargs["anonymous_slots"]) == (7, 3)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Budget(0), "positive integer"),
        (lambda: Budget(1.5), "positive integer"),
        (lambda: RequestGuard(FastAPI(), ""), "token"),
        (lambda: RequestGuard(FastAPI(), "t", retry_after_s=-1), "whole seconds"),
        (lambda: RequestGuard(FastAPI(), "t", body_timeout_s=0), "timeouts"),
    ],
)
def test_bad_arguments_are_refused(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
