"""OpenAI Responses API, for Codex CLI and the openai SDKs' `responses` resource.

    POST /v1/responses      (stream and not; stateless: store is ignored, previous_response_id refused)

Streams are `event: <type>` + `data: <json>` pairs numbered by `sequence_number`, without a
[DONE] line; a failure after the stream began is a `response.failed` event whose error code
Codex understands (rate_limit_exceeded with "try again in Ns", server_error…). Silences (long
thinking) are filled with `response.in_progress` events: Codex's idle timer only counts parsed
events, so an SSE comment would not keep it alive.
"""
from __future__ import annotations

import functools
import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from services.edge.apidoc import operations as api_doc
from services.edge.apidoc.common import documented
from services.edge.auth import authenticate
from services.edge.context import EdgeContext, get_ctx, new_id, request_id
from services.edge.errors import ApiError
from services.edge.models import parse_model
from services.edge.routes.translated import (Opening, SseTranslator, admit_generation, answer_once, fetch_media,
                                             open_stream, pump_sse, read_request, spliced_opener, thinking_spec)
from services.edge.spliced import Spliced
from services.edge.store import KeyRecord
from services.edge.streaming import StreamResponse
from services.edge.translate.errors import TranslationError
from services.edge.translate.responses_request import media_urls, responses_request_to_gemini
from services.edge.translate.responses_response import ResponseStream, response_from_gemini
from services.edge.usage import Meter, metered

router = APIRouter()

def _sse(events: list[dict]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def _failure(err: ApiError) -> tuple[str, str]:
    """(error code, message) for response.failed, in the terms Codex acts on."""
    if err.status == 429:
        wait = f" Please try again in {max(1, round(err.retry_after or 1))}s." if err.retry_after else ""
        return "rate_limit_exceeded", err.message + wait
    if err.status in (400, 413):
        return "invalid_prompt", err.message
    return "server_error", err.message


async def create_response(request: Request) -> Response:
    key = await authenticate(request)
    ctx = get_ctx(request)
    meter = Meter(ctx.recorder, key.id, "responses", "generate", "", request_id(request))
    return await metered(meter, _create(request, ctx, key, meter))


async def _create(request: Request, ctx: EdgeContext, key: KeyRecord, meter: Meter) -> Response:
    # Inline and fetched media stay in their own buffers while the request is translated, and
    # are spliced into the pieces sent on (services/edge/spliced.py), as for chat.
    spliced = Spliced()
    body, body_bytes = await read_request(request, ctx, spliced_opener("input", spliced))
    ref = parse_model(body.get("model"))
    requested = ref.requested
    meter.model = ref.base
    if body.get("stream") is True:
        meter.op = "stream"
    await admit_generation(ctx, key, meter, ref, body, body_bytes)
    spec = await thinking_spec(ctx, ref.base)
    media = await fetch_media(request, ctx, media_urls(body), "input", meter, spliced)
    try:
        req = responses_request_to_gemini(body, media, thinking=spec, spliced=spliced)
    except TranslationError as exc:
        raise ApiError(400, exc.message, param=exc.param, code=exc.code) from None
    del body, media
    payload = spliced.pieces(orjson.dumps(req.gemini))
    spliced.clear()
    model, streamed, echo, custom = req.model, req.stream, req.echo, req.custom_tools
    del req
    response_id = f"resp_{new_id()}"
    created = int(time.time())
    headers = {"x-request-id": meter.request_id}

    if not streamed:
        call = ctx.upstream.generate(model, payload, request_id=meter.request_id, caller=key.name)
        del payload
        translate = functools.partial(response_from_gemini, model=requested, response_id=response_id, created=created,
                                      echo=echo, custom_tools=custom)
        return await answer_once(request, meter, call, translate, headers)

    upstream = ctx.upstream.stream(model, payload, request_id=meter.request_id, caller=key.name)
    del payload
    opened = await open_stream(request, ctx, meter, upstream)
    machine = ResponseStream(model=requested, response_id=response_id, created=created, echo=echo, custom_tools=custom)
    started = Opening(lambda: _sse(machine.start()))
    translator = SseTranslator(feed=lambda chunk: started() + _sse(machine.feed(chunk)),
                               finish=lambda: started() + _sse(machine.finish()),
                               error=lambda err: started() + _sse(machine.failed(*_failure(err))),
                               keepalive=lambda: started() + _sse(machine.heartbeat()))
    return StreamResponse(pump_sse(opened, translator, meter, ctx.settings.sse_keepalive_seconds or None),
                          media_type="text/event-stream", headers=opened.headers(headers))


documented(api_doc.RESPONSES)(create_response)
router.add_route("/v1/responses", create_response, methods=["POST"], name="openai_responses", include_in_schema=False)
