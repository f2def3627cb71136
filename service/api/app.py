"""``create_app(settings)``: the FastAPI application of the decoding daemon."""

from __future__ import annotations

import logging
import queue
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from service.api.guard import RequestGuard
from service.api.link import DecoderLink
from service.api.routers import (
    adaptation,
    dashboard,
    docs,
    feed,
    health,
    kinematics,
    metrics,
    model,
    prometheus,
    stream,
)
from service.daemon import Daemon
from service.settings import Settings, resolve_token

__all__ = ["API_PREFIX", "create_app"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and part headers around an upload (bytes)


def create_app(
    settings: Settings,
    decoder: DecoderLink | Daemon | None = None,
    *,
    authorized_slots: int = 32,
    anonymous_slots: int = 16,
) -> FastAPI:
    """The API app, reading the decoder through a :class:`DecoderLink` (``bci serve``: to a
    decoder process).

    Given a :class:`Daemon` (default: ``Daemon(settings)``) instead, the app's lifespan runs
    it on a thread of this process and links to it (``app.state.daemon``): for tests and
    embedding. Without
    ``settings.token`` a token is generated (``app.state.settings`` holds it); every POST
    needs it as a bearer token. Requests whose Host header is not in
    ``settings.allowed_hosts`` get 400. No CORS middleware is installed (same-origin only).
    Outermost, a :class:`RequestGuard` refuses tokenless POSTs before their bodies are read,
    caps bodies (:data:`~service.api.routers.model.MAX_UPLOAD_BYTES` for uploads, 64 KiB
    else) and admits at most ``authorized_slots`` requests with the token and
    ``anonymous_slots`` without at once (others get 503), not counting the event feed, which
    has its own cap.
    """
    settings, generated = resolve_token(settings)
    if generated:
        logger.warning("no token configured: generated one (read app.state.settings.token)")

    link = decoder if isinstance(decoder, DecoderLink) else None
    daemon = None
    if link is None:  # an in-process decoder on a thread, linked by two local queues
        controls: queue.Queue = queue.Queue()
        replies: queue.Queue = queue.Queue()
        daemon = decoder if isinstance(decoder, Daemon) else Daemon(settings)
        daemon.attach_controls(controls, replies)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if daemon is not None:
            daemon.start()
            app.state.link = DecoderLink(settings, daemon.shared, controls, replies)
        try:
            yield
        finally:
            if daemon is not None:
                app.state.link.close()
                daemon.stop()
            uploads = getattr(app.state, "uploads_dir", None)  # made by the first upload
            if uploads is not None:
                shutil.rmtree(uploads, ignore_errors=True)

    app = FastAPI(
        title="bci decoding daemon",
        version="1",
        description="Live decoding of an LSL neural stream with a spiking decoder.",
        lifespan=lifespan,
        docs_url=None,  # /docs: served from the package by routers.docs (no CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.link = link
    app.state.daemon = daemon
    app.state.prometheus = prometheus.build_registry(lambda: app.state.link)
    app.state.feed_clients = feed.FeedClients()  # replace it before serving to change the limit
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    app.add_middleware(
        RequestGuard,
        token=settings.token,
        body_limits={f"{API_PREFIX}/model/upload": model.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD},
        authorized_slots=authorized_slots,
        anonymous_slots=anonymous_slots,
        exclude_prefixes=(f"{API_PREFIX}/feed",),
    )
    for router in (health, kinematics, model, stream, adaptation, metrics, prometheus, feed):
        app.include_router(router.router, prefix=API_PREFIX)
    app.include_router(dashboard.router)
    app.include_router(docs.router)  # /docs with Swagger UI's files from the package
    app.include_router(prometheus.root_router)  # GET /metrics; /api/v1/metrics/prometheus too
    return app
