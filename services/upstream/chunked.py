"""GenerateChunked: a Generate whose body arrives in parts, put together in one buffer.

A body of tens of MB sent as one gRPC message exists several times over in this process: the
gRPC core's receive slices, the bytes Python gets, protobuf's parsed copy and the bytes `.data`
returns. Sent in parts of about 1 MiB, each part is copied once into a buffer of the declared
size and dropped, so the body is held once (plus a part or two in transit) — and it stays
held, once, until the answer starts, since the pool may retry it on another credential.

Parts are read from their wire form by hand (`part_from_wire`): protobuf would copy `data`
into its message and again on every access.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from gemini_cli.upstream.v1 import upstream_pb2

from .errors import InvalidRequest

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


@dataclass(slots=True)
class Part:
    head: upstream_pb2.GenerateRequest | None
    body_bytes: int
    data: memoryview


def part_from_wire(raw: bytes) -> Part:
    """A GenerateRequestPart from its wire bytes; `data` is a view of `raw`, not a copy.
    Protobuf's rules: fields in any order, unknown fields skipped, the last `data` wins and
    repeated `head`s merge."""
    buf = memoryview(raw)
    pos = 0
    head: upstream_pb2.GenerateRequest | None = None
    body_bytes = 0
    data = buf[0:0]
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
            if field == 2:
                body_bytes = value - (1 << 64) if value >= 1 << 63 else value
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            end = pos + size
            if end > len(buf):
                raise WireError("truncated field")
            if field == 1:
                head = head or upstream_pb2.GenerateRequest()
                head.MergeFromString(bytes(buf[pos:end]))
            elif field == 3:
                data = buf[pos:end]
            pos = end
        elif wire == _FIXED64:
            pos += 8
        elif wire == _FIXED32:
            pos += 4
        else:
            raise WireError(f"unsupported wire type {wire}")
        if field == 0 or pos > len(buf):
            raise WireError("malformed message")
    return Part(head, body_bytes, data)


@dataclass(slots=True)
class ReceivedBody:
    """The HttpBody of a GenerateRequest that arrived in parts (what Generate reads of it)."""
    data: memoryview
    content_type: str = "application/json"


@dataclass(slots=True)
class ReceivedRequest:
    """A GenerateRequest put together from parts: what Generate reads of a request."""
    model: str
    body: ReceivedBody
    stream: bool
    request_id: str
    caller: str
    coalesce: bool = False
    early_headers: bool = False


async def receive(parts: AsyncIterator[Part], max_bytes: int) -> ReceivedRequest:
    """The call and its whole body, in a buffer of the declared size; InvalidRequest when the
    parts do not add up (no head first, a second head, more or fewer bytes than declared)."""
    head: upstream_pb2.GenerateRequest | None = None
    buf = bytearray()
    pos = 0
    async for part in parts:
        if head is None:
            if part.head is None:
                raise InvalidRequest("the first part of GenerateChunked must carry `head`")
            head = part.head
            if head.body.data:
                raise InvalidRequest("GenerateChunked sends the body in `data`, not in `head.body`")
            if not 0 < part.body_bytes <= max_bytes:
                raise InvalidRequest(f"body_bytes must be between 1 and {max_bytes}")
            buf = bytearray(part.body_bytes)
        elif part.head is not None:
            raise InvalidRequest("only the first part of GenerateChunked carries `head`")
        end = pos + len(part.data)
        if end > len(buf):
            raise InvalidRequest(f"the parts carry more than the {len(buf)} bytes declared in body_bytes")
        buf[pos:end] = part.data
        pos = end
        del part
    if head is None:
        raise InvalidRequest("GenerateChunked received no parts")
    if pos != len(buf):
        raise InvalidRequest(f"the body ended after {pos} of the {len(buf)} bytes declared in body_bytes")
    return ReceivedRequest(head.model, ReceivedBody(memoryview(buf), head.body.content_type or "application/json"),
                           head.stream, head.request_id, head.caller, head.coalesce,
                           head.early_headers)
