"""HTTP checks of a running container, for `.ci/container-test`. Standard library only.

It runs on the host with whatever `python3` is there (no numpy, no Pillow): MNIST digits
are read straight from the `.npy` arrays inside `mnist.npz` and written as PNG by hand.

    python3 container_smoke.py wait URL --cid CID [--timeout S] [--since EPOCH]
    python3 container_smoke.py check URL [--data DIR]
"""

from __future__ import annotations

import argparse
import ast
import json
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
import zlib
from pathlib import Path

# What the image ships: every model folder of the checkout's models/, which it copies.
MODELS = tuple(
    sorted(p.name for p in (Path(__file__).resolve().parents[2] / "models").iterdir() if p.is_dir())
)
MNIST_MIN_CORRECT = 8  # of 10 test digits, one per class; the shipped MLP gets ~98 %


class CheckFailed(Exception):
    """A check did not pass; the message says which and why."""


# --------------------------------------------------------------------------- images


def png_gray(pixels: bytes, width: int, height: int) -> bytes:
    """An 8-bit grayscale PNG of `pixels` (row-major, one byte a pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def read_npy(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], bytes]:
    """Shape and raw bytes of a uint8 C-order array stored in an .npz."""
    raw = archive.read(f"{name}.npy")
    if raw[:6] != b"\x93NUMPY":
        raise CheckFailed(f"{name}.npy is not a .npy array")
    if raw[6] == 1:
        (length,), start = struct.unpack("<H", raw[8:10]), 10
    else:
        (length,), start = struct.unpack("<I", raw[8:12]), 12
    header = ast.literal_eval(raw[start : start + length].decode("latin1"))
    if header["descr"] not in ("|u1", "<u1", "u1") or header["fortran_order"]:
        raise CheckFailed(f"{name}.npy is {header}, expected uint8 in C order")
    return tuple(header["shape"]), raw[start + length :]


def mnist_digits(npz: Path) -> list[tuple[str, bytes, str]]:
    """The first test digit of each class 0..9 as (filename, PNG, true label)."""
    with zipfile.ZipFile(npz) as archive:
        (count, height, width), images = read_npy(archive, "x_test")
        _, labels = read_npy(archive, "y_test")
    size = height * width
    found: dict[int, int] = {}
    for index in range(count):
        found.setdefault(labels[index], index)
        if len(found) == 10:
            break
    return [
        (
            f"mnist-test-{index}-label-{digit}.png",
            png_gray(images[index * size : (index + 1) * size], width, height),
            str(digit),
        )
        for digit, index in sorted(found.items())
    ]


def drawn_seven() -> list[tuple[str, bytes, str]]:
    """A 7 drawn with two strokes, white on black, when the MNIST file is absent."""
    size = 28
    pixels = bytearray(size * size)
    for x in range(7, 22):  # the bar
        for y in (6, 7, 8):
            pixels[y * size + x] = 255
    for y in range(8, 23):  # the stem, leaning left as it goes down
        x = 21 - (y - 8) * 10 // 14
        for dx in (-1, 0, 1):
            pixels[y * size + x + dx] = 255
    return [("drawn-7.png", png_gray(bytes(pixels), size, size), "7")]


def xrays(folder: Path) -> list[tuple[str, bytes, str]]:
    """One real test X-ray of each class, or a synthetic gradient when there is none."""
    picked = []
    for label in ("NORMAL", "PNEUMONIA"):
        files = sorted((folder / label).glob("*.jpeg")) if folder.is_dir() else []
        if files:
            picked.append((files[0].name, files[0].read_bytes(), label))
    if picked:
        return picked
    width, height = 96, 80
    pixels = bytes((x * 2 + y) % 256 for y in range(height) for x in range(width))
    return [("synthetic-xray.png", png_gray(pixels, width, height), "")]


# --------------------------------------------------------------------------- HTTP


def request(
    url: str, body: bytes | None = None, content_type: str = "", timeout: float = 60
) -> tuple[int, dict]:
    """Status and JSON body of a GET (or POST when `body` is given)."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            return error.code, json.loads(payload)
        except ValueError:
            return error.code, {"raw": payload.decode(errors="replace")}


