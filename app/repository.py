"""The model repository: finds exported models on disk, loads them, and hands them out.

Layout (TensorFlow Serving's, plus a model card):
`<model_dir>/<name>/<version>/{saved_model.pb, variables/, model_card.json}`.
Folders whose names are not positive integers (such as the hidden folders an atomic
export writes into) are ignored. As in TF Serving, the folders name what is served: a
version folder copied to a new number serves as that number, and a model folder copied
under a new name serves under that name, whatever its model card recorded (the status
APIs show the recorded name and version beside the served ones).

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

import ast
import asyncio
import contextlib
import enum
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.batching import BatchObserver, BatchTrace, MicroBatcher, inline_limit
from app.contract.model_card import MODEL_CARD_FILENAME, ModelCard, is_valid_model_name
from app.devices import DevicePlacement
from app.errors import ModelNotFound, ModelNotReady
from app.runtime import ModelRuntime, RuntimeInfo, RuntimeOptions
from app.settings import Settings

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
MODEL_DIR_HINT = (
    "point VISION_SERVING_MODEL_DIR (or --model-dir) at the folder that holds the model folders"
)


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
    card_name: str | None = None  # as recorded in model_card.json, once it was read
    card_version: int | None = None
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

    @property
    def runtime_info(self) -> RuntimeInfo | None:
        """What runs this version (LiteRT or the SavedModel) and why; None until loaded."""
        return self.runtime.info if self.runtime is not None else None

    async def predict(
        self, pixels: NDArray[np.float32], trace: BatchTrace | None = None
    ) -> NDArray[np.float32]:
        """Queue `[k, H, W, C]` pixels on this model's batcher; `[k, classes]` back.

        `trace`: the request's trace, when it is traced (`app.tracing`).
        """
        if self.batcher is None:
            raise ModelNotReady(f"model {self.name} version {self.version} is {self.state}")
        return await self.batcher.submit(pixels, busy=lambda: self.in_flight > 1, trace=trace)

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
        self._on_disk: dict[str, dict[int, Path]] = {}  # the last scan's version folders
        self._directory_problem: str | None = None  # why the model directory yields no model
        self._logged_findings: frozenset[str] = frozenset()  # scan findings already logged
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

    def directory_problem(self) -> str | None:
        """Why the model directory yields no model (missing, empty, one level too deep)."""
        return self._directory_problem

    def knows(self, name: str) -> bool:
        """Whether `name` is a model on disk or in memory (cheap: asked per request)."""
        return name in self._versions or name in self._problems

    def knows_version(self, name: str, version: int) -> bool:
        """Whether `version` of `name` is on disk or in memory, served or not."""
        return version in self._versions.get(name, {}) or version in self._on_disk.get(name, {})

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
            if self._loads_soon(name, version):  # a 503: retrying is the right thing to do
                raise ModelNotReady(self.why_not_served(name, version))
            raise ModelNotFound(self.why_not_served(name, version), model=name, version=version)
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
            return [self._directory_problem or _no_models_found(self.settings.model_dir)]
        return [f"{name}: {self._why_not(name)}" for name in names if self.served(name) is None]

    def _why_not(self, name: str) -> str:
        if name in self._problems:
            return self._problems[name]
        entries = self._versions.get(name, {}).values()
        if any(e.state is ModelState.LOADING for e in entries):
            return "still loading; retry shortly"
        errors = [f"version {e.version}: {e.error}" for e in entries if e.error]
        return "; ".join(errors) or "no version loaded"

    def why_not_served(self, name: str, version: int) -> str:
        """Why `version` of a known model takes no requests, and how to make it take them."""
        on_disk = self._on_disk.get(name, {})
        if version not in on_disk:
            listed = ", ".join(map(str, sorted(on_disk))) or "none"
            folder = self.settings.model_dir / name / str(version)
            return (
                f"model {name!r} has no version {version}: there is no folder {folder}; "
                f"versions on disk: {listed}"
            )
        served = self.served(name)
        pinned = self.settings.pinned_versions.get(name, [])
        if self._loads_soon(name, version):
            return (
                f"model {name!r} version {version} is on disk but not loaded yet; it loads at "
                "the next rescan of the model directory (or POST /api/v1/admin/rescan): "
                "retry shortly"
            )
        assert served is not None  # else it would load soon
        # The settings value that would serve it, keeping the pins already there.
        wanted = {**self.settings.pinned_versions, name: sorted({*pinned, version})}
        return (
            f"model {name!r} version {version} is on disk but not served: the version policy "
            f"is 'latest', which serves only the newest version that loads ({served.version}); "
            f"to serve it too, set VISION_SERVING_PINNED_VERSIONS='{json.dumps(wanted)}' or "
            "VISION_SERVING_VERSION_POLICY=all"
        )

    def _loads_soon(self, name: str, version: int) -> bool:
        """Whether `version` is on disk and wanted, but the sync that found it has not
        loaded it yet (it is loading another version first)."""
        if version not in self._on_disk.get(name, {}):
            return False
        served = self.served(name)
        return (
            self.settings.version_policy == "all"
            or version in self.settings.pinned_versions.get(name, [])
            or served is None
            or version > served.version
        )

    def _not_found(self, name: str) -> ModelNotFound:
        known = ", ".join(self.names()) or "none"
        message = f"no model named {name!r}; served models: {known}"
        if self._directory_problem is not None:
            message += f" ({self._directory_problem})"
        return ModelNotFound(message, model=name)

    # Syncing with the disk -----------------------------------------------------------

    async def sync(self) -> None:
        """Load what the disk and the version policy want, and unload what they don't.

        A model directory that cannot be read raises (`OSError`) and leaves what is
        served as it was; its error is shown in the status APIs from then on.
        """
        try:
            async with self._sync_lock:
                if self._closed:
                    return
                on_disk = self._scan()
                for name in set(self._versions) - set(on_disk):
                    for entry in list(self._versions[name].values()):
                        await self._unload(entry)
                for name, versions in on_disk.items():
                    await self._sync_model(name, versions)
        finally:
            # Even a first sync that failed has a result worth reporting: its error.
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
        """The version folders on disk, by model; keeps and logs what is wrong with them.

        A model directory set one or two levels too deep (a model's folder, or a version
        folder) is recognised and explained rather than read as models named "1" or
        "variables".
        """
        root = self.settings.model_dir
        found: dict[str, dict[int, Path]] = {}
        problems: dict[str, str] = {}
        findings: list[tuple[int, str]] = []  # (log level, message) for the operator
        directory_problem: str | None = None
        directory_level = logging.WARNING
        if not root.is_dir():
            directory_level = logging.ERROR
            directory_problem = (
                f"model directory {root} does not exist; {MODEL_DIR_HINT} "
                f"({root}/<name>/<version>/saved_model.pb)"
            )
        elif _is_version_folder(root) and _is_version(root.name):
            directory_problem = (
                f"{root} looks like a version folder (it holds {_version_files(root)[0]}); "
                f"set the model directory to the folder two levels up, {_ancestor(root, 2)}"
            )
        elif _is_version_folder(root):
            directory_problem = (
                f"{root} holds {_version_files(root)[0]} itself, not model folders: move "
                f"its files into {root}/<name>/1/ (a model folder, then a version folder), "
                f"or {MODEL_DIR_HINT}"
            )
        else:
            stray_versions: list[str] = []
            try:
                folders = sorted(p for p in root.iterdir() if p.is_dir())
            except OSError as error:  # permissions, a network share gone away
                self._directory_problem = (
                    f"model directory {root} cannot be read ({error.strerror or error}); "
                    "give the service's user read access to it"
                )
                self._log_new([(logging.ERROR, self._directory_problem)])
                raise
            for folder in folders:
                name = folder.name
                # An export in progress, a tool's folder, a file system's own folder.
                if name.startswith(".") or name == "lost+found":
                    continue
                if _is_version(name) and _is_version_folder(folder):
                    stray_versions.append(name)
                elif not is_valid_model_name(name):
                    findings.append((logging.WARNING, _not_a_model_name(folder)))
                elif versions := _version_folders(folder):
                    found[name] = versions
                elif _only_hidden_entries(folder):
                    continue  # a new model's first export, staged in `.tmp-*`: not yet a model
                else:
                    problems[name] = _no_version_folders(folder)
                    findings.append((logging.WARNING, f"model {name}: {problems[name]}"))
            listed = ", ".join(sorted(stray_versions, key=int))
            if stray_versions and not found and not problems:
                directory_problem = (
                    f"{root} looks like one model's folder (it holds version folders "
                    f"{listed}); set the model directory to its parent, {_ancestor(root, 1)}"
                )
            elif stray_versions:
                findings.append(
                    (
                        logging.WARNING,
                        f"version folders {listed} lie directly in the model directory {root} "
                        f"and are not served: move them into a model folder, {root}/<name>/",
                    )
                )
            elif not found and not problems:
                directory_problem = _no_models_found(root)
        if directory_problem is not None:
            findings.append((directory_level, directory_problem))
        self._on_disk, self._problems = found, problems
        self._directory_problem = directory_problem
        self._log_new(findings)
        return found

    def _log_new(self, findings: list[tuple[int, str]]) -> None:
        """Log each finding when it appears, not again on every watch tick while it lasts."""
        for level, message in findings:
            if message not in self._logged_findings:
                logger.log(level, "%s", message)
        self._logged_findings = frozenset(message for _, message in findings)

    async def _load(self, name: str, version: int, path: Path) -> None:
        entry = ServedModel(name=name, version=version, path=path, fingerprint=_fingerprint(path))
        self._versions[name][version] = entry
        started = time.perf_counter()
        try:
            recorded = ModelCard.read(path)
            entry.card_name, entry.card_version = recorded.name, recorded.version
            card = _card_as_served(recorded, name, version, path)
            runtime = ModelRuntime(card, path, self.device, self._runtime_options())
            await asyncio.to_thread(runtime.load)
            costs = await asyncio.to_thread(runtime.warm_up, (1, self.settings.max_batch_size))
        except Exception as error:
            self._fail(entry, _load_failure(error, path))
            return
        batcher = MicroBatcher(
            runtime.predict_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_seconds=self.settings.max_batch_wait_ms / 1000,
            name=f"{name}-{version}",
            observer=self._batch_observer(name) if self._batch_observer else None,
            inline_max_images=inline_limit(costs, self.settings.inline_max_us / 1e6),
        )
        batcher.start()
        entry.card, entry.runtime, entry.batcher, entry.device = card, runtime, batcher, self.device
        entry.ready_seconds = time.perf_counter() - started
        entry.state = ModelState.READY
        logger.info(
            "model %s version %s ready on %s in %.2f s; inline on the event loop while the "
            "model is idle: batches of up to %d image(s) (warm-up: %s)",
            name,
            version,
            self.device.kind,
            entry.ready_seconds,
            batcher.inline_max_images,
            ", ".join(f"batch {size} {seconds * 1e6:.0f} us" for size, seconds in costs.items()),
        )

    def _runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(
            preference=self.settings.runtime,
            cache_dir=self.settings.runtime_cache_dir,
            max_batch_size=self.settings.max_batch_size,
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


# Layout and load messages: each says what is wrong and what to do ------------------


def _version_files(folder: Path) -> list[str]:
    """The files of a version (a SavedModel, a model card) that `folder` holds itself."""
    names = (*SAVED_MODEL_FILES, MODEL_CARD_FILENAME)
    return [name for name in names if (folder / name).is_file()]


def _is_version_folder(folder: Path) -> bool:
    return bool(_version_files(folder))


def _version_folders(model_folder: Path) -> dict[int, Path]:
    return {int(p.name): p for p in model_folder.iterdir() if p.is_dir() and _is_version(p.name)}


def _ancestor(path: Path, levels: int) -> Path:
    """`path`'s ancestor, as the operator spelled it when it can be (`models`, not `/srv/..`)."""
    if len(path.parts) > levels and ".." not in path.parts:
        return path.parents[levels - 1]
    return path.resolve().parents[levels - 1]


