"""What every translating route (OpenAI chat, Responses, Anthropic Messages) does the same way:
fetch a request's remote media, call the upstream once or open its stream, and pump a stream
through a translator into SSE bytes while keeping the ledger row honest.

The translators themselves are pure (services.edge.translate); these helpers do the I/O.
"""
from __future__ import annotations

import functools
import logging
from time import perf_counter
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from fastapi import Request
from starlette.responses import Response

from gemini_cli.upstream.v1.upstream_pb2 import GenerateResponse
from services.edge import catalog
from services.edge.admission import admit, openai_output_cap
from services.edge.body import off_loop, parse_object, read_body
from services.edge.lean_json import open_lazily
from services.edge.context import EdgeContext
from services.edge.errors import ApiError
from services.edge.media_errors import MediaError
from services.edge.spliced import Spliced
from services.edge.models import ModelRef, allow_list_id
from services.edge.store import KeyRecord
from services.edge.translate.contents_writer import SPLICE_BYTES, load_spliced
from services.edge.translate.thinking import ThinkingSpec
from services.edge.streaming import STREAM_HEADERS, TIMEOUT, Prefetcher, unless_disconnected, with_trace
from services.edge.upstream_errors import UpstreamError
from services.edge.upstream_stream import Usage, UpstreamStream, events_of
from services.edge.usage import Meter, MeteredResponse

log = logging.getLogger("edge.translated")


async def fetch_media(request: Request, ctx: EdgeContext, urls: list[str], param: str,
                      meter: Meter | None = None, spliced: Spliced | None = None) -> dict[str, tuple[str, str]]:
    """{url: (mime, base64)} for the http(s) media of a request, through the guarded fetcher.
    With `spliced`, the base64 is a token of it (the media stays in the buffers it was fetched
    into, see services/edge/spliced.py); otherwise it is the text itself.

    The bytes count against MEDIA_MAX_TOTAL_BYTES (413) and, until `meter.run_deferred()` (the
    backend has the request) or the request's end, against MEDIA_MAX_INFLIGHT_BYTES (503)."""
    if not urls:
        return {}
    limit = ctx.settings.media_max_urls
    if len(urls) > limit:
        raise ApiError(400, f"{len(urls)} media URLs in one request; at most {limit} are fetched "
                            "(send the others inline as base64)", param=param, code="too_many_media_urls")
    lease = ctx.media.lease()
    if meter is not None:
        meter.defer(lease.release)
    try:
        fetched = await unless_disconnected(request, ctx.media.fetch_all(urls, lease))
    except MediaError as exc:
        raise ApiError(exc.status, exc.message, param=param, code=exc.code, retry_after=exc.retry_after) from None
    finally:
        if meter is None:
            lease.release()
    if spliced is None:
        return {url: (mime, encoded.text()) for url, (mime, encoded) in fetched.items()}
    return {url: (mime, spliced.token(encoded)) for url, (mime, encoded) in fetched.items()}


async def read_request(request: Request, ctx: EdgeContext,
                       opener: Callable[[bytes], dict] = parse_object) -> tuple[dict, int]:
    """The body as a JSON object (opened by `opener`, on a worker thread when large), and its
    size as received (for the admission estimate)."""
    raw = await read_body(request, ctx.settings.max_body_bytes, buffer=True)
    return await off_loop(opener, raw), len(raw)


def spliced_opener(array: str, spliced: Spliced) -> Callable[[bytes], dict]:
    """An opener for `read_request` that leaves the inline media of the conversation (the
    body's member `array`) where they are in the body, as tokens of `spliced`: the request is
    translated around them and they are spliced back into the bytes sent on, never copied."""
    def open_body(raw: bytes) -> dict:
        if len(raw) <= SPLICE_BYTES:  # too small to hold one: the same body, parsed at once
            return parse_object(raw)
        return open_lazily(raw, array, functools.partial(load_spliced, spliced=spliced))
    return open_body


async def admit_generation(ctx: EdgeContext, key: KeyRecord, meter: Meter, ref: ModelRef, body: dict,
                           body_bytes: int) -> None:
    """Admission of a translated generation: the allow-list on the id the request will really
    reach, and its estimated cost reserved on the meter (services/edge/admission.py)."""
    await admit(ctx, key, meter, await allow_list_id(key, ref, ctx.upstream), body_bytes=body_bytes,
                max_output=openai_output_cap(body))


async def thinking_spec(ctx: EdgeContext, model: str) -> ThinkingSpec | None:
    """The model's thinking range from the upstream's catalogue (cached ListModels)."""
    return catalog.thinking_spec(await ctx.upstream.model(model))


