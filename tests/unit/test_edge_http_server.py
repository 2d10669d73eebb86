"""services/edge/http_server.py: the edge's HTTP protocol, served by a real uvicorn on loopback.

The headers of a response travel with its first body bytes, but are never held past the
current event-loop step; a request hears of its client leaving through a connection callback.
"""
from __future__ import annotations

import asyncio
import gc
import socket

import uvicorn

from services.edge.http_server import DISCONNECT, DisconnectSignal, EdgeHttpProtocol, LightEvent, _HeadHeldTransport


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_headers_and_first_body_bytes_leave_in_one_write() -> None:
    raw = _Recorder()
    t = _HeadHeldTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response started: at once
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    t.write(b"body")
    t.write(b"more")
    assert raw.writes[1:] == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]
    await asyncio.sleep(0)  # the scheduled flush finds nothing held
    assert len(raw.writes) == 3


async def test_held_headers_leave_at_the_end_of_the_loop_step_or_on_close() -> None:
    raw = _Recorder()
    t = _HeadHeldTransport(raw, asyncio.get_running_loop())  # type: ignore[arg-type]
    t.write(b"head")
    await asyncio.sleep(0)
    assert raw.writes == [b"head"]
    t.write(b"body")
    assert raw.writes == [b"head", b"body"]

    raw2 = _Recorder()
    t2 = _HeadHeldTransport(raw2, asyncio.get_running_loop())  # type: ignore[arg-type]
    t2.write(b"head")
    t2.close()
    assert raw2.writes == [b"head"] and raw2.closed


def test_disconnect_signal_calls_back_once_and_at_once_when_already_lost() -> None:
    signal, calls = DisconnectSignal(), []
    kept, dropped = (lambda: calls.append("kept")), (lambda: calls.append("dropped"))
    signal.add(kept)
    signal.add(dropped)
    signal.discard(dropped)
    signal.discard(dropped)  # twice is harmless
    signal.fire()
    assert calls == ["kept"]
    signal.fire()
    assert calls == ["kept"]
    signal.add(lambda: calls.append("late"))
    assert calls == ["kept", "late"]


async def test_light_event_wakes_every_waiter_and_answers_at_once_when_set() -> None:
    event = LightEvent()
    assert not event.is_set()
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    cancelled = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    event.set()
    async with asyncio.timeout(30):
        assert await asyncio.gather(*waiters) == [True, True, True]
    assert cancelled.cancelled() and event.is_set()
    assert await event.wait() is True  # already set: at once
    event.clear()
    assert not event.is_set()
    later = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    assert not later.done()
    event.set()
    async with asyncio.timeout(30):
        assert await later is True
    assert LightEvent(True).is_set()


class _Served:
    """A uvicorn server with the edge's protocol in this loop, on a free loopback port."""

    def __init__(self, app) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, http=EdgeHttpProtocol, lifespan="off",
                                log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "_Served":
        self.task = asyncio.create_task(self.server.serve())
        async with asyncio.timeout(30):
            while not self.server.started:
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.should_exit = True
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(30):
        return await reader.readuntil(b"\r\n\r\n")


