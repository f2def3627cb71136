"""``GET /feed``: a Server-Sent Events stream of decoded bins and daemon status.

Events (``text/event-stream``, each ``data`` one JSON object):

- ``bins`` every ``period_ms`` (default 50 ms): ``{"bins": [{"seq", "t", "values", "target",
  "spikes"}, ...], "missed": n, "status": {"state", "message", "holding", "bins_decoded",
  "model_id"}}``, the bins decoded since the previous event, oldest first (``t`` the source
  timestamp, seconds; ``target`` null without a target; ``spikes`` 0/1 per raster neuron;
  ``missed`` bins that left the daemon's ring before this client read them). The event id is
  the last seq sent, so a reconnecting ``EventSource`` resumes after it (``Last-Event-ID``).
- ``status`` about every 0.5 s: ``{"labels", "stream", "latency", "latency_histogram",
  "adaptation", "activity"}``: the bodies of ``GET /stream``, ``GET /metrics/latency``,
  ``GET /adaptation`` and :meth:`~service.engine.Engine.activity`, and the latencies of the
  decoder's latency window (:meth:`~service.api.link.DecoderLink.latency_samples`) counted in the
  Prometheus buckets (``{"le_ms": [...upper bounds, ms; null for +Inf], "counts": [...]}``).

The feed only reads the decoder's shared state (:class:`~service.api.link.DecoderLink`); it
never waits on or calls into the decoding loop. At most ``FeedClients.limit`` clients are
served at once (503 for the next); a client's slot is freed when it disconnects.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from service.api.deps import LinkDep
from service.api.link import DecoderLink
from service.api.routers.adaptation import get_adaptation
from service.api.routers.metrics import get_latency
from service.api.routers.prometheus import LATENCY_BUCKETS_S, bucket_counts
from service.api.routers.stream import get_stream
from service.shared_state import DecodedBin

__all__ = ["MAX_FEED_CLIENTS", "FeedClients", "router"]

router = APIRouter(tags=["feed"])

MAX_FEED_CLIENTS = 16
STATUS_EVERY_S = 0.5  # seconds between status events


class FeedClients:
    """Count of open feeds, bounded by ``limit``; used on the event loop only (no lock).

    Kept on ``app.state.feed_clients`` (made by :func:`service.api.create_app` with
    :data:`MAX_FEED_CLIENTS`; replace it before serving to change the limit).
    """

    def __init__(self, limit: int = MAX_FEED_CLIENTS) -> None:
        if int(limit) != limit or limit < 1:
            raise ValueError(f"limit must be a positive integer; got {limit!r}")
        self.limit = int(limit)
        self.open = 0

    def acquire(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1


class _FeedResponse(StreamingResponse):
    """A streaming response that frees its client slot however the stream ends."""

    def __init__(self, content: AsyncIterator[str], clients: FeedClients) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._clients = clients

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._clients.release()


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no NaN or Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _floats(array: np.ndarray | None) -> list[float | None] | None:
    return None if array is None else _clean(np.asarray(array, dtype=np.float64).tolist())


def _bin(decoded: DecodedBin) -> dict[str, Any]:
    spikes = decoded.spikes
    return {
        "seq": decoded.seq,
        "t": decoded.timestamp,
        "values": _floats(decoded.values),
        "target": _floats(decoded.target),
        "spikes": [] if spikes is None else spikes.tolist(),
    }


def _brief(link: DecoderLink) -> dict[str, Any]:
    status_doc = link.status()
    engine = status_doc.get("engine") or {}
    return {
        "state": status_doc["state"],
        "message": status_doc["message"],
        "holding": status_doc["holding"],
        "bins_decoded": link.shared.bins_written,
        "model_id": engine.get("model_id"),
    }


def _latency_histogram(link: DecoderLink) -> dict[str, list]:
    """Counts of the latency window per bucket ``(previous bound, bound]``, bounds in ms."""
    _, window = link.latency_samples()
    bounds = np.asarray(LATENCY_BUCKETS_S)
    counts = bucket_counts(window, bounds)
    return {"le_ms": [*(bounds * 1e3).tolist(), None], "counts": counts.tolist()}


def _status(link: DecoderLink) -> dict[str, Any]:
    status_doc = link.status()
    running = status_doc.get("engine") is not None
    return _clean(
        {
            "labels": status_doc["labels"],
            "stream": get_stream(link).model_dump(),
            "latency": get_latency(link).model_dump(),
            "latency_histogram": _latency_histogram(link),
            "adaptation": get_adaptation(link, status_doc).model_dump() if running else None,
            "activity": status_doc.get("activity"),
        }
    )


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _event(name: str, data: str, event_id: int | None = None) -> str:
    """One SSE event carrying the JSON text ``data``."""
    head = f"event: {name}\n" if event_id is None else f"id: {event_id}\nevent: {name}\n"
    return f"{head}data: {data}\n\n"


class _Shared:
    """What every feed client sends alike, made once for all of them: each bin's JSON text
    (by seq, and whether its target was attached yet) and the ``status`` event (at most once
    per ``status_max_age_s``, off the event loop), so more dashboards add little work beside
    the decoding loop."""

    def __init__(self, capacity: int = 4096, status_max_age_s: float = 0.8 * STATUS_EVERY_S):
        self.status_max_age_s = status_max_age_s
        self._bins: dict[tuple[int, bool], str] = {}
        self._order: deque[tuple[int, bool]] = deque()
        self._capacity = capacity
        self._status: str | None = None
        self._status_at = -math.inf

    def bin_text(self, decoded: DecodedBin) -> str:
        key = (decoded.seq, decoded.target is not None)
        text = self._bins.get(key)
        if text is None:
            text = self._bins[key] = _json(_bin(decoded))
            self._order.append(key)
            if len(self._order) > self._capacity:
                del self._bins[self._order.popleft()]
        return text

    async def status_text(self, link: DecoderLink) -> str:
        now = time.monotonic()
        if self._status is None or now - self._status_at > self.status_max_age_s:
            self._status = _json(await run_in_threadpool(_status, link))
            self._status_at = now
        return self._status


async def _events(
    link: DecoderLink, shared: _Shared, period_s: float, history: int, after: int | None
):
    """Yield ``bins`` events every ``period_s`` and a ``status`` event every ~0.5 s."""
    last = after
    status_every = max(1, round(STATUS_EVERY_S / period_s))
    yield "retry: 1000\n\n"  # EventSource reconnect delay, ms
    tick = 0
    next_at = time.monotonic()
    while True:
        latest = link.recent.latest()
        if latest is not None and last is not None and latest.seq < last:
            last = None  # the id is from an earlier daemon: start afresh
        if latest is not None and last is None:
            last = latest.seq - min(history, len(link.recent))
        new = [] if last is None else link.recent.since(last)  # copies only the new bins
        missed = new[0].seq - last - 1 if new else 0
        if new:
            last = new[-1].seq
        texts = ",".join(shared.bin_text(b) for b in new)
        brief = _json(_brief(link))
        yield _event("bins", f'{{"bins":[{texts}],"missed":{missed},"status":{brief}}}', last)
        if tick % status_every == 0:
            yield _event("status", await shared.status_text(link))
        tick += 1
        next_at += period_s
        now = time.monotonic()
        if next_at < now:  # fell behind (e.g. a slow client): keep the period from now
            next_at = now
        await asyncio.sleep(next_at - now)


@router.get(
    "/feed",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "bins and status events"},
        503: {"description": "too many feed clients"},
    },
)
async def feed(
    request: Request,
    link: LinkDep,
    period_ms: Annotated[
        int, Query(ge=20, le=100, description="milliseconds between bins events")
    ] = 50,
    history: Annotated[
        int, Query(ge=0, le=10_000, description="bins already decoded sent in the first event")
    ] = 200,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    """Live decoded bins (every ``period_ms``) and daemon status (every ~0.5 s) as SSE."""
    clients: FeedClients = request.app.state.feed_clients
    if not clients.acquire():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"too many live feed clients (limit {clients.limit}): close another dashboard "
            "tab or feed and retry",
        )
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
    state = request.app.state
    if not hasattr(state, "feed_shared"):
        state.feed_shared = _Shared()
    feed_events = _events(link, state.feed_shared, period_ms / 1e3, history, after)
    return _FeedResponse(feed_events, clients)
