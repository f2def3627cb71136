"""Dependencies shared by the routers, as ``Annotated`` aliases.

Everything comes from ``request.app.state`` (set by :func:`service.api.app.create_app`): no
module-level singletons, so each test builds its own app.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from service.api.guard import TOKEN_HELP
from service.api.link import DecoderLink
from service.settings import Settings

__all__ = ["LinkDep", "Problem", "SettingsDep", "StatusDep", "problems", "require_token"]

_bearer = HTTPBearer(auto_error=False, description="token printed by 'bci serve'")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_link(request: Request) -> DecoderLink:
    return request.app.state.link


def get_status(link: Annotated[DecoderLink, Depends(get_link)]) -> dict[str, Any]:
    """The decoder's status document; 503 until the decoder has published one."""
    status_doc = link.status()
    if status_doc.get("engine") is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"the decoder is not running yet ({status_doc['state']}: {status_doc['message']})",
        )
    return status_doc


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless ``Authorization: Bearer <token>`` matches (constant-time comparison)."""
    expected: str = request.app.state.settings.token
    given = "" if credentials is None else credentials.credentials
    if credentials is None or credentials.scheme.lower() != "bearer":
        ok = False
    else:
        ok = secrets.compare_digest(given.encode(), expected.encode())
    if not ok:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            TOKEN_HELP,
            headers={"WWW-Authenticate": "Bearer"},
        )


class Problem(BaseModel):
    """An error answer: ``detail`` says what was refused and how to fix it (a list of
    field errors for a malformed request body)."""

    detail: str | list[dict[str, Any]]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring :class:`Problem` bodies for ``codes``."""
    described = {
        400: "malformed request (e.g. invalid multipart data)",
        401: "missing or wrong bearer token",
        404: "no such item",
        409: "not possible in the daemon's current state",
        413: "upload too large",
        422: "refused: the request or the file it names is invalid",
        503: "the daemon or its decoding loop is not running",
    }
    return {code: {"model": Problem, "description": described[code]} for code in codes}


SettingsDep = Annotated[Settings, Depends(get_settings)]
LinkDep = Annotated[DecoderLink, Depends(get_link)]
StatusDep = Annotated[dict[str, Any], Depends(get_status)]
Authorized = Depends(require_token)
