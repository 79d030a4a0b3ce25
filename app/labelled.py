"""Read labelled images for evaluation: a zip in the Kaggle layout, or files plus labels.

A zip is read in memory and never extracted to disk. Before any entry is decompressed
its path is checked (no absolute paths, no `..`, no symlinks), the entry count and the
declared uncompressed total are checked against the limits, and every entry is read
with a hard cap so a header that lies about its size cannot inflate past the limit.
An image's class is the name of the folder it sits in (`NORMAL/x.jpeg`,
`test/PNEUMONIA/y.jpeg`, `7/digit.png`).
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from app.contract.images import Upload
from app.errors import InvalidArchive, InvalidLabels, PayloadTooLarge

_IGNORED_PARTS = {"__MACOSX"}


@dataclass(frozen=True)
class LabelledUpload:
    upload: Upload
    label: int


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_uncompressed_bytes: int


def read_labelled_archive(
    data: bytes, class_names: Sequence[str], limits: ArchiveLimits
) -> list[LabelledUpload]:
    """Labelled uploads from a zip with one folder per class name."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as error:
        raise InvalidArchive(f"archive: not a readable zip file ({error})") from error
    with archive:
        entries = [info for info in archive.infolist() if not info.is_dir()]
        if len(entries) > limits.max_entries:
            raise PayloadTooLarge(
                f"archive: {len(entries)} entries is more than the limit of {limits.max_entries}"
            )
        declared = sum(info.file_size for info in entries)
        if declared > limits.max_uncompressed_bytes:
            raise PayloadTooLarge(
                f"archive: {declared:,} bytes uncompressed is more than the limit of "
                f"{limits.max_uncompressed_bytes:,}"
            )
        lookup = _class_lookup(class_names)
        labelled: list[LabelledUpload] = []
        unknown: set[str] = set()
        budget = limits.max_uncompressed_bytes
        for info in entries:
            path = _safe_path(info)
            if _is_ignored(path):
                continue
            folder = path.parent.name
            label = lookup.get(folder.lower())
            if label is None:
                unknown.add(folder or "(top level)")
                continue
            content = _read_capped(archive, info, budget)
            budget -= len(content)
            labelled.append(LabelledUpload(Upload(filename=str(path), data=content), label))
    if unknown:
        raise InvalidArchive(
            f"archive: folders {sorted(unknown)} are not class names; put each image in a "
            f"folder named after its class: {list(class_names)}"
        )
    if not labelled:
        raise InvalidArchive(
            f"archive: no images found; expected folders named {list(class_names)} with images"
        )
    return labelled


def parse_labels(
    text: str, uploads: Sequence[Upload], class_names: Sequence[str]
) -> list[LabelledUpload]:
    """Pair uploads with a comma-separated list of class names, in upload order."""
    labels = [label.strip() for label in text.split(",")] if text.strip() else []
    if len(labels) != len(uploads):
        raise InvalidLabels(
            f"labels: got {len(labels)} labels for {len(uploads)} files; give one class name "
            "per file, comma-separated, in file order"
        )
    lookup = _class_lookup(class_names)
    unknown = sorted({label for label in labels if label.lower() not in lookup})
    if unknown:
        raise InvalidLabels(
            f"labels: {unknown} are not class names; use one of {list(class_names)}"
        )
    return [
        LabelledUpload(upload, lookup[label.lower()])
        for upload, label in zip(uploads, labels, strict=True)
    ]


def _class_lookup(class_names: Sequence[str]) -> dict[str, int]:
    return {name.lower(): index for index, name in enumerate(class_names)}


def _safe_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise InvalidArchive(f"archive: unsafe path {info.filename!r} (absolute or with '..')")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InvalidArchive(f"archive: {info.filename!r} is a symbolic link; send plain files")
    return path


def _is_ignored(path: PurePosixPath) -> bool:
    return any(part in _IGNORED_PARTS or part.startswith(".") for part in path.parts)


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    try:
        with archive.open(info) as entry:
            content = entry.read(budget + 1)
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as error:
        raise InvalidArchive(f"archive: cannot read {info.filename!r} ({error})") from error
    if len(content) > budget:
        raise PayloadTooLarge(
            "archive: uncompressed content is larger than its headers declare and over the limit"
        )
    return content