def multipart(files: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body with every file in the field `files`."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data, _label in files:
        kind = "image/jpeg" if name.endswith((".jpeg", ".jpg")) else "image/png"
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{name}"\r\nContent-Type: {kind}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def predict(base: str, model: str, files: list[tuple[str, bytes, str]]) -> list[dict]:
    body, content_type = multipart(files)
    status, payload = request(f"{base}/api/v1/models/{model}/predict", body, content_type)
    if status != 200:
        raise CheckFailed(f"POST {model}/predict -> {status}: {payload}")
    predictions = payload.get("predictions", [])
    if len(predictions) != len(files):
        raise CheckFailed(f"{model}: {len(files)} files sent, {len(predictions)} predictions back")
    return predictions


# --------------------------------------------------------------------------- commands


def container_running(cid: str) -> bool:
    result = subprocess.run(
        ["podman", "container", "inspect", "--format", "{{.State.Running}}", cid],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() == "true"


def wait_ready(base: str, cid: str, timeout: float, since: float) -> float:
    """Poll /readyz until 200; seconds since `since`. Fails early if the container exits."""
    deadline = time.monotonic() + timeout
    last_check = 0.0
    reasons: object = "no answer yet"
    while time.monotonic() < deadline:
        try:
            status, payload = request(f"{base}/readyz", timeout=2)
            if status == 200:
                return time.time() - since
            reasons = payload.get("reasons", payload) if isinstance(payload, dict) else payload
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reasons = f"{type(error).__name__}: {error}"
        if cid and time.monotonic() - last_check > 1:
            last_check = time.monotonic()
            if not container_running(cid):
                raise CheckFailed(f"container {cid[:12]} exited before it was ready")
        time.sleep(0.1)
    raise CheckFailed(f"/readyz not 200 after {timeout:.0f} s: {reasons}")


def check(base: str, data: Path) -> None:
    status, payload = request(f"{base}/healthz")
    if status != 200:
        raise CheckFailed(f"GET /healthz -> {status}: {payload}")
    print("ok: GET /healthz 200")

    status, payload = request(f"{base}/api/v1/models")
    if status != 200:
        raise CheckFailed(f"GET /api/v1/models -> {status}: {payload}")
    served = {model["name"]: model for model in payload["models"]}
    for name in MODELS:
        model = served.get(name)
        if model is None:
            raise CheckFailed(f"{name} is not served (served: {sorted(served)})")
        if model["status"] != "ready":
            raise CheckFailed(f"{name} is {model['status']}: {model.get('error')}")
    listed = ", ".join(f"{n} v{served[n]['version']} on {served[n]['device']}" for n in MODELS)
    print(f"ok: GET /api/v1/models: {listed}, all ready")

    npz = data / "mnist.npz"
    digits = mnist_digits(npz) if npz.is_file() else drawn_seven()
    predictions = predict(base, "mnist-mlp", digits)
    correct = sum(p["label"] == label for p, (_, _, label) in zip(predictions, digits, strict=True))
    got = " ".join(p["label"] for p in predictions)
    if npz.is_file():
        if correct < MNIST_MIN_CORRECT:
            raise CheckFailed(f"mnist-mlp read {correct}/10 test digits right (labels: {got})")
        print(f"ok: POST mnist-mlp/predict, 10 real MNIST test digits: {correct}/10 right ({got})")
    else:
        print(f"ok: POST mnist-mlp/predict, a drawn 7 (no {npz}): read as {got}")

    images = xrays(data / "chest_xray" / "test")
    predictions = predict(base, "pneumonia-cnn", images)
    classes = set(served["pneumonia-cnn"]["class_names"])
    shown = []
    for prediction, (name, _, label) in zip(predictions, images, strict=True):
        if prediction["label"] not in classes:
            raise CheckFailed(f"pneumonia-cnn answered {prediction['label']!r} for {name}")
        truth = f" (true: {label})" if label else ""
        shown.append(f"{name} -> {prediction['label']} {prediction['confidence']:.2f}{truth}")
    print(f"ok: POST pneumonia-cnn/predict: {'; '.join(shown)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    wait = commands.add_parser("wait", help="wait for /readyz 200; print the seconds it took")
    wait.add_argument("url")
    wait.add_argument("--cid", default="", help="fail early when this container exits")
    wait.add_argument("--timeout", type=float, default=180)
    wait.add_argument("--since", type=float, default=None, help="start time (epoch seconds)")
    run = commands.add_parser("check", help="models listed and ready, real predictions")
    run.add_argument("url")
    run.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args(argv)
    try:
        if args.command == "wait":
            since = args.since if args.since is not None else time.time()
            print(f"{wait_ready(args.url, args.cid, args.timeout, since):.2f}")
        else:
            check(args.url, args.data)
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
