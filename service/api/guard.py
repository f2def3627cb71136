"""``RequestGuard``: a pure ASGI middleware that decides, from a request's headers alone, whether
the request may send a body, how large, and whether there is room to serve it.

Decisions, in order, before the app (or anything else) reads a byte of the body:

1. **Token first.** A request with a body-carrying method (anything but GET, HEAD, OPTIONS)
   and without the bearer token gets 401 at once; its body is never read (a client that sent
   ``Expect: 100-continue`` never sends it).
2. **Size.** A declared ``Content-Length`` above the route's cap gets 413 at once; a body
   sent without one (chunked) is counted as it arrives and cut at the cap with 413. Caps are
   per path (``body_limits``), else ``default_body_limit``.
3. **Room.** Requests carrying the token and anonymous ones have separate budgets of
   concurrent requests, so anonymous or slow clients never take the token holder's slots;
   over budget: 503 with ``Retry-After``. Paths under ``exclude_prefixes`` (the event feed,
   which has its own cap) count against neither.
4. **Time.** A body that stalls for ``body_timeout_s`` gets 408. An anonymous request that is
   not finished after ``anonymous_timeout_s`` (e.g. a client that does not read its answer)
   is cut: 503 if nothing was sent yet, else the connection is closed.

Once the guard has answered, whatever the app still tries to send is dropped. The counts live
on the event loop thread, so they need no lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TOKEN_HELP", "Budget", "RequestGuard"]

logger = logging.getLogger(__name__)

BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_HELP = (
    "missing or wrong bearer token: send 'Authorization: Bearer <token>' with the token "
    "printed by 'bci serve'"
)


@dataclass
class Budget:
    """Concurrent requests admitted for one kind of client."""

    size: int
    active: int = 0  # admitted and not finished
    refused: int = 0  # answered 503 since start

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 1:
            raise ValueError(f"a request budget must be a positive integer; got {self.size!r}")


class _Answered(Exception):
    """The guard has sent its own answer; the app's request is abandoned."""


class RequestGuard:
    """Token, body size, concurrency and time limits, decided before a body is read.

    Args:
        app: the wrapped ASGI app.
        token: the bearer token that marks a request as the token holder's.
        body_limits: path -> largest body accepted (bytes).
        default_body_limit: largest body of any other path (bytes).
        authorized_slots: concurrent requests carrying the token.
        anonymous_slots: concurrent requests without it.
        anonymous_timeout_s: longest an anonymous request may take (s).
        body_timeout_s: longest wait for the next part of a body (s).
        exclude_prefixes: path prefixes outside the budgets, matched on segment boundaries
            (``/api/v1/feed`` matches ``/api/v1/feed/x``, not ``/api/v1/feedback``).
        retry_after_s: ``Retry-After`` of a 503 (whole seconds).
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        *,
        body_limits: Mapping[str, int] | None = None,
        default_body_limit: int = 64 * 1024,
        authorized_slots: int = 32,
        anonymous_slots: int = 16,
        anonymous_timeout_s: float = 10.0,
        body_timeout_s: float = 10.0,
        exclude_prefixes: Iterable[str] = (),
        retry_after_s: int = 1,
    ) -> None:
        if not token:
            raise ValueError("the guard needs the API token")
        if int(retry_after_s) != retry_after_s or retry_after_s < 0:
            raise ValueError(f"retry_after_s must be whole seconds >= 0; got {retry_after_s!r}")
        if not (anonymous_timeout_s > 0 and body_timeout_s > 0):
            raise ValueError("timeouts must be > 0 s")
        self.app = app
        self._token = token.encode()
        self.body_limits = dict(body_limits or {})
        self.default_body_limit = int(default_body_limit)
        self.authorized = Budget(authorized_slots)
        self.anonymous = Budget(anonymous_slots)
        self.anonymous_timeout_s = float(anonymous_timeout_s)
        self.body_timeout_s = float(body_timeout_s)
        self.exclude_prefixes = tuple(p.rstrip("/") for p in exclude_prefixes)
        self.retry_after_s = int(retry_after_s)

    def _excluded(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.exclude_prefixes)

    def _has_token(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        path = scope["path"]
        authorized = self._has_token(headers)
        if scope["method"] not in BODYLESS_METHODS and not authorized:
            await _answer(send, 401, TOKEN_HELP, [(b"www-authenticate", b"Bearer")])
            return
        limit = self.body_limits.get(path, self.default_body_limit)
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit():
            await _answer(send, 400, "Content-Length must be a whole number of bytes")
            return
        if int(declared) > limit:
            await _answer(send, 413, _too_large(path, limit))
            return
        if self._excluded(path):
            await self.app(scope, receive, send)
            return
        budget = self.authorized if authorized else self.anonymous
        if budget.active >= budget.size:
            budget.refused += 1
            await self._refuse(send, budget, authorized)
            return
        budget.active += 1
        try:
            await self._serve(scope, receive, send, limit, authorized)
        finally:
            budget.active -= 1

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, limit: int, authorized: bool
    ) -> None:
        """Run the app with the body counted and timed, and its answer dropped once the guard
        has answered instead."""
        state = {"started": False, "answered": False, "received": 0, "body_done": False}

        async def answer(status: int, detail: str) -> None:
            if not state["started"]:
                await _answer(send, status, detail)
            state["answered"] = True
            raise _Answered(detail)

        async def guarded_receive() -> Message:
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                await answer(408, f"request body stalled for {self.body_timeout_s:g} s")
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    await answer(413, _too_large(scope["path"], limit))
                state["body_done"] = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            if state["answered"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            if authorized:
                await self.app(scope, guarded_receive, guarded_send)
            else:
                await asyncio.wait_for(
                    self.app(scope, guarded_receive, guarded_send), self.anonymous_timeout_s
                )
        except _Answered:
            pass
        except asyncio.TimeoutError:
            logger.warning(
                "%s %s cut after %g s", scope["method"], scope["path"], self.anonymous_timeout_s
            )
            if not state["started"] and not state["answered"]:
                await _answer(send, 503, f"request took longer than {self.anonymous_timeout_s:g} s")

    async def _refuse(self, send: Send, budget: Budget, authorized: bool) -> None:
        who = "with the token" if authorized else "without a token"
        await _answer(
            send,
            503,
            f"server busy: {budget.size} requests {who} in progress; retry after "
            f"{self.retry_after_s} s",
            [(b"retry-after", str(self.retry_after_s).encode())],
        )


def _too_large(path: str, limit: int) -> str:
    return f"request body too large: {path} accepts at most {limit:,} bytes"


async def _answer(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
