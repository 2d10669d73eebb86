"""Generate's requests in wire form, made by hand around the body so that a (maybe tens of MB)
body is copied once: one GenerateRequest, or GenerateChunked's parts for a large body."""
from __future__ import annotations

from typing import Iterator, Sequence

from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2 as pb

# A body larger than CHUNKED_ABOVE goes with GenerateChunked, in parts of PART_BYTES: one
# message of tens of MB would be held by this process as the body, the serialized message and
# the gRPC core's copy at once, and again several times over by the upstream. Small parts keep
# what sits in gRPC buffers on both sides small (1 MiB parts: the upstream held ~8 MiB more).
CHUNKED_ABOVE = 1 << 20
PART_BYTES = 256 * 1024
# A request body: bytes, or pieces to send one after the other (large media among small JSON,
# never joined into one copy).
Body = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]
_BUFFER = (bytes, bytearray, memoryview)
# Wire pieces of GenerateRequest.body (field 2) = HttpBody{content_type (1), data (2)}.
_BODY_TAG = b"\x12"
_DATA_TAG = b"\x12"
_HTTPBODY_HEAD = httpbody_pb2.HttpBody(content_type="application/json").SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def body_size(body: Body) -> int:
    if isinstance(body, _BUFFER):
        return memoryview(body).nbytes
    return sum(memoryview(p).nbytes for p in body)


def joined(body: Body) -> bytes | bytearray | memoryview:
    return body if isinstance(body, _BUFFER) else b"".join(body)


def chunked_parts(model: str, body: Body, stream: bool, request_id: str, caller: str,
                  part_bytes: int = PART_BYTES, coalesce: bool = True) -> Iterator[bytes]:
    """GenerateRequestPart messages in wire form, made one at a time as gRPC takes them: the
    first carries the call and the body's size, each carries up to `part_bytes` of the body."""
    head = pb.GenerateRequest(model=model, stream=stream, request_id=request_id, caller=caller,
                              coalesce=stream and coalesce, early_headers=stream)
    head.body.content_type = "application/json"
    encoded = head.SerializeToString()
    lead = b"\x0a" + _varint(len(encoded)) + encoded + b"\x10" + _varint(body_size(body))
    pieces = [body] if isinstance(body, _BUFFER) else body
    gathered: list[memoryview] = []
    room = part_bytes
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view.nbytes:
            take = view[:room]
            gathered.append(take)
            room -= take.nbytes
            view = view[take.nbytes:]
            if room == 0:
                yield b"".join((lead, b"\x1a", _varint(part_bytes), *gathered))
                lead, gathered, room = b"", [], part_bytes
    if gathered or lead:
        n = part_bytes - room
        yield b"".join((lead, b"\x1a", _varint(n), *gathered))


def generate_request(model: str, body: bytes | bytearray | memoryview, stream: bool, request_id: str,
                     caller: str, coalesce: bool = True) -> bytes:
    """A GenerateRequest already in wire form. The small fields are serialized by protobuf;
    the body field is appended by hand (a message field may come last on the wire), so the
    (maybe tens of MB) body is copied once, not into a message and again out of it.
    Streams are coalesced: the events that reach the upstream together come in one message."""
    head = pb.GenerateRequest(model=model, stream=stream, request_id=request_id, caller=caller,
                              coalesce=stream and coalesce, early_headers=stream).SerializeToString()
    data_len = _varint(memoryview(body).nbytes)
    inner_len = len(_HTTPBODY_HEAD) + 1 + len(data_len) + memoryview(body).nbytes
    return b"".join((head, _BODY_TAG, _varint(inner_len), _HTTPBODY_HEAD, _DATA_TAG, data_len, body))
