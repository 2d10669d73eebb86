"""services.upstream.http1 against small raw-socket servers on loopback: framing, decoding,
keep-alive and the pool, timeouts, cancellation and backpressure."""
from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from services.upstream.http1 import DEFAULT_HEADERS, Http1Pool, HttpError, proxy_configured


class Server:
    """Answers every request on a connection with `reply(request_head, body) -> list[bytes]`
    (each item written separately); records requests and connection closes."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.closed = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                for piece in await self.reply(head, body):
                    if piece is None:
                        writer.close()
                        return
                    if isinstance(piece, float):  # a pause, during which a client hang-up is noticed
                        try:
                            if await asyncio.wait_for(reader.read(1), piece) == b"":
                                return
                        except asyncio.TimeoutError:
                            pass
                        continue
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1


def sized(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body


def chunked_head(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n" + extra + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def pool(**kw) -> Http1Pool:
    kw.setdefault("connect_timeout", 2)
    kw.setdefault("read_timeout", 2)
    kw.setdefault("pool_timeout", 2)
    return Http1Pool(**kw)


async def test_request_line_headers_and_body_parts() -> None:
    async def reply(head, body):
        return [sized(b'{"ok":true}')]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("POST", srv.url + "/v1internal:streamGenerateContent?alt=sse",
                               [*DEFAULT_HEADERS, (b"Authorization", b"Bearer t")], [b'{"a":', memoryview(b"1"), b"}"])
        assert resp.status_code == 200 and await resp.aread() == b'{"ok":true}'
        await resp.aclose()
        head, body = srv.requests[0]
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1internal:streamGenerateContent?alt=sse HTTP/1.1"
        assert lines[1] == f"Host: {srv.url.removeprefix('http://')}".encode()
        assert b"Authorization: Bearer t" in lines and b"Content-Length: 7" in lines
        assert body == b'{"a":1}'
        await p.aclose()


async def test_chunked_stream_arrives_piece_by_piece_and_connection_is_reused() -> None:
    gate = asyncio.Event()

    async def reply(head, body):
        out = [chunked_head(), chunk(b"data: 1\n\n")]
        if not gate.is_set():
            out.append(0.2)
        return out + [chunk(b"data: 2\n\n"), b"0\r\n\r\n"]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("POST", srv.url + "/s", [], b"{}")
        it = resp.aiter_bytes()
        first = await asyncio.wait_for(it.__anext__(), 0.15)  # before the server's pause ends
        assert first == b"data: 1\n\n"
        assert [x async for x in it] == [b"data: 2\n\n"]
        await resp.aclose()
        gate.set()
        resp = await p.request("POST", srv.url + "/s", [], b"{}")
        assert await resp.aread() == b"data: 1\n\ndata: 2\n\n"
        await resp.aclose()
        assert srv.connections == 1
        await p.aclose()


async def test_gzip_and_deflate_bodies_are_decoded() -> None:
    payload = b'{"candidates":[]}' * 50
    bodies = {b"/gzip": (gzip.compress(payload), b"gzip"), b"/zlib": (zlib.compress(payload), b"deflate"),
              b"/raw": (zlib.compress(payload)[2:-4], b"deflate")}

    async def reply(head, body):
        data, enc = bodies[head.split(b" ")[1]]
        return [sized(data, extra=b"Content-Encoding: " + enc + b"\r\n")]

    async with Server(reply) as srv:
        p = pool()
        for path in ("/gzip", "/zlib", "/raw"):
            resp = await p.request("GET", srv.url + path, [])
            assert await resp.aread() == payload, path
            await resp.aclose()
        await p.aclose()


async def test_close_delimited_body_ends_with_the_connection() -> None:
    async def reply(head, body):
        return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"part one ", b"part two", None]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("GET", srv.url + "/", [])
        assert await resp.aread() == b"part one part two"
        await resp.aclose()
        await p.aclose()


async def test_error_status_and_body() -> None:
    async def reply(head, body):
        return [sized(b'{"error":{"code":429}}', status="429 Too Many Requests")]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("POST", srv.url + "/", [], b"{}")
        assert resp.status_code == 429 and resp.header(b"content-length") == b"22"
        assert await resp.aread() == b'{"error":{"code":429}}'
        await resp.aclose()
        await p.aclose()


async def test_closing_a_stream_early_closes_the_connection() -> None:
    async def reply(head, body):
        return [chunked_head(), chunk(b"data: 1\n\n"), 5.0, b"0\r\n\r\n"]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("POST", srv.url + "/", [], b"{}")
        await resp.aiter_bytes().__anext__()
        await resp.aclose()
        for _ in range(100):
            if srv.closed:
                break
            await asyncio.sleep(0.01)
        assert srv.closed == 1
        await p.aclose()


async def test_cancelled_caller_closes_the_connection() -> None:
    async def reply(head, body):
        return [5.0]

    async with Server(reply) as srv:
        p = pool()
        task = asyncio.ensure_future(p.request("POST", srv.url + "/", [], b"{}"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if srv.closed:
                break
            await asyncio.sleep(0.01)
        assert srv.closed == 1
        await p.aclose()


async def test_read_timeout_before_headers_and_between_chunks() -> None:
    async def reply(head, body):
        if head.startswith(b"GET /slow-head"):
            return [1.0]
        return [chunked_head(), chunk(b"x"), 1.0, b"0\r\n\r\n"]

    async with Server(reply) as srv:
        p = pool(read_timeout=0.2)
        with pytest.raises(HttpError) as err:
            await p.request("GET", srv.url + "/slow-head", [])
        assert err.value.kind == "ReadTimeout" and err.value.timeout
        resp = await p.request("GET", srv.url + "/slow-chunk", [])
        with pytest.raises(HttpError) as err:
            await resp.aread()
        assert err.value.kind == "ReadTimeout"
        await resp.aclose()
        await p.aclose()


async def test_server_disconnect_mid_body_is_an_error() -> None:
    async def reply(head, body):
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"only a bit", None]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("GET", srv.url + "/", [])
        with pytest.raises(HttpError) as err:
            await resp.aread()
        assert err.value.kind == "RemoteProtocolError" and not err.value.timeout
        await resp.aclose()
        await p.aclose()


async def test_connect_error() -> None:
    async with Server(lambda h, b: None) as srv:
        url = srv.url
    p = pool()
    with pytest.raises(HttpError) as err:
        await p.request("GET", url + "/", [])
    assert err.value.kind == "ConnectError"
    await p.aclose()


async def test_a_kept_alive_connection_the_server_dropped_is_retried_once() -> None:
    async def reply(head, body):
        return [sized(b"ok"), None] if head.startswith(b"GET /once") else [sized(b"ok")]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("GET", srv.url + "/once", [])
        assert await resp.aread() == b"ok"
        await resp.aclose()
        # The server closed it after answering; whether or not we saw the close yet, the next
        # request gets through (on a new connection).
        resp = await p.request("GET", srv.url + "/again", [])
        assert await resp.aread() == b"ok"
        await resp.aclose()
        assert srv.connections == 2
        await p.aclose()


async def test_pool_limit_and_pool_timeout() -> None:
    release = asyncio.Event()

    async def reply(head, body):
        await release.wait()
        return [sized(b"ok")]

    async with Server(reply) as srv:
        p = pool(max_connections=2, pool_timeout=0.2)
        first = [asyncio.ensure_future(p.request("GET", srv.url + "/", [])) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(HttpError) as err:
            await p.request("GET", srv.url + "/", [])
        assert err.value.kind == "PoolTimeout"
        waiting = asyncio.ensure_future(p.request("GET", srv.url + "/", []))
        await asyncio.sleep(0.05)
        release.set()
        for fut in first:
            resp = await fut
            assert await resp.aread() == b"ok"
            await resp.aclose()
        resp = await asyncio.wait_for(waiting, 1)
        assert await resp.aread() == b"ok"
        await resp.aclose()
        assert srv.connections == 2
        await p.aclose()


async def test_a_slow_consumer_pauses_reading() -> None:
    big = b"x" * (4 << 20)

    async def reply(head, body):
        return [sized(big)]

    async with Server(reply) as srv:
        p = pool()
        resp = await p.request("GET", srv.url + "/", [])
        await asyncio.sleep(0.3)  # the whole body could have arrived by now
        assert resp._buffered <= (2 << 20)
        assert len(await resp.aread()) == len(big)
        await resp.aclose()
        await p.aclose()


async def test_header_injection_is_refused() -> None:
    p = pool()
    with pytest.raises(HttpError):
        await p.request("GET", "http://127.0.0.1:9/", [(b"Authorization", b"Bearer x\r\nEvil: 1")])
    await p.aclose()


def test_proxy_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert not proxy_configured("https://cloudcode-pa.googleapis.com/v1internal")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert proxy_configured("https://cloudcode-pa.googleapis.com/v1internal")
    assert not proxy_configured("http://127.0.0.1:8080/v1internal")
    monkeypatch.setenv("NO_PROXY", "googleapis.com")
    assert not proxy_configured("https://cloudcode-pa.googleapis.com/v1internal")
