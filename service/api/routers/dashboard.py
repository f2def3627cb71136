"""``GET /``: the live dashboard page, and ``GET /static/{name}``: its script and styles.

Served from :data:`service.dashboard.STATIC_DIR`; only the files shipped there are served
(no path is built from the request). Both are left out of the OpenAPI schema.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from service.dashboard import STATIC_DIR

router = APIRouter(include_in_schema=False)

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_PAGE_HEADERS = {
    **_HEADERS,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}


@router.get("/")
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    files = {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in _TYPES}
    if name not in files:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dashboard file {name!r}")
    path = files[name]
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)
