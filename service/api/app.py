"""``create_app(settings)``: the FastAPI application of the decoding daemon."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.trustedhost import TrustedHostMiddleware

from service.api.routers import adaptation, health, kinematics, metrics, model, stream
from service.daemon import Daemon
from service.settings import Settings, resolve_token

__all__ = ["API_PREFIX", "create_app"]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def create_app(settings: Settings, daemon: Daemon | None = None) -> FastAPI:
    """The API app; its lifespan starts ``daemon`` (default: ``Daemon(settings)``) and stops
    it on shutdown. Without ``settings.token`` a token is generated (``app.state.settings``
    holds it); every POST needs it as a bearer token. Requests whose Host header is not in
    ``settings.allowed_hosts`` get 400. No CORS middleware is installed (same-origin only).
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

    app = FastAPI(
        title="bci decoding daemon",
        version="1",
        description="Live decoding of an LSL neural stream with a spiking decoder.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.daemon = daemon
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))
    for router in (health, kinematics, model, stream, adaptation, metrics):
        app.include_router(router.router, prefix=API_PREFIX)
    return app
