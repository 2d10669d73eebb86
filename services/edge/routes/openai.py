"""OpenAI-compatible API: chat completions (stream and not) and the model list.

The work of translation is done by the pure functions in `services.edge.translate`; this module
only moves bytes: body → media fetch → translate → gRPC → translate back → client.

    POST /v1/chat/completions
    GET  /v1/models, /v1/models/{id}     (Google's format when the caller authenticates the
                                          Google way, with x-goog-api-key or ?key=)
"""
from __future__ import annotations

import asyncio
import functools
import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from services.edge import catalog
from services.edge.apidoc import operations as api_doc
from services.edge.apidoc.common import documented
from services.edge.auth import authenticate
from services.edge.context import EdgeContext, get_ctx, new_id, request_id
from services.edge.errors import ApiError, request_style
from services.edge.lean_json import open_chat
from services.edge.routes.gemini import get_model_google, list_models_google
from services.edge.models import parse_model
from services.edge.routes.translated import (SseTranslator, admit_generation, fetch_media, answer_once, open_stream,
                                             pump_sse, read_request, thinking_spec)
from services.edge.spliced import Spliced
from services.edge.store import KeyRecord
from services.edge.streaming import StreamResponse
from services.edge.translate.errors import TranslationError
from services.edge.translate.gemini_to_openai import ChunkTranslator, completion_from_gemini
from services.edge.translate.openai_to_gemini import chat_request_to_gemini, media_urls
from services.edge.translate.thinking import split_model
from services.edge.upstream_errors import UpstreamError
from services.edge.usage import Meter, metered

router = APIRouter()

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def _event(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _events(chunks: list[dict]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)


async def chat_completions(request: Request) -> Response:
    key = await authenticate(request)
    ctx = get_ctx(request)
    rid = request_id(request)
    # Every call of an authenticated key gets its ledger row, refusals by the edge included;
    # model and op are filled in once the body says what they are.
    meter = Meter(ctx.recorder, key.id, "openai", "generate", "", rid)
    return await metered(meter, _chat(request, ctx, key, meter))


async def _chat(request: Request, ctx: EdgeContext, key: KeyRecord, meter: Meter) -> Response:
    # Long arrays stay raw until translated one element at a time (lean_json); large bodies are
    # opened and translated on a worker thread so the event loop keeps serving everyone else.
    body, body_bytes = await read_request(request, ctx, open_chat)
    ref = parse_model(body.get("model"))
    requested = ref.requested
    meter.model = ref.base
    if body.get("stream") is True:
        meter.op = "stream"
    await admit_generation(ctx, key, meter, ref, body, body_bytes)
    thinking = await thinking_spec(ctx, ref.base)
    big = _is_big(body)
    # Large media (fetched, or inline in the body) stay in their own buffers while the request
    # is translated, and are spliced into the pieces sent on (services/edge/spliced.py).
    spliced = Spliced()
    media = await fetch_media(request, ctx, media_urls(body), "messages", meter, spliced)
    try:
        chat = await _translate(body, media, thinking, big, spliced)
    except TranslationError as exc:
        raise ApiError(400, exc.message, param=exc.param, code=exc.code) from None
    # Inline media can be tens of MB: let go of the parsed request and of the translated one as
    # soon as they are serialized, so no more copies than needed are alive during the call.
    del body, media
    payload = spliced.pieces(await _serialize(chat.gemini, big))
    spliced.clear()
    model, streamed, include_usage = chat.model, chat.stream, chat.include_usage
    del chat
    completion_id = f"chatcmpl-{new_id()}"
    created = int(time.time())
    meter.model = model
    meter.op = "stream" if streamed else "generate"
    headers = {"x-request-id": meter.request_id}

    if not streamed:
        call = ctx.upstream.generate(model, payload, request_id=meter.request_id, caller=key.name)
        del payload
        translate = functools.partial(completion_from_gemini, model=requested, completion_id=completion_id,
                                      created=created)
        return await answer_once(request, meter, call, translate, headers)

    upstream = ctx.upstream.stream(model, payload, request_id=meter.request_id, caller=key.name)
    del payload
    opened = await open_stream(request, ctx, meter, upstream)
    chunks = ChunkTranslator(model=requested, completion_id=completion_id, created=created,
                             include_usage=include_usage)

    def error(err: ApiError) -> bytes:
        return _event(chunks.error_chunk(err.message, err.code)) + DONE

    translator = SseTranslator(feed=lambda chunk: _events(chunks.feed(chunk)),
                               finish=lambda: _events(chunks.finish()) + DONE,
                               error=error, keepalive=lambda: KEEPALIVE)
    return StreamResponse(pump_sse(opened, translator, meter, ctx.settings.sse_keepalive_seconds or None),
                          media_type="text/event-stream", headers=opened.headers(headers))


# Above this many messages translation runs on a worker thread (it is about 1 µs... 10 µs each).
_OFFLOAD_MESSAGES = 2000


def _is_big(body: dict) -> bool:
    messages = body.get("messages")
    return isinstance(messages, list) and len(messages) > _OFFLOAD_MESSAGES


async def _translate(body: dict, media: dict, thinking, big: bool, spliced: Spliced):
    if big:
        return await asyncio.to_thread(functools.partial(chat_request_to_gemini, body, media, thinking=thinking,
                                                         spliced=spliced))
    return chat_request_to_gemini(body, media, thinking=thinking, spliced=spliced)


async def _serialize(gemini: dict, big: bool) -> bytes:
    if big:
        return await asyncio.to_thread(orjson.dumps, gemini)
    return orjson.dumps(gemini)


# --- models ---------------------------------------------------------------------------------

async def list_models(request: Request) -> Response:
    key = await authenticate(request)
    ctx = get_ctx(request)
    if request_style(request) == "google":
        return await list_models_google(ctx, key)
    try:
        models = await ctx.upstream.list_models()
    except UpstreamError as exc:
        raise exc.to_api_error() from None
    return Response(orjson.dumps(catalog.openai_list(catalog.visible(models, key.models))),
                    media_type="application/json")


async def get_model(request: Request) -> Response:
    key = await authenticate(request)
    ctx = get_ctx(request)
    model_id = request.path_params["model_id"]
    if request_style(request) == "google":
        return await get_model_google(ctx, key, model_id)
    try:
        models = await ctx.upstream.list_models()
    except UpstreamError as exc:
        raise exc.to_api_error() from None
    base, _ = split_model(model_id)
    m = catalog.find(models, base)
    if m is None or not key.allows_model(m.id) or model_id.removeprefix("models/") not in catalog.openai_ids(m):
        raise ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return Response(orjson.dumps(catalog.openai_model(model_id.removeprefix("models/"))),
                    media_type="application/json")


# Plain Starlette routes with authentication called explicitly (see routes/gemini.py for why).
documented(api_doc.CHAT)(chat_completions)
documented(api_doc.OPENAI_MODELS)(list_models)
documented(api_doc.OPENAI_MODEL)(get_model)
router.add_route("/v1/chat/completions", chat_completions, methods=["POST"], name="openai_chat", include_in_schema=False)
router.add_route("/v1/models", list_models, methods=["GET"], name="openai_models", include_in_schema=False)
router.add_route("/v1/models/{model_id:path}", get_model, methods=["GET"], name="openai_model", include_in_schema=False)
