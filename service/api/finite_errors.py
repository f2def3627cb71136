"""422 answers that stay valid JSON when a request body holds NaN or infinities.

Python's JSON reader (which FastAPI uses) accepts ``NaN``, ``Infinity``, ``-Infinity`` and
``1e999`` (read as infinity). A field that refuses them, or any field given one where it
expects another type, fails validation, and FastAPI's 422 answer echoes the input; JSON has
no NaN, so writing that answer raised and the client got a 500. Routes of a router built
with ``route_class=FiniteErrorsRoute`` answer 422 as usual, naming the field, with such
inputs spelled as text (``"NaN"``, ``"Infinity"``, ``"-Infinity"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

__all__ = ["FiniteErrorsRoute", "json_safe"]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its JSON-ish spelling."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


class FiniteErrorsRoute(APIRoute):
    """A route whose 422 answers stay valid JSON when the request held NaN or infinities."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as error:
                raise RequestValidationError(json_safe(list(error.errors()))) from None

        return route
