"""``create_app(settings)``: the FastAPI application of the decoding daemon."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from service.api.limits import ConcurrencyLimit
from service.api.routers import (
    adaptation,
    dashboard,
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


def create_app(
    settings: Settings, daemon: Daemon | None = None, *, max_concurrent_requests: int = 32
) -> FastAPI:
    """The API app; its lifespan starts ``daemon`` (default: ``Daemon(settings)``) and stops
    it on shutdown. Without ``settings.token`` a token is generated (``app.state.settings``
    holds it); every POST needs it as a bearer token. Requests whose Host header is not in
    ``settings.allowed_hosts`` get 400. No CORS middleware is installed (same-origin only).
    At most ``max_concurrent_requests`` requests run at once (others get 503), not counting
    the event feed, which has its own cap.
    """
    settings, generated = resolve_token(settings)
    if generated:
        logger.warning("no token configured: generated one (read app.state.settings.token)")
    daemon = daemon if daemon is not None else Daemon(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        daemon.start()
        try:
            yield
        finally:
            daemon.stop()
            uploads = getattr(app.state, "uploads_dir", None)  # made by the first upload
            if uploads is not None:
                shutil.rmtree(uploads, ignore_errors=True)

    app = FastAPI(
        title="bci decoding daemon",
        version="1",
        description="Live decoding of an LSL neural stream with a spiking decoder.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.daemon = daemon
    app.state.prometheus = prometheus.build_registry(daemon)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    app.add_middleware(
        ConcurrencyLimit,
        max_requests=max_concurrent_requests,
        exclude_prefixes=(f"{API_PREFIX}/feed",),
    )
    for router in (health, kinematics, model, stream, adaptation, metrics, prometheus, feed):
        app.include_router(router.router, prefix=API_PREFIX)
    app.include_router(dashboard.router)
    return app
