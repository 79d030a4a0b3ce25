"""The model repository: finds exported models on disk, loads them, and hands them out.

Layout (TensorFlow Serving's, plus a model card):
`<model_dir>/<name>/<version>/{saved_model.pb, variables/, model_card.json}`.
Folders whose names are not positive integers (such as the hidden folders an atomic
export writes into) are ignored.

`sync()` makes memory match the disk, and runs at start-up, on every watch tick and on
an admin rescan:
- Which versions are served follows the version policy: the newest loadable version
  (`latest`) or every version (`all`), plus any versions pinned in the settings.
- A new version is loaded and warmed up before it takes traffic; unversioned requests
  go to the newest ready version.
- A version that fails to load is kept with its error (shown in every status API) and
  the version already serving stays in place. It is retried when its files change.
- A version that is no longer wanted, or whose folder was removed, stops taking new
  requests at once, finishes the ones in flight, and is then released.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.batching import BatchObserver, MicroBatcher
from app.contract.model_card import MODEL_CARD_FILENAME, ModelCard, is_valid_model_name
from app.devices import DevicePlacement
from app.errors import ModelNotFound, ModelNotReady
from app.runtime import ModelRuntime
from app.settings import Settings

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0


class ModelState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"


@dataclass(eq=False)
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
    fingerprint: tuple[float, ...] = ()
    in_flight: int = 0
    images_in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    @contextlib.asynccontextmanager
    async def serving(self, images: int = 0) -> AsyncIterator[ServedModel]:
        """Hold the model for one request, so an unload waits for the request to finish."""
        self.in_flight += 1
        self.images_in_flight += images
        self._idle.clear()
        try:
            yield self
        finally:
            self.in_flight -= 1
            self.images_in_flight -= images
            if self.in_flight == 0:
                self._idle.set()

    async def predict(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Queue `[k, H, W, C]` pixels on this model's batcher; `[k, classes]` back."""
        if self.batcher is None:
            raise ModelNotReady(f"model {self.name} version {self.version} is {self.state}")
        return await self.batcher.submit(pixels)

    async def unload(self) -> None:
        """Stop taking requests, let those in flight finish, then free the model.

        A cancelled unload leaves the version in place, unloading; unloading it again
        finishes the job (`ModelRepository.close` does).
        """
        self.state = ModelState.UNLOADING
        # Not `wait_for`: Python 3.11's returns instead of raising when a cancel meets
        # the end of the wait in one loop step, and the watcher then never stopped.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                await self._idle.wait()
        if self.batcher is not None:
            await self.batcher.stop()
        if self.runtime is not None:
            self.runtime.release()
        self.batcher = None
        self.runtime = None