def _no_models_found(root: Path) -> str:
    return (
        f"no models found in {root}: expected {root}/<name>/<version>/saved_model.pb and "
        f"model_card.json; {MODEL_DIR_HINT}"
    )


def _no_version_folders(model_folder: Path) -> str:
    if _is_version_folder(model_folder):
        return (
            f"{model_folder} holds {_version_files(model_folder)[0]} itself, not in a version "
            f"folder; move its files into {model_folder}/1/"
        )
    return (
        f"no version folders (expected {model_folder}/<integer>/ holding saved_model.pb and "
        f"{MODEL_CARD_FILENAME})"
    )


def _not_a_model_name(folder: Path) -> str:
    return (
        f"{folder} is not served: {folder.name!r} is not a model name (lower-case letters and "
        "digits in words joined by single hyphens, as in URLs); rename the folder"
    )


def _card_as_served(card: ModelCard, name: str, version: int, path: Path) -> ModelCard:
    """The card as served: the folders name the model and its version, as in TF Serving.

    Copying a version folder to the next number is how TF Serving users roll out, and it
    leaves the card's recorded name and version behind. The served copy carries the
    folders' (so the runtime, responses and metrics, which read the card, cannot report
    stale ones); the recorded values stay on the `ServedModel` for the status APIs.
    """
    if (card.name, card.version) == (name, version):
        return card
    # Another version number is a roll-out; another name is more likely a mistake.
    level = logging.INFO if card.name == name else logging.WARNING
    logger.log(
        level,
        "%s: its model card records %s version %s; serving it as %s version %s, as its "
        "folders say (the folder names are the model and version, as in TF Serving)",
        path,
        card.name,
        card.version,
        name,
        version,
    )
    return card.model_copy(update={"name": name, "version": version})


