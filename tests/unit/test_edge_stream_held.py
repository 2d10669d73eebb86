"""What the edge keeps of a stream's answer while it waits for the next upstream message:
nothing. A message (and what was made of it) is let go once it is written; before, the first
message was referenced by the body generator for the stream's whole life, and the last one
(with its events) during each wait. A long answer's messages are KBs each, held per open stream.

Counted with sys.getrefcount (protobuf messages take no weak references): once the body waits
for the next message, only this test holds the ones already sent.
"""
from __future__ import annotations

import asyncio
import sys

import pytest

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge.routes.gemini import _array_body, _sse_body
from services.edge.routes.translated import OpenStream, SseTranslator, pump_sse
from services.edge.streaming import Prefetcher
from services.edge import upstream_stream
from services.edge.upstream_stream import UpstreamStream


class FakeStream:
    """The part of UpstreamStream the bodies use; messages come when the test puts them."""

    credential_kind = credential_id = trace_id = ""
    usage = first_at = None

    def __init__(self) -> None:
        self.messages: asyncio.Queue = asyncio.Queue()
        self.waiting = asyncio.Event()

    async def next(self):
        self.waiting.set()
        msg = await self.messages.get()
        self.waiting.clear()
        return msg

    def cancel(self) -> None:
        pass


class FakeMeter:
    request_id = "req-1"
    work = 0.0

    def served_by(self, kind: str, credential_id: str = "") -> None:
        pass

    def finish_stream(self, status: int, stream) -> None:
        self.status = status


def message(i: int, events: int = 1) -> pb.GenerateResponse:
    data = b'{"candidates":[{"content":{"parts":[{"text":"w%d "}]}}]}' % i
    msg = pb.GenerateResponse()
    if events == 1:
        msg.chunk.data = data
    else:
        for _ in range(events):
            msg.chunks.add().data = data
    return msg


async def _waiting(stream: FakeStream) -> None:
    """Until the body waits for the next message (and nothing else is left to run)."""
    await asyncio.wait_for(stream.waiting.wait(), 10)
    for _ in range(5):
        await asyncio.sleep(0)


def _translator() -> SseTranslator:
    return SseTranslator(feed=lambda chunk: b"data: x\n\n", finish=lambda: b"data: [DONE]\n\n",
                         error=lambda exc: b"data: error\n\n", keepalive=lambda: b": ping\n\n")


@pytest.mark.parametrize("events", [1, 3])
@pytest.mark.parametrize("route", ["gemini-sse", "gemini-json", "translated"])
async def test_no_message_is_held_while_the_next_is_awaited(route: str, events: int) -> None:
    stream, meter = FakeStream(), FakeMeter()
    first, second = message(1, events), message(2, events)
    alone = sys.getrefcount(first)  # this test's own reference (and getrefcount's argument)
    if route == "translated":
        # The translated routes (OpenAI, Anthropic, Responses) read through a Prefetcher.
        stream.messages.put_nowait(first)
        pump = Prefetcher(stream.next)
        body = pump_sse(OpenStream(stream, pump, await pump.get()), _translator(), meter, None)
    else:
        body = (_sse_body if route == "gemini-sse" else _array_body)(stream, first, meter)
    out = [await body.__anext__()]
    reader = asyncio.ensure_future(body.__anext__())
    await _waiting(stream)
    assert sys.getrefcount(first) == alone, "the first message is still held while the next is awaited"

    stream.messages.put_nowait(second)
    out.append(await reader)
    reader = asyncio.ensure_future(body.__anext__())
    await _waiting(stream)
    assert sys.getrefcount(second) == alone, "the last message is still held while the next is awaited"

    stream.messages.put_nowait(None)
    try:
        out.append(await reader)  # the tail (the JSON array's "]", the translated end)
    except StopAsyncIteration:
        pass  # Gemini SSE has none
    else:
        out.extend([rest async for rest in body])
    assert meter.status == 200
    text = b"".join(out)
    if route != "translated":
        assert b"w1 " in text and b"w2 " in text  # both messages were sent, in order
        assert text.index(b"w1 ") < text.index(b"w2 ")


def test_a_stream_holds_a_bounded_amount_of_uncounted_output() -> None:
    """Backends send usage only with the last event, so until then the edge keeps the output
    streamed so far (to bill a stream cut before its usage): at most 4 KiB of it, whatever the
    answer's length (before: 64 KiB per open stream, then 16)."""
    stream = UpstreamStream(_NoCall(), count_text=True)  # type: ignore[arg-type]
    chunk = b'{"candidates":[{"content":{"parts":[{"text":"' + b"x" * 1000 + b'"}]}}]}'
    for _ in range(60):  # ~62 KB of output, no usage yet
        msg = pb.GenerateResponse()
        msg.chunk.data = chunk
        stream._seen(msg)
        assert sum(map(len, stream._uncounted)) <= 4 * 1024
    assert stream.text_chars == 60 * 1000  # nothing is lost to the early counting


