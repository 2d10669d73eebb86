"""Gemini-native API: a lossless passthrough.

The request body goes to the upstream as the bytes received (only checked to be a JSON object),
and response chunks come back as the bytes the upstream produced: nothing is re-parsed on the
way out. Usage for the ledger comes from the typed `Usage` of the gRPC messages.

    POST /v1beta/models/{model}:generateContent
    POST /v1beta/models/{model}:streamGenerateContent[?alt=sse]
    POST /v1beta/models/{model}:countTokens
    GET  /v1beta/models, /v1beta/models/{model}
The same under /v1 and /v1alpha (SDK api_version), and with the model written as models/NAME.
"""
from __future__ import annotations

from typing import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from services.edge import catalog
from services.edge.apidoc import operations as api_doc
from services.edge.apidoc.common import documented
from services.edge.auth import authenticate
from services.edge.admission import admit, gemini_output_cap
from services.edge.body import off_loop, read_body, read_json_bytes
from services.edge.lean_json import parsed_members, top_level
from services.edge.context import EdgeContext, get_ctx, request_id
from services.edge.errors import ApiError, error_body
from services.edge.models import MAX_MODEL_ID, ModelRef, allow_list_id, parse_model
from services.edge.routes import embeddings
from services.edge.store import KeyRecord
from services.edge.translate.thinking import thinking_config
from services.edge.streaming import STREAM_HEADERS, StreamResponse, unless_disconnected, with_trace
from services.edge.upstream_errors import UpstreamError
from services.edge.upstream_stream import Usage, UpstreamStream, events_of
from services.edge.usage import Meter, MeteredResponse, metered

router = APIRouter()

VERSIONS = ("v1beta", "v1", "v1alpha")
UNSUPPORTED = {"predict", "predictLongRunning", "generateAnswer",
               "batchGenerateContent", "asyncBatchEmbedContent"}


def parse_target(target: str) -> tuple[str, str]:
    """"models/gemini-2.5-pro:generateContent" or "gemini-2.5-pro:generateContent" → (model, method)."""
    model, sep, method = target.rpartition(":")
    if model.startswith("models/"):
        model = model[len("models/"):]
    if not sep or not model or not method:
        raise ApiError(404, f"no method in 'models/{target}': expected models/MODEL:METHOD")
    if "/" in model:
        raise ApiError(404, f"unknown model path 'models/{model}'")
    return model, method


_OPS = {"generateContent": "generate", "streamGenerateContent": "stream", "countTokens": "count"}


async def generate_content(request: Request, key: KeyRecord, ctx: EdgeContext, target: str) -> Response:
    model, method = parse_target(target)
    op = _OPS.get(method)
    if op is None:
        if method in embeddings.NATIVE_METHODS:
            return await embeddings.native(request, key, ctx, model, method)
        if method in UNSUPPORTED:
            raise ApiError(501, f"method '{method}' is not supported by this gateway's backend")
        raise ApiError(404, f"unknown method '{method}'")
    rid = request_id(request)
    # Every call of an authenticated key gets its ledger row, refusals by the edge included.
    meter = Meter(ctx.recorder, key.id, "gemini", op, model[:MAX_MODEL_ID], rid)
    handler = {"generate": _generate, "stream": _stream, "count": _count}[op]
    return await metered(meter, _resolved(handler, request, ctx, key, model, meter))


async def _resolved(handler, request: Request, ctx: EdgeContext, key: KeyRecord, model: str, meter: Meter) -> Response:
    ref = parse_model(model)
    meter.model = ref.base
    return await handler(request, ctx, key, ref, meter)


async def _apply_suffix(raw: bytes, ref: ModelRef, ctx: EdgeContext) -> bytes:
    """A thinking suffix means on this route what it means on the OpenAI one: the thinking
    config it names, unless the body sets its own. Only `generationConfig` is parsed and
    rewritten; the other members are spliced back as the client sent them."""
    if ref.suffix is None:
        return raw
    spec = catalog.thinking_spec(await ctx.upstream.model(ref.base))
    config = thinking_config(spec, suffix=ref.suffix, reasoning_effort=None, thinking=None, extra_google=None)
    if not config:
        return raw
    members = await off_loop(top_level, raw)
    key = "generation_config" if "generation_config" in members and "generationConfig" not in members else "generationConfig"
    gen = orjson.loads(memoryview(members[key])) if key in members else {}
    if not isinstance(gen, dict):
        raise ApiError(400, f"{key} must be an object", code="invalid_argument")
    if "thinkingConfig" in gen or "thinking_config" in gen:
        return raw
    gen["thinkingConfig"] = config
    out = {k: orjson.Fragment(bytes(memoryview(v))) for k, v in members.items() if k != key}
    out[key] = gen
    return orjson.dumps(out)


