"""Anthropic Messages API, for Claude Code and the anthropic SDKs.

    POST /v1/messages                  (stream and not; ?beta=true ignored)
    POST /v1/messages/count_tokens     → the upstream's CountTokens

Keys come as `x-api-key` (or Bearer, as with ANTHROPIC_AUTH_TOKEN); `anthropic-version` and
`anthropic-beta` are accepted and need nothing. Claude model names become Gemini models through
ANTHROPIC_MODEL_MAP; errors are Anthropic's `{"type": "error", "error": {...}}` (errors.py).
"""
from __future__ import annotations

import functools

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from services.edge.apidoc import operations as api_doc
from services.edge.apidoc.common import documented
from services.edge.auth import authenticate
from services.edge.context import EdgeContext, get_ctx, new_id, request_id
from services.edge.errors import ApiError, anthropic_error_dict
from services.edge.models import ModelRef, allow_list_id, parse_model
from services.edge.routes.translated import (Opening, SseTranslator, admit_generation, answer_once, fetch_media,
                                             open_stream, pump_sse, read_request, spliced_opener, thinking_spec)
from services.edge.spliced import Spliced
from services.edge.store import KeyRecord
from services.edge.streaming import StreamResponse, unless_disconnected
from services.edge.translate.anthropic_request import count_tokens_body, media_urls, messages_request_to_gemini, resolve_model
from services.edge.translate.anthropic_response import Event, MessageStream, message_from_gemini
from services.edge.translate.errors import TranslationError
from services.edge.usage import Meter, metered

router = APIRouter()

PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def _sse(events: list[Event]) -> bytes:
    return b"".join(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n" for name, data in events)


def _model(body: dict, ctx: EdgeContext) -> tuple[str, ModelRef]:
    """(the name the client sent, the Gemini model it maps to)."""
    requested = body.get("model")
    if not isinstance(requested, str) or not requested.strip():
        raise ApiError(400, "model: field required", param="model")
    return requested, parse_model(resolve_model(requested, ctx.settings.anthropic_model_map))


def _target(ref: ModelRef) -> str:
    return f"{ref.base}-{ref.suffix}" if ref.suffix else ref.base


def _bad(exc: TranslationError) -> ApiError:
    return ApiError(400, exc.message, param=exc.param, code=exc.code)


async def messages(request: Request) -> Response:
    key = await authenticate(request)
    ctx = get_ctx(request)
    meter = Meter(ctx.recorder, key.id, "anthropic", "generate", "", request_id(request))
    return await metered(meter, _messages(request, ctx, key, meter))


async def _messages(request: Request, ctx: EdgeContext, key: KeyRecord, meter: Meter) -> Response:
    # Inline and fetched media stay in their own buffers while the request is translated, and
    # are spliced into the pieces sent on (services/edge/spliced.py), as for chat.
    spliced = Spliced()
    body, body_bytes = await read_request(request, ctx, spliced_opener("messages", spliced))
    requested, ref = _model(body, ctx)
    meter.model = ref.base
    if body.get("stream") is True:
        meter.op = "stream"
    if body.get("max_tokens") is None:
        raise ApiError(400, "max_tokens: field required", param="max_tokens")
    await admit_generation(ctx, key, meter, ref, body, body_bytes)
    spec = await thinking_spec(ctx, ref.base)
    media = await fetch_media(request, ctx, media_urls(body), "messages", meter, spliced)
    try:
        req = messages_request_to_gemini(body, _target(ref), media, thinking=spec, spliced=spliced)
    except TranslationError as exc:
        raise _bad(exc) from None
    del body, media
    payload = spliced.pieces(orjson.dumps(req.gemini))
    spliced.clear()
    model, streamed, thinking = req.model, req.stream, req.thinking
    del req
    message_id = f"msg_{new_id()}"
    headers = {"x-request-id": meter.request_id, "request-id": meter.request_id}

    if not streamed:
        call = ctx.upstream.generate(model, payload, request_id=meter.request_id, caller=key.name)
        del payload
        translate = functools.partial(message_from_gemini, model=requested, message_id=message_id, thinking=thinking)
        return await answer_once(request, meter, call, translate, headers)

    upstream = ctx.upstream.stream(model, payload, request_id=meter.request_id, caller=key.name)
    del payload
    opened = await open_stream(request, ctx, meter, upstream)
    machine = MessageStream(model=requested, message_id=message_id, thinking=thinking)
    head = Opening(lambda: _sse(machine.start()))

    def error(err: ApiError) -> bytes:
        machine.stop()
        return _sse([("error", anthropic_error_dict(err))])

    # message_start goes out before the first keep-alive ping, as in Anthropic's own streams.
    translator = SseTranslator(feed=lambda chunk: head() + _sse(machine.feed(chunk)),
                               finish=lambda: head() + _sse(machine.finish()),
                               error=error, keepalive=lambda: head() + PING)
    return StreamResponse(pump_sse(opened, translator, meter, ctx.settings.sse_keepalive_seconds or None),
                          media_type="text/event-stream", headers=opened.headers(headers))


async def count_tokens(request: Request) -> Response:
    key = await authenticate(request)
    ctx = get_ctx(request)
    meter = Meter(ctx.recorder, key.id, "anthropic", "count", "", request_id(request))
    return await metered(meter, _count(request, ctx, key, meter))


async def _count(request: Request, ctx: EdgeContext, key: KeyRecord, meter: Meter) -> Response:
    body, _ = await read_request(request, ctx)
    _requested, ref = _model(body, ctx)
    base = meter.model = ref.base
    await ctx.limiter.admit(key, await allow_list_id(key, ref, ctx.upstream))
    media = await fetch_media(request, ctx, media_urls(body), "messages", meter)
    try:
        payload = orjson.dumps(count_tokens_body(body, media))
    except TranslationError as exc:
        raise _bad(exc) from None
    del body, media
    resp = await unless_disconnected(request, ctx.upstream.count_tokens(base, payload, request_id=meter.request_id,
                                                                        caller=key.name))
    meter.finish(200)
    total = resp.total_tokens
    if not total and resp.body.data:
        total = int(orjson.loads(resp.body.data).get("totalTokens", 0) or 0)
    return Response(orjson.dumps({"input_tokens": total}), media_type="application/json",
                    headers={"x-request-id": meter.request_id, "request-id": meter.request_id})


documented(api_doc.MESSAGES)(messages)
documented(api_doc.COUNT_MESSAGE_TOKENS)(count_tokens)
router.add_route("/v1/messages", messages, methods=["POST"], name="anthropic_messages", include_in_schema=False)
router.add_route("/v1/messages/count_tokens", count_tokens, methods=["POST"], name="anthropic_count_tokens",
                 include_in_schema=False)
