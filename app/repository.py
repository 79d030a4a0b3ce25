"""The model repository: finds exported models on disk, loads them, and hands them out.

Layout (TensorFlow Serving's, plus a model card):
`<model_dir>/<name>/<version>/{saved_model.pb, variables/, model_card.json}`.
Folders whose names are not integers (such as the hidden temporary folders an atomic
export writes into) are ignored. The newest version of each model is loaded and warmed
up before it counts as ready. A model that fails to load is kept with its error, so
status endpoints can say why it is not serving, and the other models serve on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.batching import MicroBatcher
from app.devices import DevicePlacement
from app.errors import ModelNotFound, ModelNotReady
from app.model_card import ModelCard, is_valid_model_name
from app.runtime import ModelRuntime
from app.settings import Settings

logger = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass
class ServedModel:
    """One version of one model, and what the service knows about it."""

    name: str
    version: int
    path: Path
    state: ModelState = ModelState.LOADING
    error: str | None = None
    card: ModelCard | None = None
    runtime: ModelRuntime | None = None
    batcher: MicroBatcher | None = None
    device: DevicePlacement | None = None
    ready_seconds: float | None = None

    async def predict(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Queue `[k, H, W, C]` pixels on this model's batcher; `[k, classes]` back."""
        if self.state is not ModelState.READY or self.batcher is None:
            raise ModelNotReady(f"model {self.name} version {self.version} is {self.state}")
        return await self.batcher.submit(pixels)


@dataclass
class ModelRepository:
    """All models under `settings.model_dir`, keyed by name; one served version each."""

    settings: Settings
    device: DevicePlacement
    models: dict[str, ServedModel] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    def discover(self) -> None:
        """Register the newest version folder of every model found on disk."""
        root = self.settings.model_dir
        if not root.is_dir():
            logger.error("model directory %s does not exist; no models will be served", root)
            return
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            name = model_dir.name
            if name.startswith(".") or not is_valid_model_name(name):
                continue
            versions = sorted(int(p.name) for p in model_dir.iterdir() if _is_version_dir(p))
            if not versions:
                entry = ServedModel(name=name, version=0, path=model_dir)
                _mark_failed(entry, f"no version folders (expected {model_dir}/<integer>/)")
                self.models[name] = entry
                continue
            newest = versions[-1]
            self.models[name] = ServedModel(name=name, version=newest, path=model_dir / str(newest))

    async def load_all(self) -> None:
        """Load, check and warm up every discovered model, one at a time, off the loop."""
        try:
            for entry in self.models.values():
                if entry.state is ModelState.LOADING:
                    await self._load(entry)
        finally:
            self.loaded.set()

    async def _load(self, entry: ServedModel) -> None:
        started = time.perf_counter()
        try:
            card = ModelCard.read(entry.path)
            if card.name != entry.name or card.version != entry.version:
                raise ValueError(
                    f"model card says {card.name} version {card.version}, but the folder is "
                    f"{entry.name}/{entry.version}"
                )
            runtime = ModelRuntime(card, entry.path, self.device)
            await asyncio.to_thread(runtime.load)
            await asyncio.to_thread(runtime.warm_up, (1, self.settings.max_batch_size))
        except FileNotFoundError as error:
            _mark_failed(entry, f"missing file: {error.filename or error}")
            return
        except Exception as error:
            _mark_failed(entry, f"{type(error).__name__}: {error}")
            return
        batcher = MicroBatcher(
            runtime.predict_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_seconds=self.settings.max_batch_wait_ms / 1000,
            name=f"{entry.name}-{entry.version}",
        )
        batcher.start()
        entry.card, entry.runtime, entry.batcher = card, runtime, batcher
        entry.device = self.device
        entry.ready_seconds = time.perf_counter() - started
        entry.state = ModelState.READY
        logger.info(
            "model %s version %s ready on %s in %.2f s",
            entry.name,
            entry.version,
            self.device.kind,
            entry.ready_seconds,
        )

    def get(self, name: str, version: int | None = None) -> ServedModel:
        """The served version of `name` (or exactly `version`), ready to predict."""
        entry = self.models.get(name)
        if entry is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"no model named {name!r}; served models: {known}", model=name)
        if version is not None and version != entry.version:
            raise ModelNotFound(
                f"model {name!r} has no served version {version}; it serves version "
                f"{entry.version}",
                model=name,
                version=version,
            )
        if entry.state is ModelState.LOADING:
            raise ModelNotReady(f"model {name!r} is still loading; retry shortly")
        if entry.state is ModelState.FAILED:
            raise ModelNotReady(f"model {name!r} failed to load: {entry.error}")
        return entry

    def not_ready_reasons(self) -> list[str]:
        """Why the service is not ready; empty when every model serves."""
        if not self.loaded.is_set():
            return ["models are still loading"]
        if not self.models:
            return [f"no models found in {self.settings.model_dir}"]
        return [
            f"{entry.name}: {entry.error or entry.state}"
            for entry in self.models.values()
            if entry.state is not ModelState.READY
        ]

    async def close(self) -> None:
        """Drain every batcher and release the models."""
        for entry in self.models.values():
            if entry.batcher is not None:
                await entry.batcher.stop()
            if entry.runtime is not None:
                entry.runtime.release()


def _is_version_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and int(path.name) > 0


def _mark_failed(entry: ServedModel, reason: str) -> None:
    entry.state = ModelState.FAILED
    entry.error = reason
    logger.error("model %s version %s cannot be served: %s", entry.name, entry.version, reason)