async def test_a_stream_whose_first_chunk_is_not_ready_sends_its_headers_at_once() -> None:
    release = asyncio.Event()

    async def app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await release.wait()  # the first chunk comes only after the client saw the headers
        await send({"type": "http.response.body", "body": b"chunk", "more_body": False})

    async with _Served(app) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await _read_head(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
        release.set()
        async with asyncio.timeout(30):
            body = await reader.readuntil(b"0\r\n\r\n")
        assert body == b"5\r\nchunk\r\n0\r\n\r\n"
        # HEAD: headers only, on the same keep-alive connection.
        writer.write(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
        release.clear()
        release.set()
        assert (await _read_head(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()


async def test_a_request_hears_of_its_client_leaving_without_reading() -> None:
    seen: dict = {}
    gone = asyncio.Event()

    async def app(scope, receive, send) -> None:
        signal = scope["extensions"][DISCONNECT]
        seen["signal"] = signal
        signal.add(gone.set)
        await gone.wait()

    async with _Served(app) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(30):
            while "signal" not in seen:
                await asyncio.sleep(0.01)
        writer.close()
        async with asyncio.timeout(30):
            await gone.wait()
        assert seen["signal"].lost
        assert seen["signal"].callbacks == []


async def test_a_served_request_leaves_no_cyclic_garbage() -> None:
    """A request's cycle, scope and event are freed when it ends, not left for the cyclic GC
    (whose collections on the request path cost the edge CPU on every request)."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async with _Served(app) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable stays in gc.garbage
        try:
            for _ in range(20):
                writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
                assert (await _read_head(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
                async with asyncio.timeout(30):
                    assert await reader.readexactly(2) == b"ok"
            await asyncio.sleep(0.05)  # the last request's task ends
            gc.collect()
            left = [o for o in gc.garbage if isinstance(o, (RequestResponseCycle, _HeadHeldTransport))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        writer.close()
    assert left == []


async def test_expect_100_continue_is_answered_before_the_held_head() -> None:
    async def app(scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async with _Served(app) as served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        assert await _read_head(reader) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        assert (await _read_head(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        async with asyncio.timeout(30):
            assert await reader.readexactly(5) == b"hello"
        writer.close()


async def test_a_body_in_pieces_and_a_reader_slower_than_the_answer() -> None:
    """uvicorn waits on the edge's LightEvents: receive() for a body that arrives in pieces
    (the request's message event), send() while the client does not read (flow control)."""
    seen: dict = {"paused": 0, "pieces": 0}
    answer = b"x" * (32 << 20)  # more than loopback's socket buffers take
    first_piece, paused = asyncio.Event(), asyncio.Event()

    class Recording(EdgeHttpProtocol):
        def pause_writing(self) -> None:
            seen["paused"] += 1
            paused.set()
            super().pause_writing()

    async def app(scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            seen["pieces"] += 1
            first_piece.set()
        seen["body"] = body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(answer)).encode())]})
        for i in range(0, len(answer), 1 << 16):  # the transport pauses writing long before the end
            await send({"type": "http.response.body", "body": answer[i:i + (1 << 16)], "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    served = _Served(app)
    served.server.config.http = Recording
    async with served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello")
        await writer.drain()
        async with asyncio.timeout(30):  # the app has the first piece and waits for the rest
            await first_piece.wait()
        writer.write(b"world")
        assert (await _read_head(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        try:  # not reading: the edge's writes back up until the transport pauses them
            async with asyncio.timeout(30):
                await paused.wait()
        except TimeoutError:
            raise AssertionError("hung: the edge never paused writing to a client that does not read") from None
        async with asyncio.timeout(60):
            assert await reader.readexactly(len(answer)) == answer
        writer.close()
    assert seen["body"] == b"helloworld" and seen["pieces"] >= 2 and seen["paused"] > 0


async def test_the_protocol_uses_light_events_for_flow_control_and_each_request() -> None:
    protocols: list[EdgeHttpProtocol] = []

    class Recording(EdgeHttpProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            protocols.append(self)

    events: list = []

    async def app(scope, receive, send) -> None:
        events.append(protocols[-1].cycle.message_event)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    served = _Served(app)
    served.server.config.http = Recording
    async with served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await _read_head(reader)).startswith(b"HTTP/1.1 200 OK\r\n")
        writer.close()
    assert isinstance(protocols[0].flow._is_writable_event, LightEvent)
    assert [type(e) for e in events] == [LightEvent]


async def test_pipelined_requests_are_answered_in_order() -> None:
    """Requests sent back to back on one connection wait in the protocol's pipeline queue
    (services/edge/http_server.py's _Pipeline) and are answered first in, first out."""
    release = asyncio.Event()
    pipelines: list = []

    async def app(scope, receive, send) -> None:
        if scope["path"] == "/1":
            await release.wait()  # /2 and /3 arrive while /1 is still being answered
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    class Recording(EdgeHttpProtocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            pipelines.append(self.pipeline)

    served = _Served(app)
    served.server.config.http = Recording
    async with served:
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in (1, 2, 3)))
        async with asyncio.timeout(30):
            while len(pipelines[0]) < 1:  # /2 queued behind /1 (httptools stops at each request)
                await asyncio.sleep(0.01)
        release.set()
        answers = []
        for _ in range(3):
            await _read_head(reader)
            async with asyncio.timeout(30):
                answers.append(await reader.readexactly(2))
        writer.close()
    assert answers == [b"/1", b"/2", b"/3"]
    assert type(pipelines[0]).__name__ == "_Pipeline" and len(pipelines[0]) == 0
