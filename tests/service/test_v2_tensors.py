"""The protocol's tensor encodings: binary BYTES and JSON read alike, and what is cut short,
left over or mis-declared is named."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from service.v2_tensors import Output, ProtocolError, decode, encode


def binary_bytes(*values: str) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def request(inputs: list[dict], blob: bytes = b"", **extra: object) -> tuple[bytes, str | None]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + blob, (str(len(header)) if blob else None)


def test_binary_and_json_bytes_tensors_decode_to_the_same_arrays() -> None:
    blob = binary_bytes("a", "", "ü", "d")
    body, length = request(
        [
            {
                "name": "candidates",
                "shape": [2, 2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(blob)},
            }
        ],
        blob,
    )
    from_binary = decode(body, length).inputs["candidates"]
    body, length = request(
        [
            {
                "name": "candidates",
                "shape": [2, 2],
                "datatype": "BYTES",
                "data": [["a", ""], ["ü", "d"]],
            }
        ]
    )
    from_json = decode(body, length).inputs["candidates"]
    assert from_binary.tolist() == from_json.tolist() == [["a", ""], ["ü", "d"]]


@pytest.mark.parametrize(
    ("blob", "size", "said"),
    [
        (binary_bytes("abc")[:-1], None, "cut short"),
        (binary_bytes("abc")[:2], None, "length is cut short"),
        (binary_bytes("a") + b"junk", 5, "bytes after the last binary input"),
        (binary_bytes("a"), 99, "does not fit"),
        (struct.pack("<I", 1) + b"\xff", None, "not UTF-8"),
    ],
)
def test_broken_binary_data_is_named(blob: bytes, size: int | None, said: str) -> None:
    declared = len(blob) if size is None else size
    body, length = request(
        [
            {
                "name": "user_id",
                "shape": [1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": declared},
            }
        ],
        blob,
    )
    with pytest.raises(ProtocolError, match=said):
        decode(body, length)


def test_a_header_length_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ProtocolError, match="does not fit a body of 2 bytes"):
        decode(b"{}", "10")
    with pytest.raises(ProtocolError, match="is not a number"):
        decode(b"{}", "ten")


def test_answers_carry_binary_outputs_after_their_json_header() -> None:
    values = np.array([[0.5, 0.25]], dtype=np.float32)
    ranking = np.array([[1, -1]], dtype=np.int64)
    body, headers = encode(
        {"model_name": "m"},
        [Output("click", "FP32", values, True), Output("ranking", "INT64", ranking, False)],
    )
    length = int(headers["inference-header-content-length"])
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.frombuffer(body[length:], dtype="<f4").tolist() == [0.5, 0.25]
    assert header["outputs"][1]["data"] == [1, -1]
    json_only, plain = encode({"model_name": "m"}, [Output("ranking", "INT64", ranking, False)])
    assert plain == {"content-type": "application/json"}
    assert json.loads(json_only)["outputs"][0]["shape"] == [1, 2]
