"""Reading a JSON request body safely: content type, size cap (declared and actual), syntax.

A body sent with `Content-Encoding: gzip` (or `deflate`) is inflated as it arrives, and the
size cap applies to the inflated bytes: a small compressed bomb is cut off at MAX_BODY_BYTES of
output, never inflated in full. Other encodings get a clear 415.
"""
from __future__ import annotations

import asyncio
import zlib

import orjson
from fastapi import Request

from services.edge.errors import ApiError
from services.edge.lean_json import first_byte, top_level


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    # A missing type is tolerated (some clients omit it); anything else must be JSON.
    return not media or media == "application/json" or media.endswith("+json")


async def read_body(request: Request, max_bytes: int, *, buffer: bool = False) -> bytes | bytearray:
    """The raw body, refusing a non-JSON content type (415) and anything over `max_bytes` (413),
    whether it declares its length or arrives chunked.

    With `buffer`, a body of declared length is received into one bytearray of that size (for
    callers that only parse it): joining the received chunks would hold it twice at once."""
    if not _is_json_type(request.headers.get("content-type", "")):
        raise ApiError(415, f"unsupported content type '{request.headers.get('content-type')}': "
                            "send application/json", code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header") from None
        if n > max_bytes:
            raise ApiError(413, f"request body of {n} bytes exceeds the limit of {max_bytes} bytes",
                           code="request_too_large")
    inflater = _inflater(request.headers.get("content-encoding", ""))
    if buffer and inflater is None and declared is not None and n > 0:
        return await _into_buffer(request, n)
    parts: list[bytes] = []
    size = 0
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes", code="request_too_large")
        if inflater is None:
            size += len(chunk)
            parts.append(chunk)
            continue
        size = _inflate(inflater, chunk, parts, size, max_bytes)
    if inflater is not None:
        _finish(inflater, parts, size, max_bytes)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def _into_buffer(request: Request, declared: int) -> bytearray:
    buf = bytearray(declared)
    got = 0
    async for chunk in request.stream():
        end = got + len(chunk)
        if end > declared:  # the HTTP server frames the body by Content-Length: not expected
            raise ApiError(400, "request body is longer than its Content-Length")
        buf[got:end] = chunk
        got = end
    if got < declared:
        del buf[got:]
    return buf


def _inflater(encoding: str):
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if enc == "deflate":  # RFC 9110: the zlib format
        return zlib.decompressobj()
    raise ApiError(415, f"unsupported Content-Encoding '{encoding[:40]}': send the body uncompressed, "
                        "or compressed with gzip or deflate", code="unsupported_content_encoding")


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"request body exceeds the limit of {max_bytes} bytes once decompressed",
                    code="request_too_large")


def _bad_encoding(detail: str = "") -> ApiError:
    return ApiError(400, "the request body does not match its Content-Encoding: not valid compressed data"
                         + (f" ({detail})" if detail else ""), code="invalid_encoding")


def _inflate(inflater, chunk: bytes, parts: list[bytes], size: int, max_bytes: int) -> int:
    """Inflate one received chunk into `parts`, never producing more than the cap allows."""
    data = chunk
    try:
        while data:
            if inflater.eof:
                raise _bad_encoding("trailing bytes after the end")
            out = inflater.decompress(data, max_bytes - size + 1)
            size += len(out)
            if size > max_bytes:
                raise _too_large(max_bytes)
            if out:
                parts.append(out)
            data = inflater.unconsumed_tail
    except zlib.error:
        raise _bad_encoding() from None
    return size


def _finish(inflater, parts: list[bytes], size: int, max_bytes: int) -> None:
    try:
        out = inflater.flush(max_bytes - size + 1)
    except zlib.error:
        raise _bad_encoding() from None
    if size + len(out) > max_bytes:
        raise _too_large(max_bytes)
    if out:
        parts.append(out)
    if not inflater.eof:
        raise _bad_encoding("it is truncated")
    if inflater.unused_data:
        raise _bad_encoding("trailing bytes after the end")


def parse_object(raw: bytes | bytearray) -> dict:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    if not first_byte(raw):
        raise ApiError(400, "request body is empty: send a JSON object", code="invalid_json")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON in request body: {exc}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return obj


# Bodies above this are checked on a worker thread, so the event loop keeps serving others.
OFFLOAD_BYTES = 1 << 20


async def off_loop(func, raw: bytes, *args):
    """func(raw, *args), on a worker thread when the body is large."""
    if len(raw) > OFFLOAD_BYTES:
        return await asyncio.to_thread(func, raw, *args)
    return func(raw, *args)


async def read_json_bytes(request: Request, max_bytes: int) -> bytes:
    """The raw body, checked to be one JSON object without building it (see lean_json): a
    body of a million tiny values costs no more memory than its bytes while it travels on."""
    raw = await read_body(request, max_bytes)
    await off_loop(top_level, raw)
    return raw


async def read_json_dict(request: Request, max_bytes: int) -> dict:
    """The body as a JSON object; the raw bytes are not kept (see read_json_bytes)."""
    return await off_loop(parse_object, await read_body(request, max_bytes))
