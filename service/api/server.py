"""Serve the API app with uvicorn on a socket bound here, until SIGINT / SIGTERM."""

from __future__ import annotations

import signal
import socket
import threading

import uvicorn
from fastapi import FastAPI

__all__ = ["listen", "serve"]


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port) and listening, so a client may
    connect as soon as the address is printed (a restarted API process takes over the same
    backlog); ``ValueError`` naming the fix when the address is taken or invalid."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise ValueError(
            f"cannot listen on {host}:{port}: {error.strerror}; pick another port "
            "(0: any free port) or stop what uses it"
        ) from error
    listener.listen(2048)  # connections wait in the backlog until the server accepts them
    return listener


def serve(app: FastAPI, listener: socket.socket, seconds: float | None = None) -> None:
    """Run ``app`` on ``listener`` until SIGINT / SIGTERM (or ``seconds``), shut down
    cleanly (the app's lifespan stops the daemon) and return. Call from the main thread.

    uvicorn raises the stop signal again after its shutdown; both signals end here as
    ``KeyboardInterrupt``, so a requested stop returns normally (exit status 0).
    """
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    timer = None
    if seconds is not None:
        timer = threading.Timer(seconds, lambda: setattr(server, "should_exit", True))
        timer.start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:
        pass
    finally:
        if timer is not None:
            timer.cancel()
