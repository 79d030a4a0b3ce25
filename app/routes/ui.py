"""The web page for people, at `/`: try a model on images or a drawing, read its card,
see its recorded evaluation and evaluate it on a labelled zip.

Plain HTML, CSS and JavaScript from `app/static/ui/` (no build step, nothing from other
hosts), found relative to this package so it works from any working directory and from
an installed wheel. The page calls the public `/api/v1` endpoints with relative URLs, so
it also works behind a proxy that serves the app under a path prefix.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import ServingError

UI_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"
ASSET_URL = "/static/ui"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The page and its assets change with the app, not per request: revalidate each load.
_HEADERS = {"Cache-Control": "no-cache"}
_ASSET_NAME = re.compile(r"[A-Za-z0-9_-]+\.[a-z]+")

router = APIRouter(include_in_schema=False)


class AssetNotFound(ServingError):
    status_code = 404
    code = "not_found"


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    """The page itself."""
    return FileResponse(UI_DIR / "index.html", media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)


@router.api_route(ASSET_URL + "/{asset}", methods=["GET", "HEAD"])
async def asset(asset: str) -> FileResponse:
    """A file of the page (stylesheet, script), from `app/static/ui/` only."""
    path = (UI_DIR / asset).resolve()
    media_type = _MEDIA_TYPES.get(path.suffix)
    if (
        _ASSET_NAME.fullmatch(asset) is None
        or media_type is None
        or not path.is_relative_to(UI_DIR)
        or not path.is_file()
    ):
        raise AssetNotFound(f"no such file: {ASSET_URL}/{asset}")
    return FileResponse(path, media_type=media_type, headers=_HEADERS)