class ModelRepository:
    """Every model under `settings.model_dir`, each with the versions it serves."""

    def __init__(
        self,
        settings: Settings,
        device: DevicePlacement,
        batch_observer: Callable[[str], BatchObserver] | None = None,
    ) -> None:
        self.settings = settings
        self.device = device
        self.load_failures: Counter[str] = Counter()
        self._batch_observer = batch_observer
        self.loaded = asyncio.Event()  # set once the first sync has finished
        self._versions: dict[str, dict[int, ServedModel]] = {}
        self._problems: dict[str, str] = {}  # model folders with no usable version folder
        self._sync_lock = asyncio.Lock()
        self._closed = False

    # Reading -------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(set(self._versions) | set(self._problems))

    def versions(self, name: str) -> list[ServedModel]:
        """Every version of `name` the service knows, oldest first."""
        if name not in self._versions and name not in self._problems:
            raise self._not_found(name)
        entries = self._versions.get(name, {})
        return [entries[v] for v in sorted(entries)]

    def problem(self, name: str) -> str | None:
        """A model-level problem, such as a model folder with no version folders."""
        return self._problems.get(name)

    def served(self, name: str) -> ServedModel | None:
        """The version unversioned requests go to: the newest ready one."""
        ready = [m for m in self._versions.get(name, {}).values() if m.state is ModelState.READY]
        return max(ready, key=lambda m: m.version) if ready else None

    def get(self, name: str, version: int | None = None) -> ServedModel:
        """The model version a request should use, ready to predict, or a 404/503 error."""
        entries = self.versions(name)
        if version is None:
            served = self.served(name)
            if served is not None:
                return served
            raise ModelNotReady(f"model {name!r} is not serving: {self._why_not(name)}")
        entry = next((e for e in entries if e.version == version), None)
        if entry is None or entry.state is ModelState.UNLOADING:
            known = [e.version for e in entries if e.state is not ModelState.UNLOADING]
            raise ModelNotFound(
                f"model {name!r} has no version {version}; versions: {known or 'none'}",
                model=name,
                version=version,
            )
        if entry.state is ModelState.LOADING:
            raise ModelNotReady(f"model {name!r} version {version} is still loading; retry")
        if entry.state is ModelState.FAILED:
            raise ModelNotReady(f"model {name!r} version {version} failed to load: {entry.error}")
        return entry

    def not_ready_reasons(self) -> list[str]:
        """Why the service is not ready; empty when every model has a version serving."""
        if not self.loaded.is_set():
            return ["models are still loading"]
        names = self.names()
        if not names:
            return [f"no models found in {self.settings.model_dir}"]
        return [f"{name}: {self._why_not(name)}" for name in names if self.served(name) is None]

    def _why_not(self, name: str) -> str:
        if name in self._problems:
            return self._problems[name]
        entries = self._versions.get(name, {}).values()
        if any(e.state is ModelState.LOADING for e in entries):
            return "still loading; retry shortly"
        errors = [f"version {e.version}: {e.error}" for e in entries if e.error]
        return "; ".join(errors) or "no version loaded"

    def _not_found(self, name: str) -> ModelNotFound:
        known = ", ".join(self.names()) or "none"
        return ModelNotFound(f"no model named {name!r}; served models: {known}", model=name)

    # Syncing with the disk -----------------------------------------------------------

    async def sync(self) -> None:
        """Load what the disk and the version policy want, and unload what they don't."""
        async with self._sync_lock:
            if self._closed:
                return
            on_disk = self._scan()
            for name in set(self._versions) - set(on_disk):
                for entry in list(self._versions[name].values()):
                    await self._unload(entry)
            for name, versions in on_disk.items():
                await self._sync_model(name, versions)
        self.loaded.set()

    async def _sync_model(self, name: str, on_disk: dict[int, Path]) -> None:
        entries = self._versions.setdefault(name, {})
        for version in set(entries) - set(on_disk):
            await self._unload(entries[version])
        pinned = set(self.settings.pinned_versions.get(name, [])) & set(on_disk)
        if self.settings.version_policy == "all":
            for version in sorted(on_disk):
                await self._load_if_needed(name, version, on_disk[version])
            return
        for version in sorted(pinned):
            await self._load_if_needed(name, version, on_disk[version])
        # The newest version that loads serves; a newest one that fails leaves the
        # previous one in place (or, at start-up, walks back to one that loads).
        for version in sorted(on_disk, reverse=True):
            await self._load_if_needed(name, version, on_disk[version])
            if entries[version].state is ModelState.READY:
                break
        newest = self.served(name)
        keep = pinned | ({newest.version} if newest else set())
        for entry in list(entries.values()):
            if entry.state is ModelState.READY and entry.version not in keep:
                await self._unload(entry)

    async def _load_if_needed(self, name: str, version: int, path: Path) -> None:
        """Load a version not tried yet, or one that failed and whose files changed since."""
        entry = self._versions[name].get(version)
        if entry is None or (
            entry.state is ModelState.FAILED and entry.fingerprint != _fingerprint(path)
        ):
            await self._load(name, version, path)

    def _scan(self) -> dict[str, dict[int, Path]]:
        root = self.settings.model_dir
        self._problems = {}
        if not root.is_dir():
            logger.error("model directory %s does not exist; no models will be served", root)
            return {}
        found: dict[str, dict[int, Path]] = {}
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            name = model_dir.name
            if name.startswith(".") or not is_valid_model_name(name):
                continue
            versions = {
                int(p.name): p for p in model_dir.iterdir() if p.is_dir() and _is_version(p.name)
            }
            if versions:
                found[name] = versions
            else:
                self._problems[name] = f"no version folders (expected {model_dir}/<integer>/)"
        return found

    async def _load(self, name: str, version: int, path: Path) -> None:
        entry = ServedModel(name=name, version=version, path=path, fingerprint=_fingerprint(path))
        self._versions[name][version] = entry
        started = time.perf_counter()
        try:
            card = ModelCard.read(path)
            if card.name != name or card.version != version:
                raise ValueError(
                    f"model card says {card.name} version {card.version}, but the folder is "
                    f"{name}/{version}"
                )
            runtime = ModelRuntime(card, path, self.device)
            await asyncio.to_thread(runtime.load)
            await asyncio.to_thread(runtime.warm_up, (1, self.settings.max_batch_size))
        except FileNotFoundError as error:
            self._fail(entry, f"missing file: {error.filename or error}")
            return
        except Exception as error:
            self._fail(entry, f"{type(error).__name__}: {error}")
            return
        batcher = MicroBatcher(
            runtime.predict_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_seconds=self.settings.max_batch_wait_ms / 1000,
            name=f"{name}-{version}",
            observer=self._batch_observer(name) if self._batch_observer else None,
        )
        batcher.start()
        entry.card, entry.runtime, entry.batcher, entry.device = card, runtime, batcher, self.device
        entry.ready_seconds = time.perf_counter() - started
        entry.state = ModelState.READY
        logger.info(
            "model %s version %s ready on %s in %.2f s",
            name,
            version,
            self.device.kind,
            entry.ready_seconds,
        )

    async def _unload(self, entry: ServedModel) -> None:
        logger.info("unloading model %s version %s", entry.name, entry.version)
        await entry.unload()
        versions = self._versions.get(entry.name, {})
        if versions.get(entry.version) is entry:
            del versions[entry.version]
        if not versions:
            self._versions.pop(entry.name, None)

    def _fail(self, entry: ServedModel, reason: str) -> None:
        self.load_failures[entry.name] += 1
        entry.state = ModelState.FAILED
        entry.error = reason
        logger.error("model %s version %s cannot be served: %s", entry.name, entry.version, reason)

    async def watch(self, interval_seconds: float) -> None:
        """Sync with the disk every `interval_seconds`, until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.sync()
            except Exception:  # a bad tick must not end the watch
                logger.exception("model directory rescan failed")

    async def close(self) -> None:
        """Drain and release every model."""
        async with self._sync_lock:
            self._closed = True
            for versions in list(self._versions.values()):
                for entry in list(versions.values()):
                    await self._unload(entry)


def _is_version(folder_name: str) -> bool:
    return folder_name.isdigit() and int(folder_name) > 0


def _fingerprint(path: Path) -> tuple[float, ...]:
    """Modification times that change when a version's files are replaced."""
    stamps = []
    for candidate in (path, path / MODEL_CARD_FILENAME, path / "saved_model.pb"):
        try:
            stamps.append(candidate.stat().st_mtime)
        except OSError:
            stamps.append(0.0)
    return tuple(stamps)
