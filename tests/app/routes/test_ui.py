"""The page at /: served as HTML, every asset it references served and local."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from app.routes.ui import UI_DIR
from tests.app.conftest import ServeFn

pytestmark = pytest.mark.anyio

EXTERNAL = re.compile(r"https?://|(?:src|href)\s*=\s*[\"']//|[\"'`]//\w", re.IGNORECASE)
CSS_LOADS = re.compile(r"@import|\burl\(")  # the stylesheet loads nothing at all


class Page(HTMLParser):
    """What the page references, labels and announces."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.ids: set[str] = set()
        self.label_for: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.live: set[str] = set()
        self.lang: str | None = None
        self.viewport = False
        self._label_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for name in ("src", "href"):
            if attributes.get(name):
                self.references.append(str(attributes[name]))
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag == "html":
            self.lang = attributes.get("lang")
        if tag == "meta" and attributes.get("name") == "viewport":
            self.viewport = True
        if tag == "label":
            self._label_depth += 1
            if attributes.get("for"):
                self.label_for.add(str(attributes["for"]))
        if tag in ("input", "select", "textarea"):
            self.controls.append({**attributes, "in_label": "yes" if self._label_depth else None})
        if attributes.get("aria-live") and attributes.get("id"):
            self.live.add(str(attributes["id"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_depth -= 1


async def test_page_is_served_as_html_at_the_root(serve: ServeFn) -> None:
    async with serve() as client:
        response = await client.get("/")
        head = await client.head("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == (UI_DIR / "index.html").read_text(encoding="utf-8")
    assert "<title>Vision model serving</title>" in response.text
    assert head.status_code == 200


async def test_every_asset_the_page_references_is_served_and_local(serve: ServeFn) -> None:
    async with serve() as client:
        html = (await client.get("/")).text
        page = Page()
        page.feed(html)
        assets = [r for r in page.references if not r.startswith(("data:", "#"))]
        assert {"static/ui/app.css", "static/ui/app.js", "docs", "redoc"} <= set(assets)
        bodies = {"index.html": html}
        for reference in assets:
            assert not reference.startswith("/"), f"{reference}: use relative URLs"
            response = await client.get(f"/{reference}")
            assert response.status_code == 200, reference
            if reference.startswith("static/ui/"):
                bodies[reference] = response.text
    assert bodies["static/ui/app.css"].strip() and bodies["static/ui/app.js"].strip()
    for name, body in bodies.items():
        found = EXTERNAL.search(body)
        assert found is None, f"{name} refers to another host: {body[found.start() :][:80]}"
    assert CSS_LOADS.search(bodies["static/ui/app.css"]) is None


async def test_assets_have_their_content_types(serve: ServeFn) -> None:
    async with serve() as client:
        css = await client.get("/static/ui/app.css")
        js = await client.get("/static/ui/app.js")
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert css.headers["cache-control"] == "no-cache"


def test_every_file_in_the_ui_folder_is_referenced_by_the_page() -> None:
    page = Page()
    page.feed((UI_DIR / "index.html").read_text(encoding="utf-8"))
    served = {f"static/ui/{path.name}" for path in UI_DIR.iterdir() if path.name != "index.html"}
    assert served <= set(page.references)


def test_page_is_accessible_by_construction() -> None:
    page = Page()
    page.feed((UI_DIR / "index.html").read_text(encoding="utf-8"))
    assert page.lang == "en" and page.viewport
    assert page.label_for <= page.ids, "a label points at no control"
    for control in page.controls:
        if control.get("type") == "hidden":
            continue
        labelled = (
            control.get("id") in page.label_for
            or control.get("in_label")
            or control.get("aria-label")
            or control.get("aria-labelledby")
        )
        assert labelled, f"control without a label: {control}"
    assert {"results", "evaluation", "model-status"} <= page.live


@pytest.mark.parametrize(
    "path",
    [
        "/static/ui/nope.css",
        "/static/ui/..%2F..%2Fmain.py",
        "/static/ui/%2E%2E",
        "/static/ui/.hidden.css",
        "/static/ui/index.py",
        "/static/ui/app.css.bak",
    ],
)
async def test_unknown_or_unsafe_asset_paths_are_json_404s(serve: ServeFn, path: str) -> None:
    async with serve() as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_page_is_not_part_of_the_api_schema(serve: ServeFn) -> None:
    async with serve() as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths
    assert not [p for p in paths if p.startswith("/static")]


async def test_page_is_served_with_no_models_and_without_an_api_key(
    serve: ServeFn, tmp_path: Path
) -> None:
    async with serve(model_dir=tmp_path, api_key="secret") as client:
        page = await client.get("/")
        script = await client.get("/static/ui/app.js")
        models = await client.get("/api/v1/models")
    assert page.status_code == 200 and script.status_code == 200
    assert models.status_code == 401  # the page asks for the key when the API does