_CONFIG_MEMBERS = ("generationConfig", "generation_config")


async def _read_and_admit(request: Request, ctx: EdgeContext, key: KeyRecord, ref: ModelRef, meter: Meter) -> bytes:
    """The raw body (checked to be a JSON object) of a generation, admitted against the key's
    limits with its estimated cost, with the model's thinking suffix applied."""
    raw = await read_body(request, ctx.settings.max_body_bytes)
    # Only generationConfig is parsed: the rest is checked without being built (lean_json).
    cap = gemini_output_cap(await off_loop(parsed_members, raw, _CONFIG_MEMBERS))
    await admit(ctx, key, meter, await allow_list_id(key, ref, ctx.upstream), body_bytes=len(raw), max_output=cap)
    return await _apply_suffix(raw, ref, ctx)


async def _generate(request: Request, ctx: EdgeContext, key: KeyRecord, ref: ModelRef, meter: Meter) -> Response:
    raw = await _read_and_admit(request, ctx, key, ref, meter)
    model = ref.base
    meter.calling()
    msg = await unless_disconnected(request, ctx.upstream.generate(model, raw, request_id=meter.request_id, caller=key.name))
    meter.answered()
    meter.served_by(msg.credential_kind, msg.credential_id)
    meter.trace_id = msg.trace_id
    return MeteredResponse(msg.chunk.data, meter, Usage.from_proto(msg.usage) if msg.HasField("usage") else None,
                           headers=with_trace({"x-request-id": meter.request_id}, msg.trace_id))


def _alt(request: Request) -> str:
    # What SDKs send is parsed without building the query's multi-dict (on every stream's path).
    qs = request.scope.get("query_string", b"")
    if qs == b"alt=sse":
        return "sse"
    return request.query_params.get("alt", "json").lower() if qs else "json"


async def _stream(request: Request, ctx: EdgeContext, key: KeyRecord, ref: ModelRef, meter: Meter) -> Response:
    alt = _alt(request)
    if alt not in ("sse", "json"):
        raise ApiError(400, f"unsupported alt '{alt}': use alt=sse or no alt", code="invalid_argument")
    raw = await _read_and_admit(request, ctx, key, ref, meter)
    model = ref.base
    meter.calling()
    stream = ctx.upstream.stream(model, raw, request_id=meter.request_id, caller=key.name)
    del raw  # serialized into the call: not kept while the first message is awaited (or after)
    try:
        # Errors before the first chunk still get a real HTTP status (429 with Retry-After...).
        first = await unless_disconnected(request, stream.next())
    except BaseException:
        stream.cancel()
        raise
    headers = with_trace({**STREAM_HEADERS, "x-request-id": meter.request_id}, stream.trace_id)
    if alt == "sse":
        return StreamResponse(_sse_body(stream, first, meter), media_type="text/event-stream", headers=headers)
    return StreamResponse(_array_body(stream, first, meter), media_type="application/json", headers=headers)


# `_LF in data` (an int: a memchr) rather than `b"\n" in data`, which CPython first tries as an
# int and answers only after building and dropping a formatted TypeError (~10x the cost).
_LF = ord("\n")


def _sse_event(data: bytes) -> bytes:
    if _LF in data:
        # Multi-line JSON is still one event: each line gets its own data: field.
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\ndata: ")
    return b"data: " + data + b"\r\n\r\n"


def _sse_events(events: list[bytes]) -> bytes:
    """The SSE events of one message's events, in one piece: one join when no event spans
    lines (what backends send), not an event's bytes copied twice each (~2.5x faster for the
    21 events of a short answer, which all cross before its first byte leaves)."""
    for data in events:
        if _LF in data:
            return b"".join(map(_sse_event, events))
    if not events:
        return b""
    return b"".join((b"data: ", b"\r\n\r\ndata: ".join(events), b"\r\n\r\n"))


