"""Tensors of the Open Inference Protocol (KServe v2 REST) in both of its encodings.

A request body is a JSON header, optionally followed by raw tensor bytes (the binary tensor
data extension): `Inference-Header-Content-Length` gives the header's length, and each input
with `parameters.binary_data_size` takes that many bytes from what follows, in input order.
BYTES elements are 4-byte little-endian lengths followed by the bytes; in JSON they are strings.
Answers follow the same rule: an output asked for in binary (its `parameters.binary_data`, or
the request's `binary_data_output`) is sent as raw bytes after the JSON header.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

HEADER_LENGTH = "inference-header-content-length"
DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "INT64": np.dtype("<i8")}  # answers


class ProtocolError(ValueError):
    """A request the protocol cannot read (400 with `{"error": ...}`)."""


class V2Input(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int] = Field(max_length=8)
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class V2Output(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class V2Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[V2Input] = Field(min_length=1, max_length=16)
    outputs: list[V2Output] | None = None


@dataclass(frozen=True)
class Request:
    """A decoded infer request: its BYTES inputs as arrays of str, shaped."""

    header: V2Request
    inputs: dict[str, np.ndarray]  # name -> object array of str, of the declared shape

    def binary(self, name: str) -> bool:
        """Whether output `name` goes back as raw bytes."""
        default = bool(self.header.parameters.get("binary_data_output", False))
        for wanted in self.header.outputs or ():
            if wanted.name == name:
                return bool(wanted.parameters.get("binary_data", default))
        return default


def decode(body: bytes, header_length: str | None) -> Request:
    """Read an infer request (JSON, or JSON + binary tensor data).

    Raises:
        ProtocolError: what is wrong with it, naming the input.
    """
    json_part, binary = _split(body, header_length)
    try:
        header = V2Request.model_validate_json(json_part)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ProtocolError(f"{where}: {first['msg']}") from None
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in header.inputs:
        if tensor.name in inputs:
            raise ProtocolError(f"input {tensor.name!r} is given twice")
        if tensor.datatype != "BYTES":
            raise ProtocolError(f"input {tensor.name!r} must be BYTES, got {tensor.datatype}")
        if any(d < 0 for d in tensor.shape):
            raise ProtocolError(f"input {tensor.name!r}: shape {tensor.shape} has a negative size")
        count = math.prod(tensor.shape)
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(
                    f"input {tensor.name!r}: binary_data_size {size!r} does not fit the "
                    f"{len(binary) - offset} bytes left of the body"
                )
            values = list(_bytes_elements(binary[offset : offset + size], tensor.name))
            offset += size
        else:
            values = list(_json_elements(tensor.data, tensor.name))
        if len(values) != count:
            raise ProtocolError(
                f"input {tensor.name!r}: shape {tensor.shape} holds {count} elements, "
                f"{len(values)} were sent"
            )
        array = np.empty(count, dtype=object)
        array[:] = values
        inputs[tensor.name] = array.reshape(tensor.shape)
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes after the last binary input")
    return Request(header, inputs)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise ProtocolError(
            f"Inference-Header-Content-Length {header_length!r} is not a number"
        ) from None
    if not 0 < length <= len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length {length} does not fit a body of {len(body)} bytes"
        )
    return body[:length], body[length:]


def _bytes_elements(raw: bytes, name: str) -> Iterator[str]:
    """The elements of a binary BYTES tensor, decoded as UTF-8."""
    at = 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise ProtocolError(f"input {name!r}: a BYTES element's length is cut short")
        (size,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + size > len(raw):
            raise ProtocolError(f"input {name!r}: a BYTES element is cut short")
        yield _text(raw[at : at + size], name)
        at += size


def _json_elements(data: Any, name: str) -> Iterator[str]:
    """The elements of a JSON tensor (nested lists flattened in row-major order)."""
    if data is None:
        raise ProtocolError(f"input {name!r} has neither data nor binary_data_size")
    stack = [iter(data if isinstance(data, list) else [data])]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            if not isinstance(value, str):
                raise ProtocolError(f"input {name!r}: BYTES data must be strings, got {value!r}")
            yield value
        else:
            stack.pop()


def _text(raw: bytes, name: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"input {name!r}: an element is not UTF-8") from None


@dataclass(frozen=True)
class Output:
    """One output tensor of an answer."""

    name: str
    datatype: str  # a key of DTYPES, or BYTES (an array of str)
    values: np.ndarray
    binary: bool


def _blob(out: Output) -> bytes:
    """An output's binary tensor data: BYTES elements as a 4-byte little-endian length and the
    UTF-8 bytes each, numbers in the datatype's little-endian layout."""
    if out.datatype == "BYTES":
        parts = (e.encode("utf-8") for e in out.values.reshape(-1).tolist())
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return out.values.astype(DTYPES[out.datatype], copy=False).tobytes()


def encode(header: dict[str, Any], outputs: Sequence[Output]) -> tuple[bytes, dict[str, str]]:
    """The answer body and its headers: JSON alone, or JSON + the binary outputs."""
    described, blobs = [], []
    for out in outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.values.shape),
        }
        if out.binary:
            blob = _blob(out)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = out.values.reshape(-1).tolist()
        described.append(entry)
    json_part = orjson.dumps(header | {"outputs": described})
    if not blobs:
        return json_part, {"content-type": "application/json"}
    return json_part + b"".join(blobs), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(json_part)),
    }
