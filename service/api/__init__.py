"""HTTP API of the decoding daemon: :func:`service.api.app.create_app`."""

from service.api.app import create_app

__all__ = ["create_app"]
