"""The data plane's admission: queue bound (503 + Retry-After at once) and deadline."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tests.app.conftest import ServeFn
from tests.app.images import encode, png

pytestmark = pytest.mark.anyio

PREDICT = "/api/v1/models/tiny-digits/predict"


async def test_a_full_queue_answers_503_with_retry_after_at_once(serve: ServeFn) -> None:
    # A long batch wait holds the first request in the queue; the bound is one image.
    async with serve(max_queued_images=1, max_batch_wait_ms=1500) as client:
        first = asyncio.create_task(client.post(PREDICT, files={"files": ("a.png", png())}))
        await asyncio.sleep(0.2)
        refused = await client.post(PREDICT, files={"files": ("b.png", png())})
        refused_while_first_waits = not first.done()
        accepted = await first
        after = await client.post(PREDICT, files={"files": ("c.png", png())})
    assert refused.status_code == 503
    assert refused.json()["code"] == "overloaded"
    assert refused.headers["retry-after"] == "1"
    assert refused_while_first_waits, "the refusal did not wait for the queue to drain"
    assert accepted.status_code == 200
    assert after.status_code == 200


async def test_a_request_past_its_deadline_gets_503_with_retry_after(serve: ServeFn) -> None:
    # The batch wait outlasts the deadline, so the request cannot be answered in time.
    async with serve(request_timeout_seconds=0.2, max_batch_wait_ms=3000) as client:
        timed_out = await client.post(PREDICT, files={"files": ("a.png", png())})
        health = await client.get("/healthz")
    assert timed_out.status_code == 503
    assert "did not answer within 0.2 s" in timed_out.json()["error"]
    assert "retry-after" in timed_out.headers
    assert health.status_code == 200


async def test_a_model_that_raises_fails_only_its_batch(
    serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.runtime import ModelRuntime

    real_predict = ModelRuntime.predict_batch
    failures_left = {"count": 0}

    def flaky_predict(self: ModelRuntime, pixels):  # type: ignore[no-untyped-def]
        if failures_left["count"] > 0:
            failures_left["count"] -= 1
            raise RuntimeError("device lost")
        return real_predict(self, pixels)

    monkeypatch.setattr(ModelRuntime, "predict_batch", flaky_predict)
    async with serve() as client:
        failures_left["count"] = 1
        failed = await client.post(PREDICT, files={"files": ("a.png", png())})
        recovered = await client.post(PREDICT, files={"files": ("b.png", png())})
        ready = await client.get("/readyz")
    assert failed.status_code == 500
    assert failed.json()["code"] == "inference_failed"
    assert "device lost" in failed.json()["error"]
    assert recovered.status_code == 200
    assert ready.status_code == 200


async def test_tiny_uploads_skip_the_decode_pool_and_larger_ones_use_it(
    serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.dataplane

    decoded_on: list[str] = []
    real_prepare = app.dataplane.prepare_batch

    def recording_prepare(*args, **kwargs):  # type: ignore[no-untyped-def]
        decoded_on.append(threading.current_thread().name)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(app.dataplane, "prepare_batch", recording_prepare)
    large = encode(np.random.default_rng(0).integers(0, 255, (300, 300)))
    async with serve() as client:
        tiny_answer = await client.post(PREDICT, files={"files": ("a.png", png())})
        large_answer = await client.post(PREDICT, files={"files": ("b.png", large)})
        two_tiny = await client.post(
            PREDICT, files=[("files", ("c.png", png())), ("files", ("d.png", png(1)))]
        )
    assert [tiny_answer.status_code, large_answer.status_code, two_tiny.status_code] == [200] * 3
    assert decoded_on[0] == threading.current_thread().name  # the event loop's thread
    assert decoded_on[1].startswith("decode") and decoded_on[2].startswith("decode")


BROKEN_FORM = {"content-type": "multipart/form-data; boundary=x"}


async def test_a_full_model_refuses_before_reading_the_body(serve: ServeFn) -> None:
    async with serve(max_queued_images=1, max_batch_wait_ms=1500) as client:
        first = asyncio.create_task(client.post(PREDICT, files={"files": ("a.png", png())}))
        await asyncio.sleep(0.2)
        # A body no parser could read: only a refusal that never parsed it gives 503.
        while_full = await client.post(PREDICT, content=b"garbage", headers=BROKEN_FORM)
        tf_serving = await client.post("/v1/models/tiny-digits:predict", content=b"{")
        other_model_path = await client.post(
            "/api/v1/models/no-such-model/predict", content=b"garbage", headers=BROKEN_FORM
        )
        assert (await first).status_code == 200
        after = await client.post(PREDICT, content=b"garbage", headers=BROKEN_FORM)
    assert while_full.status_code == 503
    assert while_full.json()["code"] == "overloaded"
    assert while_full.headers["retry-after"] == "1"
    assert tf_serving.status_code == 503
    assert other_model_path.status_code in {400, 404}  # the route decides, not admission
    assert after.status_code in {400, 422}  # parsed once there is room


async def test_with_an_api_key_a_full_model_still_answers_strangers_401(serve: ServeFn) -> None:
    key = {"authorization": "Bearer k"}
    async with serve(max_queued_images=1, max_batch_wait_ms=1500, api_key="k") as client:
        files = {"files": ("a.png", png())}
        first = asyncio.create_task(client.post(PREDICT, files=files, headers=key))
        await asyncio.sleep(0.2)
        stranger = await client.post(PREDICT, files={"files": ("b.png", png())})
        await first
    assert stranger.status_code == 401
