"""The offline docs pages reference this app only, and every asset they load is served."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from app.docs import install_offline_docs

pytestmark = pytest.mark.anyio

_URL_ATTR = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.IGNORECASE)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _make_app() -> FastAPI:
    app = FastAPI(title="Tiny API", docs_url=None, redoc_url=None)

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    install_offline_docs(app)
    return app


def _client(root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_make_app(), root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _asset_urls(html: str) -> list[str]:
    urls = _URL_ATTR.findall(html)
    assert urls, "the page references no assets at all"
    return urls


def _assert_offline_html(html: str) -> None:
    lowered = html.lower()
    for needle in ("http://", "https://", "cdn", "googleapis", "//"):
        # "//" also catches protocol-relative URLs; the pages have no comments using it.
        assert needle not in lowered, f"page mentions {needle!r}"
    for url in _asset_urls(html):
        assert url.startswith("/") and not url.startswith("//"), url


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"/static/docs/swagger-ui-bundle.js", "/static/docs/swagger-ui.css"}),
        ("/redoc", {"/static/docs/redoc.standalone.js"}),
    ],
)
async def test_page_is_local_html_and_its_assets_are_served(page: str, expected: set[str]) -> None:
    async with _client() as client:
        resp = await client.get(page)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/html")
        html = resp.text
        assert "Tiny API" in html
        assert "/openapi.json" in html
        _assert_offline_html(html)

        urls = set(_asset_urls(html))
        assert expected <= urls
        assert "/static/docs/favicon-32x32.png" in urls
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, url
            ctype = asset.headers["content-type"]
            if url.endswith(".js"):
                assert "javascript" in ctype, (url, ctype)
                assert len(asset.content) > 100_000, url
            elif url.endswith(".css"):
                assert ctype.startswith("text/css"), (url, ctype)
                assert len(asset.content) > 10_000, url
            elif url.endswith(".png"):
                assert ctype == "image/png", (url, ctype)
                assert asset.content.startswith(b"\x89PNG"), url
            else:
                pytest.fail(f"unexpected asset {url}")


async def test_oauth2_redirect_page() -> None:
    async with _client() as client:
        resp = await client.get("/docs/oauth2-redirect")
    assert resp.status_code == 200
    assert "swaggerUIRedirectOauth2" in resp.text
    assert "http://" not in resp.text and "https://" not in resp.text


async def test_openapi_still_served_and_docs_routes_left_out() -> None:
    async with _client() as client:
        resp = await client.get("/openapi.json")
        ping = await client.get("/ping")
    assert resp.status_code == 200
    schema = resp.json()
    assert schema["info"]["title"] == "Tiny API"
    assert set(schema["paths"]) == {"/ping"}
    assert ping.json() == {"pong": "yes"}


async def test_missing_asset_is_404() -> None:
    async with _client() as client:
        resp = await client.get("/static/docs/swagger-ui-bundle.js.map")
    assert resp.status_code == 404


async def test_root_path_prefixes_every_link() -> None:
    # As behind a proxy that strips "/api": the page must link to "/api/...".
    async with _client(root_path="/api") as client:
        html = (await client.get("/api/docs")).text
        assert "/api/openapi.json" in html
        urls = _asset_urls(html)
        for url in urls:
            assert url.startswith("/api/static/docs/"), url
            assert (await client.get(url)).status_code == 200, url


def test_refuses_app_with_builtin_docs() -> None:
    with pytest.raises(ValueError, match="docs_url=None"):
        install_offline_docs(FastAPI())
