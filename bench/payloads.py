"""Request bodies the benchmark sends: real images as multipart uploads.

Every body is built once per run from the real data (`mnist.npz`, `chest_xray/test`)
and written to a file that wrk's Lua script sends unchanged, so the load generator
does no work per request beyond writing bytes.
"""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FULL_SIZE_SHORT_SIDE = 2000
"""Shorter side of the 'typical full size' X-ray: the dataset stores them at 256 px."""


@dataclass(frozen=True)
class Payload:
    """One multipart body on disk, and what it holds."""

    name: str
    path: Path  # the body, exactly as sent
    content_type: str  # multipart/form-data; boundary=...
    images: int  # images per request
    image_bytes: int  # bytes of image data in the body (excluding multipart framing)
    description: str


def encode_multipart(
    files: list[tuple[str, bytes, str]], field: str = "files"
) -> tuple[bytes, str]:
    """A multipart/form-data body with one part per (filename, data, content type)."""
    boundary = f"bench{secrets.token_hex(12)}"
    parts = []
    for filename, data, content_type in files:
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        parts.append(head + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def mnist_pngs(data_dir: Path, count: int) -> list[tuple[str, bytes, str]]:
    """The first `count` MNIST test digits as 28x28 grayscale PNGs."""
    with np.load(data_dir / "mnist.npz") as data:
        digits = data["x_test"][:count]
    files = []
    for index, digit in enumerate(digits):
        buffer = io.BytesIO()
        Image.fromarray(digit.astype(np.uint8), mode="L").save(buffer, "PNG")
        files.append((f"digit-{index}.png", buffer.getvalue(), "image/png"))
    return files


def xray_paths(data_dir: Path, count: int) -> list[Path]:
    """`count` real chest X-rays from the test split, alternating NORMAL and PNEUMONIA."""
    root = data_dir / "chest_xray" / "test"
    normal = sorted((root / "NORMAL").glob("*.jpeg"))
    pneumonia = sorted((root / "PNEUMONIA").glob("*.jpeg"))
    mixed = [path for pair in zip(normal, pneumonia, strict=False) for path in pair]
    if len(mixed) < count:
        raise FileNotFoundError(f"need {count} X-rays under {root}, found {len(mixed)}")
    return mixed[:count]


def xray_jpegs(data_dir: Path, count: int) -> list[tuple[str, bytes, str]]:
    """`count` real chest X-rays as stored (JPEG, shorter side 256 px), bytes unchanged."""
    return [(p.name, p.read_bytes(), "image/jpeg") for p in xray_paths(data_dir, count)]


def full_size_xray(data_dir: Path) -> tuple[str, bytes, str]:
    """A real X-ray upscaled to a typical radiograph's size (shorter side ~2000 px)."""
    path = xray_paths(data_dir, 1)[0]
    with Image.open(path) as image:
        image.load()
        scale = FULL_SIZE_SHORT_SIDE / min(image.size)
        size = (round(image.width * scale), round(image.height * scale))
        large = image.convert("L").resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    large.save(buffer, "JPEG", quality=90)
    return f"full-{path.name}", buffer.getvalue(), "image/jpeg"


def build_payloads(data_dir: Path, out_dir: Path) -> dict[str, Payload]:
    """Write every body the benchmark sends into `out_dir`; return them by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    full = full_size_xray(data_dir)
    with Image.open(io.BytesIO(full[1])) as image:
        full_size = f"{image.width}x{image.height}"
    specs = {
        "digit": (mnist_pngs(data_dir, 1), "one 28x28 MNIST PNG"),
        "digits16": (mnist_pngs(data_dir, 16), "16 MNIST PNGs in one upload"),
        "xray": (xray_jpegs(data_dir, 1), "one real chest X-ray JPEG at its stored size"),
        "xray16": (xray_jpegs(data_dir, 16), "16 real chest X-rays at stored size, one upload"),
        "xray-full": ([full], f"one chest X-ray JPEG upscaled to {full_size}"),
    }
    payloads = {}
    for name, (files, description) in specs.items():
        body, content_type = encode_multipart(files)
        path = out_dir / f"{name}.body"
        path.write_bytes(body)
        payloads[name] = Payload(
            name=name,
            path=path,
            content_type=content_type,
            images=len(files),
            image_bytes=sum(len(data) for _, data, _ in files),
            description=description,
        )
    return payloads
