"""Reading a JSON request body safely: content type, size cap (declared and actual), syntax."""
from __future__ import annotations

import orjson
from fastapi import Request

from services.edge.errors import ApiError


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    # A missing type is tolerated (some clients omit it); anything else must be JSON.
    return not media or media == "application/json" or media.endswith("+json")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing a non-JSON content type (415) and anything over `max_bytes` (413),
    whether it declares its length or arrives chunked."""
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
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body exceeds the limit of {max_bytes} bytes", code="request_too_large")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_object(raw: bytes) -> dict:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    if not raw.strip():
        raise ApiError(400, "request body is empty: send a JSON object", code="invalid_json")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON in request body: {exc}", code="invalid_json") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return obj


async def read_json_bytes(request: Request, max_bytes: int) -> bytes:
    """The raw body, checked to be one JSON object. The parsed value is dropped at once, so a
    large body (inline media) is not held twice while it travels on."""
    raw = await read_body(request, max_bytes)
    parse_object(raw)
    return raw


async def read_json_dict(request: Request, max_bytes: int) -> dict:
    """The body as a JSON object; the raw bytes are not kept (see read_json_bytes)."""
    return parse_object(await read_body(request, max_bytes))