async def answer_once(request: Request, meter: Meter, call: Awaitable[GenerateResponse],
                      translate: Callable[[dict], dict], headers: dict[str, str]) -> Response:
    """Await a unary Generate (`ctx.upstream.generate(...)`, made by the caller, which then
    drops its payload: a body of tens of MB is not kept twice while the backend works),
    translate the backend's answer and finish the ledger row however that goes."""
    meter.calling()
    msg = await unless_disconnected(request, call)
    meter.answered()
    meter.run_deferred()
    meter.served_by(msg.credential_kind, msg.credential_id)
    meter.trace_id = msg.trace_id
    usage = Usage.from_proto(msg.usage) if msg.HasField("usage") else None
    try:
        answer = orjson.loads(msg.chunk.data)
    except orjson.JSONDecodeError:
        meter.finish(502, usage)
        raise ApiError(502, "the backend's answer could not be read") from None
    try:
        out = translate(answer)
    except Exception:
        log.exception("could not translate a backend answer (request %s)", meter.request_id)
        meter.finish(502, usage)
        raise ApiError(502, "the backend's answer could not be translated") from None
    return MeteredResponse(orjson.dumps(out), meter, usage, headers=with_trace(headers, msg.trace_id))


@dataclass
class OpenStream:
    stream: UpstreamStream
    pump: Prefetcher
    first: Any  # the first GenerateResponse, TIMEOUT, or None for an empty stream

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        """The stream's response headers: `headers`, the streaming ones and the trace id."""
        return with_trace({**STREAM_HEADERS, **headers}, self.stream.trace_id)


async def open_stream(request: Request, ctx: EdgeContext, meter: Meter, stream: UpstreamStream) -> OpenStream:
    """Wait for a streamed Generate's first chunk (`ctx.upstream.stream(...)`, started by the
    caller, which then drops its payload), so that early failures (429 with Retry-After, 404…)
    keep their HTTP status; after one keep-alive interval the route commits to 200 and the pump
    sends keep-alives instead."""
    meter.calling()
    pump: Prefetcher = Prefetcher(stream.next)
    try:
        first = await unless_disconnected(request, pump.get(ctx.settings.sse_keepalive_seconds or None))
    except BaseException:
        pump.close()
        stream.cancel()
        raise
    meter.run_deferred()
    return OpenStream(stream, pump, first)


@dataclass
class SseTranslator:
    """How one API writes a translated stream."""

    feed: Callable[[dict], bytes]  # a parsed backend chunk → bytes to send (maybe b"")
    finish: Callable[[], bytes]  # the tail after the last chunk
    error: Callable[[ApiError], bytes]  # the in-stream error event that ends the stream
    keepalive: Callable[[], bytes]  # what to send during a silence


class Opening:
    """The events that open a stream (`start()`, as SSE bytes): sent once, before whatever is
    sent first (a translated chunk, the end, a keep-alive)."""

    def __init__(self, start: Callable[[], bytes]) -> None:
        self._start: Callable[[], bytes] | None = start

    def __call__(self) -> bytes:
        start, self._start = self._start, None
        return start() if start is not None else b""


async def pump_sse(opened: OpenStream, translator: SseTranslator, meter: Meter,
                   keepalive: float | None) -> AsyncIterator[bytes]:
    """The response body of a translated stream; finishes the ledger row however it ends."""
    stream, pump = opened.stream, opened.pump
    status = 499
    try:
        # No message (nor what was made of it) stays referenced here while the next one is
        # awaited: the first one would otherwise be held for the whole stream.
        item, opened.first = opened.first, None
        while item is not None:
            if item is TIMEOUT:
                yield translator.keepalive()
            else:
                # The events of one message arrived together, and so did the messages already
                # waiting: their translations leave in one write, each still the separate SSE
                # event(s) the translator made of it.
                began = perf_counter()
                parts = []
                try:
                    for msg in (item, *pump.ready()):
                        for data in events_of(msg):
                            parts.append(translator.feed(orjson.loads(data)))
                except Exception:
                    if any(parts):
                        yield b"".join(parts)  # what was translated goes out before the error
                    raise
                out = parts[0] if len(parts) == 1 else b"".join(parts)
                parts = msg = data = None  # type: ignore[assignment]
                meter.work += perf_counter() - began
                if out:
                    yield out
                out = b""
            item = None
            item = await pump.get(keepalive)
        tail = translator.finish()
        status = 200
        yield tail
    except UpstreamError as exc:
        status = exc.http_status
        yield translator.error(exc.to_api_error(meter.request_id))
    except Exception:
        log.exception("stream translation failed (request %s)", meter.request_id)
        status = 502
        yield translator.error(ApiError(502, "the backend's answer could not be translated", code="bad_gateway"))
    finally:
        pump.close()
        stream.cancel()
        meter.served_by(stream.credential_kind, stream.credential_id)
        meter.finish_stream(status, stream)
