"""Choose where models run: the GPU when there is one (or when asked), else the CPU.

The choice itself is a pure function of the preference and the devices TensorFlow
lists, so it is tested on CPU machines by passing in a made-up GPU list. Memory
growth is switched on for every GPU before any model is placed, so this process takes
GPU memory as it needs it instead of the whole card (tensorflow/serving#249).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

DevicePreference = Literal["auto", "cpu", "gpu"]


class DeviceUnavailable(RuntimeError):
    """The configured device cannot be used on this machine."""


@dataclass(frozen=True)
class DevicePlacement:
    """Where a model is placed: `kind` for people, `name` for `tf.device`."""

    kind: Literal["cpu", "gpu"]
    name: str


CPU = DevicePlacement(kind="cpu", name="/device:CPU:0")


def choose_device(preference: DevicePreference, gpu_names: Sequence[str]) -> DevicePlacement:
    """Pick the device for `preference` given the GPUs TensorFlow lists."""
    if preference == "cpu":
        return CPU
    if gpu_names:
        return DevicePlacement(kind="gpu", name="/device:GPU:0")
    if preference == "gpu":
        raise DeviceUnavailable(
            "device is set to 'gpu' but TensorFlow sees no GPU on this machine. "
            "Hint: install a CUDA-enabled TensorFlow and the NVIDIA driver, run the "
            "container with --gpus all, or set VISION_SERVING_DEVICE=auto or cpu."
        )
    return CPU


def require_device(
    preference: DevicePreference, *, list_gpus: Callable[[], Sequence[Any]] | None = None
) -> None:
    """Raise `DeviceUnavailable` now if `preference` cannot be met on this machine.

    For `python -m app`, which refuses with one line before any server or worker starts
    (and would otherwise fail in the lifespan, under uvicorn's traceback). Only `gpu`
    can fail, so `auto` and `cpu` return without importing TensorFlow.
    """
    if preference != "gpu":
        return
    if list_gpus is None:
        import tensorflow as tf

        gpus: Sequence[Any] = tf.config.list_physical_devices("GPU")
    else:
        gpus = list_gpus()
    choose_device(preference, [str(getattr(g, "name", g)) for g in gpus])


def configure_devices(
    preference: DevicePreference,
    *,
    list_gpus: Callable[[], Sequence[Any]] | None = None,
    enable_memory_growth: Callable[[Any], None] | None = None,
) -> DevicePlacement:
    """Enable memory growth on every GPU and return the placement for models.

    Must run before TensorFlow initialises the GPUs (before any model is loaded).
    The two callables default to TensorFlow's and are injectable for tests.
    """
    if list_gpus is None or enable_memory_growth is None:
        import tensorflow as tf

        list_gpus = list_gpus or (lambda: tf.config.list_physical_devices("GPU"))
        enable_memory_growth = enable_memory_growth or (
            lambda gpu: tf.config.experimental.set_memory_growth(gpu, True)
        )
    gpus = list(list_gpus()) if preference != "cpu" else []
    for gpu in gpus:
        try:
            enable_memory_growth(gpu)
        except RuntimeError as error:  # GPUs already initialised: growth can't change now
            logger.warning("could not enable memory growth on %s: %s", gpu, error)
    placement = choose_device(preference, [str(getattr(g, "name", g)) for g in gpus])
    logger.info(
        "models will run on %s (%s, preference %s)", placement.kind, placement.name, preference
    )
    return placement
