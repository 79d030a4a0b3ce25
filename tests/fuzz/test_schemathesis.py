"""Property-based API fuzzing: schemathesis against the app's own OpenAPI schema.

Runs the schemathesis CLI (its pytest plugin does not support pytest 9 yet) against a
real server over tiny models, with a bounded number of examples per operation and a
fixed seed, so it fits in CI and a failure reproduces. Every response must be free of
5xx errors and match the schema.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.tiny_models import export_tiny_digits, export_tiny_xray
from tests.e2e.conftest import LiveServer, start_server, stop_server

EXAMPLES_PER_OPERATION = 20
SEED = 20261128

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("fuzz")
    export_tiny_digits(root / "models")
    export_tiny_xray(root / "models")
    server = start_server(root / "models", root / "server.log")
    yield server
    assert stop_server(server) == 0, server.log()


def test_api_never_errors_and_matches_its_schema(fuzzed_server: LiveServer, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{fuzzed_server.url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            str(SEED),
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    print(result.stdout[-4000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    assert httpx.get(f"{fuzzed_server.url}/readyz").status_code == 200