def test_a_held_stream_counts_its_output_as_it_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream held open (events a second or more apart: a slow answer, or `make bench`'s
    1,000 held streams) is counted as it goes, so it keeps about one event of uncounted output
    between two instead of up to 4 KiB (~200 B events: 20 of them were held per stream)."""
    now = [0.0]
    # raising=False: without the clock (the code before the bound) this fails on its assert.
    monkeypatch.setattr(upstream_stream, "_clock", lambda: now[0], raising=False)
    stream = UpstreamStream(_NoCall(), count_text=True)  # type: ignore[arg-type]
    for i in range(1, 21):
        stream._seen(message(i))
        held = len(stream._uncounted)
        assert held <= 1, f"{held} events held uncounted after {i} events a second apart"
        now[0] += 1.0
    assert stream.text_chars == sum(len(f"w{i} ") for i in range(1, 21))  # nothing lost


def test_an_answer_streamed_within_a_second_is_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the age bound costs a fast answer: nothing. Its events (21 of ~150 B, the bench's
    answer) stay unparsed until the usage in the last one makes them moot."""
    now = [0.0]
    parsed: list[bytes] = []
    monkeypatch.setattr(upstream_stream, "_clock", lambda: now[0])
    monkeypatch.setattr(upstream_stream, "output_chars", lambda data: parsed.append(data) or 0)
    stream = UpstreamStream(_NoCall(), count_text=True)  # type: ignore[arg-type]
    filler = b',"modelVersion":"gemini-2.5-flash","responseId":"' + b"r" * 40 + b'"}'
    for i in range(1, 22):
        msg = pb.GenerateResponse()
        msg.chunk.data = b'{"candidates":[{"content":{"role":"model","parts":[{"text":"w%d "}]}}]' % i + filler
        if i == 21:
            msg.usage.prompt_tokens = msg.usage.total_tokens = 5
        stream._seen(msg)
        now[0] += 0.04  # 21 events in 0.84 s
    assert stream.usage is not None
    assert parsed == [], f"{len(parsed)} events of a fast answer were parsed"


class _NoCall:
    """A call whose request was already let go (UpstreamStream only forgets it)."""

    _request = None

    def done(self) -> bool:
        return True


async def test_the_response_holds_neither_headers_nor_the_last_chunk_while_the_next_is_awaited() -> None:
    """StreamResponse sent the headers at the start and each chunk as it came; before, it kept
    the headers (a list of tuples) and the last chunk referenced for the stream's whole life."""
    from fastapi import APIRouter

    from services.edge.app import EdgeApp
    from services.edge.streaming import StreamResponse

    more = asyncio.Event()
    waiting = asyncio.Event()
    chunks = [bytes(bytearray(b"data: %d\r\n\r\n" % i)) for i in range(2)]  # objects of their own
    first = chunks[0]
    alone = sys.getrefcount(first)
    holder: dict = {}

    async def body():
        yield chunks[0]
        waiting.set()
        await more.wait()
        yield chunks[1]

    async def endpoint(request):
        response = StreamResponse(body(), media_type="text/event-stream", headers={"x-request-id": "r1"})
        holder["headers"] = response.raw_headers
        return response

    router = APIRouter()
    router.add_route("/stream", endpoint, methods=["POST"])
    app = EdgeApp()
    app.include_router(router)
    app.direct_routes([(router, "")])  # served as the edge serves its POST routes

    sent: list[tuple[str, int]] = []  # what was sent, without keeping it (as a transport)

    async def send(message) -> None:
        sent.append((message["type"], len(message.get("body", b""))))

    async def receive():
        await asyncio.Event().wait()  # the client stays

    scope = {"type": "http", "method": "POST", "path": "/stream", "raw_path": b"/stream", "root_path": "",
             "query_string": b"", "headers": [], "scheme": "http", "server": ("127.0.0.1", 1),
             "http_version": "1.1", "asgi": {"version": "3.0"}}
    task = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.wait_for(waiting.wait(), 10)
    for _ in range(5):
        await asyncio.sleep(0)
    headers = holder.pop("headers")
    # Counted outside the asserts: pytest's rewriting keeps a subscript's value while it asserts.
    held = sys.getrefcount(headers)
    assert held == 2, "the headers are held after they were sent"  # `headers`, getrefcount's argument
    held = sys.getrefcount(first)
    assert held == alone, "the last chunk is held while the next is awaited"
    # One coroutine of the app between the server and the response: EdgeApp.__call__ and
    # _run_direct (each coroutine awaiting is a frame held per open stream).
    names = []
    coro = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_name)
        coro = coro.cr_await
    assert names[:3] == ["__call__", "_run_direct", "__call__"], names
    more.set()
    await asyncio.wait_for(task, 10)
    assert sent == [("http.response.start", 0), ("http.response.body", len(chunks[0])),
                    ("http.response.body", len(chunks[1])), ("http.response.body", 0)]
