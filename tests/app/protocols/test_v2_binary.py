"""The binary tensor data framing: header split, tensor buffers, BYTES elements, encodings."""

from __future__ import annotations

import gzip

import pytest

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.protocols import v2_binary


def test_split_body_without_header_length_is_all_json() -> None:
    assert v2_binary.split_body(b'{"a": 1}', None) == (b'{"a": 1}', b"")
    assert v2_binary.split_body(b'{"a": 1}xyz', "8") == (b'{"a": 1}', b"xyz")


@pytest.mark.parametrize("length", ["-1", "12", "1.5", ""])
def test_split_body_refuses_a_length_outside_the_body(length: str) -> None:
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        v2_binary.split_body(b"{}0123456", length)


def test_take_buffers_in_order_skipping_json_inputs() -> None:
    buffers = v2_binary.take_buffers([2, None, 3], b"abcde", ["x", "y", "z"])
    assert buffers == [b"ab", None, b"cde"]


def test_bytes_elements_round_trip() -> None:
    elements = [b"", b"\x00\xff", b"png" * 100]
    encoded = v2_binary.encode_bytes_elements(elements)
    assert encoded[:4] == b"\x00\x00\x00\x00"  # little-endian length of the empty element
    assert v2_binary.decode_bytes_elements(encoded, "input 'x'") == elements


def test_decompress_gzip_within_the_limit() -> None:
    body = b"{}" * 100
    assert v2_binary.decompress(gzip.compress(body), "gzip", max_bytes=200) == body
    assert v2_binary.decompress(body, None, max_bytes=1) == body  # identity: not checked here


def test_decompress_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\x00" * 1_000_000)
    with pytest.raises(PayloadTooLarge):
        v2_binary.decompress(bomb, "gzip", max_bytes=10_000)


def test_decompress_refuses_unknown_encodings() -> None:
    with pytest.raises(UnsupportedMediaType, match="'br'"):
        v2_binary.decompress(b"", "br", max_bytes=10)


def test_binary_response_announces_the_header_length() -> None:
    response = v2_binary.binary_response(b'{"outputs": []}', [b"\x01\x02", b"\x03"])
    assert response.body == b'{"outputs": []}\x01\x02\x03'
    assert response.headers["Inference-Header-Content-Length"] == "15"
    assert response.media_type == "application/octet-stream"
