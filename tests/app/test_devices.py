"""Device selection and GPU memory growth, with the GPU list injected on CPU machines."""

from __future__ import annotations

import pytest

from app.devices import (
    CPU,
    DeviceUnavailable,
    choose_device,
    configure_devices,
    require_device,
)


class FakeGpu:
    def __init__(self, index: int) -> None:
        self.name = f"/physical_device:GPU:{index}"


def test_auto_picks_the_gpu_when_there_is_one() -> None:
    placement = choose_device("auto", ["/physical_device:GPU:0"])
    assert (placement.kind, placement.name) == ("gpu", "/device:GPU:0")


def test_auto_falls_back_to_cpu() -> None:
    assert choose_device("auto", []) == CPU


def test_cpu_wins_even_with_a_gpu() -> None:
    assert choose_device("cpu", ["/physical_device:GPU:0"]) == CPU


def test_gpu_without_a_gpu_fails_with_a_clear_message() -> None:
    with pytest.raises(DeviceUnavailable, match="sees no GPU") as raised:
        choose_device("gpu", [])
    assert "VISION_SERVING_DEVICE" in str(raised.value)


def test_require_device_refuses_gpu_without_one() -> None:
    with pytest.raises(DeviceUnavailable, match="sees no GPU"):
        require_device("gpu", list_gpus=lambda: [])


def test_require_device_lists_devices_only_when_gpu_is_required() -> None:
    def unexpected() -> list[FakeGpu]:
        raise AssertionError("auto and cpu cannot fail, so they need not list devices")

    require_device("gpu", list_gpus=lambda: [FakeGpu(0)])
    require_device("auto", list_gpus=unexpected)
    require_device("cpu", list_gpus=unexpected)


def test_memory_growth_is_enabled_on_every_gpu_before_placement() -> None:
    gpus = [FakeGpu(0), FakeGpu(1)]
    grown: list[str] = []
    placement = configure_devices(
        "auto", list_gpus=lambda: gpus, enable_memory_growth=lambda g: grown.append(g.name)
    )
    assert grown == [g.name for g in gpus]
    assert placement.kind == "gpu"


def test_memory_growth_failure_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(_: object) -> None:
        raise RuntimeError("Physical devices cannot be modified after being initialized")

    placement = configure_devices(
        "gpu", list_gpus=lambda: [FakeGpu(0)], enable_memory_growth=refuse
    )
    assert placement.kind == "gpu"
    assert "could not enable memory growth" in caplog.text


def test_cpu_preference_does_not_touch_gpus() -> None:
    touched: list[object] = []
    placement = configure_devices(
        "cpu", list_gpus=lambda: [FakeGpu(0)], enable_memory_growth=touched.append
    )
    assert placement == CPU
    assert touched == []


def test_real_tensorflow_places_tensors_where_auto_says() -> None:
    # The name `auto` picks must be one TensorFlow places work on: a tensor made under
    # it lands on that device (a wrong name would land elsewhere or fail).
    import tensorflow as tf

    placement = configure_devices("auto")
    with tf.device(placement.name):
        tensor = tf.constant([1.0]) + 1.0
    assert tensor.device.endswith(placement.name)
    assert placement.name.removeprefix("/device:").split(":")[0].lower() == placement.kind
