"""``GET /docs``: the interactive API reference (Swagger UI), with its script, styles and icon
served from this package (``swagger-ui-bundle-v2``'s copy of Swagger UI 5), so the page works
on a rig with no internet. ``/docs/static/{name}`` serves only those files; both are left out
of the OpenAPI schema. FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a
CDN and are turned off in :func:`service.api.app.create_app`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

__all__ = ["ASSETS", "router"]

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_FOLDER = Path(str(swagger_ui_path))


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - API reference",
        swagger_js_url=f"{root}/docs/static/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/static/swagger-ui.css",
        swagger_favicon_url=f"{root}/docs/static/favicon-32x32.png",
    )


@router.get("/docs/static/{name}")
def swagger_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no docs file {name!r}")
    return FileResponse(
        _FOLDER / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"}
    )