_INCOMPLETE = "the SavedModel is incomplete; re-export it, or copy the whole version folder again"


def _missing_file(version_folder: Path) -> tuple[Path, str] | None:
    """The first file a servable version folder lacks, with what to do about it."""
    card = version_folder / MODEL_CARD_FILENAME
    if not card.is_file():
        return card, (
            "every version folder needs the model card that training exports beside the "
            "SavedModel; re-export the model, or copy the whole version folder again"
        )
    if not any((version_folder / name).is_file() for name in SAVED_MODEL_FILES):
        return version_folder / SAVED_MODEL_FILES[0], _INCOMPLETE
    variables = version_folder / "variables"
    if not (variables / "variables.index").is_file():
        return variables / "variables.index", _INCOMPLETE
    if not any(variables.glob("variables.data-*")):
        return variables / "variables.data-*", _INCOMPLETE
    return None


def _load_failure(error: Exception, version_folder: Path) -> str:
    """Why the version in `version_folder` did not load, worded for the operator.

    Only asked after a load failed, so a folder laid out in some way not checked here
    still loads if TensorFlow can load it.
    """
    missing = _missing_file(version_folder)
    if missing is not None:
        path, what_to_do = missing
        return f"missing file: {path}; {what_to_do}"
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"missing file: {os.fsdecode(error.filename)}; {_INCOMPLETE}"
    message = _without_byte_strings(f"{type(error).__name__}: {error}")
    if isinstance(error, OSError) and "Cannot parse file" in str(error):  # TensorFlow's words
        message += "; the SavedModel is corrupt: re-export it, or copy the version folder again"
    return message


_BYTE_STRING = re.compile(r"""(?<!\w)b(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _without_byte_strings(text: str) -> str:
    """`text` with Python byte-string literals (TensorFlow names paths so) decoded."""

    def decoded(match: re.Match[str]) -> str:
        try:
            value = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            return match.group(0)
        return os.fsdecode(value) if isinstance(value, bytes) else match.group(0)

    return _BYTE_STRING.sub(decoded, text)


def _only_hidden_entries(folder: Path) -> bool:
    """Whether a model folder holds hidden entries only: what `training` has made of a new
    model while it stages its first version in `.tmp-<uuid>` (an empty folder is still
    reported: nothing is on its way into it)."""
    try:
        names = [entry.name for entry in folder.iterdir()]
    except OSError:
        return False
    return bool(names) and all(name.startswith(".") for name in names)


def _fingerprint(path: Path) -> tuple[float, ...]:
    """Modification times that change when a version's files are replaced."""
    stamps = []
    for candidate in (path, path / MODEL_CARD_FILENAME, path / "saved_model.pb"):
        try:
            stamps.append(candidate.stat().st_mtime)
        except OSError:
            stamps.append(0.0)
    return tuple(stamps)
