"""Open Inference Protocol binary tensor data: a JSON header, then raw tensor bytes.

A body is the JSON header followed by the tensors that declare
`parameters.binary_data_size`, back to back in the order they are listed; the
`Inference-Header-Content-Length` header says where the JSON ends (no header: the whole
body is JSON). Numbers are little-endian; each BYTES element is a 4-byte little-endian
length followed by its bytes. Triton's `tritonclient` sends and expects this by default.
Source: triton-inference-server/server `docs/protocol/extension_binary_data.md`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from fastapi.responses import Response

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

HEADER_LENGTH = "Inference-Header-Content-Length"

# zlib window bits for each Content-Encoding clients may compress a request with.
_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_LENGTH = struct.Struct("<I")


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo a gzip/deflate request encoding, refusing to inflate past `max_bytes`."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in _ENCODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or no encoding"
        )
    inflater = zlib.decompressobj(_ENCODINGS[encoding])
    try:
        inflated = inflater.decompress(body, max_bytes + 1)
    except zlib.error as error:
        raise InvalidInput(f"the {encoding} body cannot be decompressed ({error})") from None
    if len(inflated) > max_bytes:
        raise PayloadTooLarge(f"the decompressed body is over the limit of {max_bytes:,} bytes")
    return inflated


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail that follows it."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise InvalidInput(
            f"{HEADER_LENGTH} is {header_length!r}, but must be a byte count from 0 to the "
            f"body's {len(body)} bytes"
        )
    return body[:length], body[length:]


def take_buffers(
    sizes: Sequence[int | None], tail: bytes, names: Sequence[str]
) -> list[bytes | None]:
    """Cut the binary tail into each tensor's bytes (None where it sent JSON data)."""
    buffers: list[bytes | None] = []
    offset = 0
    for size, name in zip(sizes, names, strict=True):
        if size is None:
            buffers.append(None)
            continue
        if offset + size > len(tail):
            raise InvalidInput(
                f"input {name!r} declares binary_data_size {size}, but only "
                f"{len(tail) - offset} bytes of binary data are left after the JSON header"
            )
        buffers.append(tail[offset : offset + size])
        offset += size
    if offset != len(tail):
        raise InvalidInput(
            f"{len(tail) - offset} bytes after the JSON header belong to no input; check "
            f"{HEADER_LENGTH} and each input's binary_data_size"
        )
    return buffers


def decode_bytes_elements(buffer: bytes, what: str) -> list[bytes]:
    """Split BYTES tensor data into its length-prefixed elements."""
    elements = []
    offset = 0
    while offset < len(buffer):
        if offset + _LENGTH.size > len(buffer):
            raise InvalidInput(f"binary BYTES data of {what} ends inside an element's length")
        (length,) = _LENGTH.unpack_from(buffer, offset)
        offset += _LENGTH.size
        if offset + length > len(buffer):
            raise InvalidInput(
                f"binary BYTES data of {what}: an element of {length} bytes runs past the end"
            )
        elements.append(buffer[offset : offset + length])
        offset += length
    return elements


def encode_bytes_elements(elements: Sequence[bytes]) -> bytes:
    """BYTES tensor data: each element prefixed with its 4-byte little-endian length."""
    return b"".join(_LENGTH.pack(len(element)) + element for element in elements)


def binary_response(header: bytes, buffers: Sequence[bytes]) -> Response:
    """A response whose JSON header is followed by the outputs' raw bytes."""
    return Response(
        content=header + b"".join(buffers),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )
