"""Every error the API answers is in the README's error table, under its status."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import ServeFn
from tests.app.images import png
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.anyio

MODEL = "/api/v1/models/tiny-digits"


def readme_error_table() -> dict[int, set[str]]:
    """README's `| Status | Code | When |` rows: status -> the codes listed for it."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| Status | Code | When |", 1)[1].split("\n\n", 1)[0]
    rows: dict[int, set[str]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            rows[int(cells[0])] = set(re.findall(r"`([a-z_]+)`", cells[1]))
    return rows


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# (status, code, settings, request): one everyday way to get each answer.
CASES: list[tuple[int, str, dict[str, Any], dict[str, Any]]] = [
    (
        400,
        "bad_request",
        {},
        {
            "url": f"{MODEL}/predict",
            "content": b"garbage",
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
    ),
    (400, "invalid_input", {}, {"url": "/v1/models/tiny-digits:predict", "content": b"{"}),
    (401, "unauthorized", {"api_key": "k"}, {"url": f"{MODEL}/predict"}),
    (403, "forbidden", {}, {"url": "/api/v1/admin/rescan"}),
    (
        404,
        "model_not_found",
        {},
        {"url": "/api/v1/models/nope/predict", "files": {"files": ("a.png", png())}},
    ),
    (404, "not_found", {}, {"method": "GET", "url": "/api/v1/nothing-here"}),
    (404, "artifact_not_found", {}, {"method": "GET", "url": f"{MODEL}/plots/nope.png"}),
    (405, "method_not_allowed", {}, {"method": "GET", "url": f"{MODEL}/predict"}),
    (
        413,
        "payload_too_large",
        {"max_files_per_request": 1},
        {"url": f"{MODEL}/predict", "files": [("files", ("a.png", png())), ("files", png())]},
    ),
    (
        415,
        "unsupported_media_type",
        {},
        {"url": f"{MODEL}/predict", "files": {"files": ("notes.txt", b"hello", "text/plain")}},
    ),
    (
        415,
        "unsupported_media_type",
        {},
        {
            "url": "/v2/models/tiny-digits/infer",
            "content": b"{}",
            "headers": {"content-encoding": "br"},
        },
    ),
    (
        422,
        "invalid_image",
        {},
        {"url": f"{MODEL}/predict", "files": {"files": ("a.png", png()[:40])}},
    ),
    (422, "invalid_request", {}, {"url": f"{MODEL}/predict", "files": {"file": ("a.png", png())}}),
    (
        422,
        "invalid_labels",
        {},
        {"url": f"{MODEL}/evaluate", "files": {"files": ("a.png", png())}, "data": {"labels": "x"}},
    ),
    (
        422,
        "invalid_archive",
        {},
        {"url": f"{MODEL}/evaluate", "files": {"archive": ("a.zip", zip_of({"x.png": png()}))}},
    ),
]


@pytest.mark.parametrize(
    ("status", "code", "settings", "request_"),
    CASES,
    ids=[f"{status}-{code}" for status, code, _, _ in CASES],
)
async def test_each_answer_is_in_the_readme_table(
    serve: ServeFn, status: int, code: str, settings: dict[str, Any], request_: dict[str, Any]
) -> None:
    async with serve(**settings) as client:
        arguments = dict(request_)
        response = await client.request(arguments.pop("method", "POST"), **arguments)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert code in readme_error_table().get(status, set()), f"README lacks {status} {code}"


def test_the_readme_table_lists_only_codes_the_service_has() -> None:
    """A code in the table that no error carries would send readers looking for nothing."""
    source = "\n".join(path.read_text() for path in (REPO_ROOT / "app").rglob("*.py"))
    for status, codes in readme_error_table().items():
        for code in codes:
            assert f'"{code}"' in source, f"README lists {status} {code}, which app/ never answers"


def test_the_readme_table_is_found() -> None:
    table = readme_error_table()
    assert set(table) >= {400, 404, 413, 415, 422, 503}
    assert Path(REPO_ROOT / "README.md").is_file()
