"""API key, admin endpoints and CORS, each tested both ways."""

from __future__ import annotations

import pytest

from tests.app.conftest import ServeFn
from tests.app.images import png

pytestmark = pytest.mark.anyio

KEY = "s3cret-key"
PREDICT = "/api/v1/models/tiny-digits/predict"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_without_a_key_configured_model_endpoints_are_open(serve: ServeFn) -> None:
    async with serve() as client:
        assert (await client.get("/api/v1/models")).status_code == 200
        predicted = await client.post(PREDICT, files={"files": ("d.png", png())})
    assert predicted.status_code == 200


async def test_with_a_key_model_endpoints_need_it(serve: ServeFn) -> None:
    async with serve(api_key=KEY) as client:
        missing = await client.get("/api/v1/models")
        wrong = await client.get("/api/v1/models", headers=bearer("nope"))
        wrong_scheme = await client.get("/api/v1/models", headers={"Authorization": f"Basic {KEY}"})
        right = await client.get("/api/v1/models", headers=bearer(KEY))
        predicted = await client.post(
            PREDICT, files={"files": ("d.png", png())}, headers=bearer(KEY)
        )
        refused_upload = await client.post(PREDICT, files={"files": ("d.png", png())})
    for response in (missing, wrong, wrong_scheme, refused_upload):
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
        assert KEY not in response.text
    assert right.status_code == 200
    assert predicted.status_code == 200


async def test_health_readiness_metrics_and_docs_stay_open_with_a_key(serve: ServeFn) -> None:
    async with serve(api_key=KEY) as client:
        for path in ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path


async def test_admin_is_closed_without_a_key_unless_explicitly_opened(serve: ServeFn) -> None:
    async with serve() as client:
        closed = await client.post("/api/v1/admin/rescan")
    async with serve(admin_open=True) as client:
        opened = await client.post("/api/v1/admin/rescan")
    assert closed.status_code == 403
    assert "VISION_SERVING_API_KEY" in closed.json()["error"]
    assert opened.status_code == 200
    assert {m["name"] for m in opened.json()["models"]} == {"tiny-digits", "tiny-xray"}


async def test_admin_with_a_key_needs_the_key(serve: ServeFn) -> None:
    async with serve(api_key=KEY) as client:
        refused = await client.post("/api/v1/admin/rescan")
        allowed = await client.post("/api/v1/admin/rescan", headers=bearer(KEY))
    assert refused.status_code == 401
    assert allowed.status_code == 200


async def test_the_key_is_a_security_scheme_in_openapi(serve: ServeFn) -> None:
    async with serve() as client:
        schema = (await client.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" in schema["paths"]["/api/v1/models/{name}/predict"]["post"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_cors_is_closed_by_default(serve: ServeFn) -> None:
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    async with serve() as client:
        preflight = await client.options(PREDICT, headers=headers)
        simple = await client.get("/api/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_configured_origins_only(serve: ServeFn) -> None:
    async with serve(cors_origins=["https://app.example"]) as client:
        allowed = await client.options(
            PREDICT,
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        other = await client.options(
            PREDICT,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        simple = await client.get("/api/v1/models", headers={"Origin": "https://app.example"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