async def _sse_body(stream: UpstreamStream, first, meter: Meter) -> AsyncIterator[bytes]:
    """One SSE event per backend event; the events of one upstream message (they arrived
    together) leave in one write."""
    status = 499
    try:
        # Neither a message nor its events stay referenced here while they are written or the
        # next message is awaited (the first one would otherwise be held for the whole stream).
        msg, first = first, None
        while msg is not None:
            events, msg = events_of(msg), None
            out = _sse_event(events[0]) if len(events) == 1 else _sse_events(events)
            del events
            if out:
                yield out
            out = b""
            msg = await stream.next()
        status = 200
    except UpstreamError as exc:
        status = exc.http_status
        yield _sse_event(error_body("google", exc.to_api_error(meter.request_id)))
    finally:
        stream.cancel()
        meter.served_by(stream.credential_kind, stream.credential_id)
        meter.finish_stream(status, stream)


async def _array_body(stream: UpstreamStream, first, meter: Meter) -> AsyncIterator[bytes]:
    """Google's JSON-array stream: '[' chunk (',\\r\\n' chunk)* ']', one write per upstream
    message (the events that arrived together), each event still its own array element."""
    status = 499
    opened = False
    try:
        msg, first = first, None  # nothing held across awaits, as in _sse_body
        while msg is not None:
            events, msg = events_of(msg), None
            out = (b",\r\n" if opened else b"[") + b",\r\n".join(events) if events else b""
            del events
            if out:
                yield out
                opened = True
            out = b""
            msg = await stream.next()
        status = 200
        yield b"]" if opened else b"[]"
    except UpstreamError as exc:
        status = exc.http_status
        yield (b",\r\n" if opened else b"[") + error_body("google", exc.to_api_error(meter.request_id)) + b"]"
    finally:
        stream.cancel()
        meter.served_by(stream.credential_kind, stream.credential_id)
        meter.finish_stream(status, stream)


async def _count(request: Request, ctx: EdgeContext, key: KeyRecord, ref: ModelRef, meter: Meter) -> Response:
    raw = await read_json_bytes(request, ctx.settings.max_body_bytes)
    await ctx.limiter.admit(key, await allow_list_id(key, ref, ctx.upstream))
    model = ref.base
    resp = await unless_disconnected(request, ctx.upstream.count_tokens(model, raw, request_id=meter.request_id, caller=key.name))
    meter.finish(200)
    body = resp.body.data or orjson.dumps({"totalTokens": resp.total_tokens})
    return Response(body, media_type="application/json", headers={"x-request-id": meter.request_id})


# --- models ---------------------------------------------------------------------------------

async def list_models_google(ctx: EdgeContext, key: KeyRecord) -> Response:
    try:
        models = await ctx.upstream.list_models()
    except UpstreamError as exc:
        raise exc.to_api_error() from None
    return Response(orjson.dumps(catalog.google_list(catalog.visible(models, key.models))),
                    media_type="application/json")


async def get_model_google(ctx: EdgeContext, key: KeyRecord, name: str) -> Response:
    model_id = name[len("models/"):] if name.startswith("models/") else name
    try:
        models = await ctx.upstream.list_models()
    except UpstreamError as exc:
        raise exc.to_api_error() from None
    m = catalog.find(models, model_id)
    if m is None or not key.allows_model(m.id):
        raise ApiError(404, f"model 'models/{model_id}' is not found", code="model_not_found")
    return Response(orjson.dumps(catalog.google_model(m)), media_type="application/json")


# Plain Starlette endpoints, with authentication called explicitly: FastAPI's dependency
# injection costs about 0.25 ms per request, a tenth of the edge's whole budget.

async def _call_endpoint(request: Request) -> Response:
    key = await authenticate(request)
    return await generate_content(request, key, get_ctx(request), request.path_params["target"])


async def _list_endpoint(request: Request) -> Response:
    key = await authenticate(request)
    return await list_models_google(get_ctx(request), key)


async def _get_endpoint(request: Request) -> Response:
    key = await authenticate(request)
    return await get_model_google(get_ctx(request), key, request.path_params["name"])


documented(*api_doc.GEMINI_CALLS)(_call_endpoint)
documented(api_doc.GEMINI_MODELS)(_list_endpoint)
documented(api_doc.GEMINI_MODEL)(_get_endpoint)
for _version in VERSIONS:
    router.add_route(f"/{_version}/models/{{target:path}}", _call_endpoint, methods=["POST"],
                     name=f"gemini_{_version}_call", include_in_schema=False)
    if _version != "v1":
        # GET /v1/models[/{id}] belongs to the OpenAI router, which answers Google clients too.
        router.add_route(f"/{_version}/models", _list_endpoint, methods=["GET"], name=f"gemini_{_version}_list",
                         include_in_schema=False)
        router.add_route(f"/{_version}/models/{{name:path}}", _get_endpoint, methods=["GET"],
                         name=f"gemini_{_version}_get", include_in_schema=False)
