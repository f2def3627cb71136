"""Bounded concurrency: a pure ASGI middleware that admits at most ``max_requests`` HTTP
requests at a time and answers the others at once with 503 and ``Retry-After``.

A request counts from its arrival until its response has been sent (or its handler failed).
Paths under ``exclude_prefixes`` (whole path segments, e.g. the long-lived event feed, which
has its own cap) never count and are never refused. Lifespan and websocket scopes pass through.
The count lives on the event loop thread, so it needs no lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ConcurrencyLimit"]


class ConcurrencyLimit:
    """Admit at most ``max_requests`` concurrent HTTP requests; refuse the rest with 503.

    Args:
        app: the wrapped ASGI app.
        max_requests: concurrent requests admitted (>= 1).
        exclude_prefixes: path prefixes that bypass the limit, matched on segment boundaries
            (``/api/v1/feed`` matches ``/api/v1/feed`` and ``/api/v1/feed/x``, not
            ``/api/v1/feedback``).
        retry_after_s: value of the ``Retry-After`` header of a refusal (whole seconds).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_requests: int = 32,
        exclude_prefixes: Iterable[str] = (),
        retry_after_s: int = 1,
    ) -> None:
        if int(max_requests) != max_requests or max_requests < 1:
            raise ValueError(f"max_requests must be a positive integer; got {max_requests!r}")
        if int(retry_after_s) != retry_after_s or retry_after_s < 0:
            raise ValueError(f"retry_after_s must be whole seconds >= 0; got {retry_after_s!r}")
        self.app = app
        self.max_requests = int(max_requests)
        self.exclude_prefixes = tuple(p.rstrip("/") for p in exclude_prefixes)
        self.retry_after_s = int(retry_after_s)
        self.active = 0  # requests admitted and not finished
        self.refused = 0  # requests answered 503 since start

    def _excluded(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.exclude_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._excluded(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.active >= self.max_requests:
            self.refused += 1
            await self._refuse(send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "detail": f"server busy: {self.max_requests} requests in progress; retry after "
                f"{self.retry_after_s} s"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(self.retry_after_s).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
