"""The interactive API docs (`/docs`, `/redoc`) served without any network access.

FastAPI's built-in docs pages load Swagger UI and ReDoc from a CDN (and ReDoc's page
pulls Google Fonts), so on a machine with no internet, or a browser that cannot reach
those hosts, they render as blank pages. This module serves the same pages with every
asset vendored in `app/static/docs/` (versions and licences in `VERSIONS.txt` there),
so the HTML they return references this app only.

Use it on an app built with `FastAPI(docs_url=None, redoc_url=None, ...)`, which turns
the CDN-backed defaults off, then call `install_offline_docs(app)`. The asset folder is
found relative to this file, not the working directory, so it works from any cwd and
from an installed wheel (`[tool.setuptools.package-data]` ships `app/static/**`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_DIR = Path(__file__).resolve().parent / "static" / "docs"

STATIC_URL = "/static/docs"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"

SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon-32x32.png"


def install_offline_docs(app: FastAPI) -> None:
    """Mount the vendored assets at `/static/docs` and add `/docs`, its OAuth2 redirect
    page and `/redoc`, all left out of the OpenAPI schema.

    Raises `ValueError` if the app still has FastAPI's own docs routes (they would be
    matched first and keep loading from the CDN), and does nothing if the app has no
    OpenAPI schema (`openapi_url=None`), as FastAPI itself does.
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError(
            "create the app with FastAPI(docs_url=None, redoc_url=None) before calling "
            "install_offline_docs(); the built-in docs routes load their assets from a CDN"
        )
    openapi_url = app.openapi_url
    if openapi_url is None:
        return

    app.mount(STATIC_URL, StaticFiles(directory=ASSETS_DIR), name="offline-docs-static")

    def _root(request: Request) -> str:
        # Behind a proxy that strips a path prefix, links must carry it, as in FastAPI's
        # own docs routes.
        root_path: str = request.scope.get("root_path", "")
        return root_path.rstrip("/")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui_html(request: Request) -> HTMLResponse:
        root = _root(request)
        static = f"{root}{STATIC_URL}"
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{static}/{SWAGGER_JS}",
            swagger_css_url=f"{static}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{static}/{FAVICON}",
            oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc_html(request: Request) -> HTMLResponse:
        root = _root(request)
        static = f"{root}{STATIC_URL}"
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{static}/{REDOC_JS}",
            redoc_favicon_url=f"{static}/{FAVICON}",
            with_google_fonts=False,
        )
