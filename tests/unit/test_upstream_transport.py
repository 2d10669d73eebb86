"""services.upstream.transport against small raw-socket servers on loopback (plain and TLS):
framing, decoding, keep-alive, timeouts, cancellation, proxies, and the attacks the old
hand-written client fell for (a POST re-sent on a dropped kept-alive connection, `100 Continue`
taken as the answer, unbounded bodies)."""
from __future__ import annotations

import asyncio
import gzip
import ssl
import tracemalloc
import zlib
from pathlib import Path

import pytest

from services.upstream.errors import TransportError
from services.upstream.transport import Transport
from tests.simulator.tls import Pki, write_pki


class Server:
    """Answers every request on a connection with `reply(request_head, body, index) -> list`
    (index: how many requests this connection served before). Items: bytes are written, a
    float pauses (noticing a client hang-up), None closes the connection. Records requests
    as (head, body, index) and counts connections and closes."""

    def __init__(self, reply, tls: ssl.SSLContext | None = None) -> None:
        self.reply = reply
        self.tls = tls
        self.requests: list[tuple[bytes, bytes, int]] = []
        self.connections = 0
        self.closed = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> "Server":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        index = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body, index))
                index += 1
                for piece in await self.reply(head, body, index - 1):
                    if piece is None:
                        writer.close()
                        return
                    if isinstance(piece, float):
                        try:
                            if await asyncio.wait_for(reader.read(1), piece) == b"":
                                return
                        except asyncio.TimeoutError:
                            pass
                        continue
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self.closed += 1


def sized(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body


def chunked_head(extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n" + extra + b"\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def transport(**kw) -> Transport:
    kw.setdefault("connect_timeout", 2)
    kw.setdefault("read_timeout", 2)
    return Transport(**kw)


async def wait_until(check, what: str, timeout: float = 30.0) -> None:
    """Until `check()` holds; the deadline only guards against a hang (200 polls of 10 ms, about
    2 s, were too few for a starved event loop)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_closed(srv: Server, count: int = 1) -> None:
    await wait_until(lambda: srv.closed >= count, f"{count} closed connection(s) at the server")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_pki(tmp_path_factory.mktemp("pki"))


def server_tls(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    return ctx


# --- framing and the pool ----------------------------------------------------------------------

async def test_request_line_headers_and_body_parts() -> None:
    async def reply(head, body, index):
        return [sized(b'{"ok":true}')]

    async with Server(reply) as srv:
        t = transport()
        resp = await t.request("POST", srv.url + "/v1internal:generateContent",
                               headers={"Authorization": "Bearer t", "Content-Type": "application/json"},
                               body=[b'{"a":', memoryview(b"1"), b"}"])
        assert resp.status == 200 and resp.body == b'{"ok":true}'
        head, body, _ = srv.requests[0]
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1internal:generateContent HTTP/1.1"
        assert f"Host: 127.0.0.1:{srv.port}".encode() in lines
        assert b"Authorization: Bearer t" in lines and b"Content-Length: 7" in lines
        assert b"Content-Type: application/json" in lines
        assert body == b'{"a":1}'
        await t.aclose()


async def test_a_large_body_in_parts_is_sent_whole_and_in_order() -> None:
    async def reply(head, body, index):
        return [sized(b"{}")]

    image = bytes(range(256)) * 2048  # 512 KiB: sent part by part, not joined
    parts = [b'{"request":"', memoryview(image)[1000:], b'"}']
    async with Server(reply) as srv:
        t = transport()
        await t.request("POST", srv.url + "/", headers={}, body=parts)
        head, body, _ = srv.requests[0]
        assert body == b'{"request":"' + image[1000:] + b'"}'
        assert f"Content-Length: {len(body)}".encode() in head.split(b"\r\n")
        await t.aclose()


async def test_query_string_is_sent_as_given() -> None:
    async def reply(head, body, index):
        return [sized(b"{}")]

    async with Server(reply) as srv:
        t = transport()
        await t.request("POST", srv.url + "/v1internal:streamGenerateContent?alt=sse", headers={}, body=b"{}")
        assert srv.requests[0][0].startswith(b"POST /v1internal:streamGenerateContent?alt=sse HTTP/1.1")
        await t.aclose()


async def test_stream_events_arrive_one_by_one_and_the_connection_is_reused() -> None:
    gate = asyncio.Event()

    async def reply(head, body, index):
        out = [chunked_head(), chunk(b"data: 1\r\n\r\n")]
        if not gate.is_set():
            out.append(0.3)
        return out + [chunk(b"data: 2\r\n\r\n"), b"0\r\n\r\n"]

    async with Server(reply) as srv:
        t = transport()
        stream = await t.open_stream("POST", srv.url + "/s", headers={}, body=b"{}")
        assert stream.status == 200
        events = stream.events()
        assert await asyncio.wait_for(events.__anext__(), 0.25) == b"1"  # before the server's pause ends
        assert [e async for e in events] == [b"2"]
        await stream.aclose()
        gate.set()
        stream = await t.open_stream("POST", srv.url + "/s", headers={}, body=b"{}")
        assert [e async for e in stream.events()] == [b"1", b"2"]
        await stream.aclose()
        assert srv.connections == 1 and [r[2] for r in srv.requests] == [0, 1]
        await t.aclose()


@pytest.mark.parametrize("encoding,compress", [
    (b"gzip", gzip.compress),
    (b"deflate", zlib.compress),
])
async def test_compressed_bodies_are_decoded(encoding: bytes, compress) -> None:
    payload = b'{"candidates":[]}' * 50

    async def reply(head, body, index):
        return [sized(compress(payload), extra=b"Content-Encoding: " + encoding + b"\r\n")]

    async with Server(reply) as srv:
        t = transport()
        resp = await t.request("GET", srv.url + "/", headers={})
        assert resp.body == payload
        assert b"gzip" in next(l for l in srv.requests[0][0].split(b"\r\n") if l.lower().startswith(b"accept-encoding"))
        await t.aclose()


async def test_close_delimited_body_ends_with_the_connection() -> None:
    async def reply(head, body, index):
        return [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"part one ", b"part two", None]

    async with Server(reply) as srv:
        t = transport()
        assert (await t.request("GET", srv.url + "/", headers={})).body == b"part one part two"
        await t.aclose()


async def test_error_status_and_capped_error_body() -> None:
    async def reply(head, body, index):
        if head.startswith(b"POST /big"):
            return [chunked_head(), chunk(b"x" * 100_000), 5.0, b"0\r\n\r\n"]
        return [sized(b'{"error":{"code":429}}', status="429 Too Many Requests")]

    async with Server(reply) as srv:
        t = transport()
        resp = await t.request("POST", srv.url + "/", headers={}, body=b"{}")
        assert resp.status == 429 and resp.headers["Content-Length"] == "22"
        assert resp.body == b'{"error":{"code":429}}'
        stream = await t.open_stream("POST", srv.url + "/big", headers={}, body=b"{}")
        assert len(await asyncio.wait_for(stream.error_body(limit=1000), 1)) == 1000  # not waiting for the rest
        await stream.aclose()
        await t.aclose()


async def test_closing_a_stream_early_closes_the_connection() -> None:
    async def reply(head, body, index):
        return [chunked_head(), chunk(b"data: 1\n\n"), 5.0, b"0\r\n\r\n"]

    async with Server(reply) as srv:
        t = transport()
        stream = await t.open_stream("POST", srv.url + "/", headers={}, body=b"{}")
        events = stream.events()
        await events.__anext__()
        await events.aclose()
        await stream.aclose()
        await wait_closed(srv)
        await t.aclose()


async def test_a_cancelled_caller_closes_the_connection() -> None:
    async def reply(head, body, index):
        return [5.0]

    async with Server(reply) as srv:
        t = transport()
        task = asyncio.ensure_future(t.request("POST", srv.url + "/", headers={}, body=b"{}"))
        await wait_until(lambda: srv.requests, "the request at the server")  # in flight: the caller leaves
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_closed(srv)
        await t.aclose()


async def test_read_timeout_before_the_head_and_between_events() -> None:
    async def reply(head, body, index):
        if head.startswith(b"POST /slow-head"):
            return [1.5]
        return [chunked_head(), chunk(b"data: 1\n\n"), 1.5, b"0\r\n\r\n"]

    async with Server(reply) as srv:
        t = transport(read_timeout=0.3)
        with pytest.raises(TransportError) as err:
            await t.open_stream("POST", srv.url + "/slow-head", headers={}, body=b"{}")
        assert err.value.timeout
        stream = await t.open_stream("POST", srv.url + "/slow-chunk", headers={}, body=b"{}")
        events = stream.events()
        assert await events.__anext__() == b"1"
        with pytest.raises(TransportError) as err:
            await events.__anext__()
        assert err.value.timeout and "stalled" in err.value.message
        await stream.aclose()
        await t.aclose()


async def test_the_whole_call_deadline_of_a_unary_request() -> None:
    async def reply(head, body, index):
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", 0.2, b"12345", 0.2, b"6789", 0.2, b"0"]

    async with Server(reply) as srv:
        t = transport(read_timeout=5)
        with pytest.raises(TransportError) as err:
            await t.request("GET", srv.url + "/", headers={}, timeout=0.3)  # each read is quick, the whole is not
        assert err.value.timeout
        await t.aclose()


async def test_a_backend_that_stops_reading_the_upload_cannot_hold_a_stream_forever() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(10)  # never reads the body: the client's send buffer fills up
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = transport(read_timeout=0.3, request_timeout=1.0)
    with pytest.raises(TransportError) as err:
        await t.open_stream("POST", f"http://127.0.0.1:{port}/", headers={}, body=[bytes(32 << 20), b"}"])
    assert err.value.timeout
    await t.aclose()
    server.close()


async def test_a_disconnect_mid_body_is_an_error() -> None:
    async def reply(head, body, index):
        if head.startswith(b"GET /sized"):
            return [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"only a bit", None]
        return [chunked_head(), chunk(b"data: 1\n\n"), None]

    async with Server(reply) as srv:
        t = transport()
        with pytest.raises(TransportError) as err:
            await t.request("GET", srv.url + "/sized", headers={})
        assert not err.value.timeout
        stream = await t.open_stream("POST", srv.url + "/chunked", headers={}, body=b"{}")
        with pytest.raises(TransportError) as err:
            _ = [e async for e in stream.events()]
        assert not err.value.timeout and "broke" in err.value.message
        await stream.aclose()
        await t.aclose()


async def test_events_sent_before_a_break_reach_the_caller_before_the_error() -> None:
    """The backend sends two events and drops the connection. When both arrive with the break
    (here: the caller reads only after all of it arrived), aiohttp would raise before handing
    them over; the caller must still get both, then the error."""
    async def reply(head, body, index):
        return [chunked_head(), 0.05, chunk(b"data: 1\n\n") + chunk(b"data: 2\n\n") + b"5\r\nda", None]

    async with Server(reply) as srv:
        t = transport()
        stream = await t.open_stream("POST", srv.url + "/chunked", headers={}, body=b"{}")
        await wait_closed(srv)  # the events and the break are all sent before the first read
        await asyncio.sleep(0.05)  # and read off the socket by the transport
        got: list[bytes] = []
        with pytest.raises(TransportError) as err:
            async for data in stream.events():
                got.append(data)
        assert got == [b"1", b"2"]
        assert not err.value.retry and "broke" in err.value.message
        await stream.aclose()
        await t.aclose()


async def test_connect_error_names_no_address() -> None:
    async with Server(lambda h, b, i: None) as srv:
        url, port = srv.url, srv.port
    t = transport()
    with pytest.raises(TransportError) as err:
        await t.request("POST", url + "/", headers={}, body=b"{}")
    assert not err.value.timeout and str(port) not in err.value.message and "127.0.0.1" not in err.value.message
    await t.aclose()


async def test_pool_limit_waits_then_times_out() -> None:
    release = asyncio.Event()

    async def reply(head, body, index):
        await release.wait()
        return [sized(b"ok")]

    async with Server(reply) as srv:
        t = transport(max_connections=2, connect_timeout=0.3)
        first = [asyncio.ensure_future(t.request("GET", srv.url + "/", headers={})) for _ in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(TransportError) as err:
            await t.request("GET", srv.url + "/", headers={})
        assert err.value.timeout
        release.set()
        assert [(await f).body for f in first] == [b"ok", b"ok"]
        assert srv.connections == 2
        await t.aclose()


async def test_header_injection_is_refused() -> None:
    async def reply(head, body, index):
        return [sized(b"{}")]

    async with Server(reply) as srv:
        t = transport()
        with pytest.raises(TransportError):
            await t.request("POST", srv.url + "/", headers={"Authorization": "Bearer x\r\nEvil: 1"}, body=b"{}")
        assert not any(b"Evil" in r[0] for r in srv.requests)
        await t.aclose()


async def test_cookies_are_not_kept() -> None:
    async def reply(head, body, index):
        return [sized(b"{}", extra=b"Set-Cookie: sid=credential-a; Path=/\r\n")]

    async with Server(reply) as srv:
        t = transport()
        await t.request("POST", srv.url + "/", headers={}, body=b"{}")
        await t.request("POST", srv.url + "/", headers={}, body=b"{}")
        assert not any(b"cookie:" in r[0].lower() for r in srv.requests)
        await t.aclose()


# --- attacks the old client fell for -------------------------------------------------------

async def test_a_post_is_not_resent_when_the_kept_alive_connection_drops() -> None:
    """The server reads the POST on a reused connection and closes it without answering: the
    POST must reach it once, and the caller gets an error (RFC 9110 §9.2.2)."""
    async def reply(head, body, index):
        return [sized(b"{}")] if index == 0 else [None]

    async with Server(reply) as srv:
        t = transport()
        assert (await t.request("POST", srv.url + "/first", headers={}, body=b"{}")).status == 200
        with pytest.raises(TransportError) as err:
            await t.request("POST", srv.url + "/second", headers={}, body=b'{"n":2}')
        assert not err.value.timeout
        assert [r[0].split(b" ")[1] for r in srv.requests] == [b"/first", b"/second"]
        assert srv.requests[1][2] == 1  # it did go on the reused connection
        await t.aclose()


async def test_a_stream_post_is_not_resent_either() -> None:
    async def reply(head, body, index):
        return [sized(b"{}")] if index == 0 else [None]

    async with Server(reply) as srv:
        t = transport()
        await t.request("POST", srv.url + "/first", headers={}, body=b"{}")
        with pytest.raises(TransportError):
            await t.open_stream("POST", srv.url + "/stream", headers={}, body=b"{}")
        assert len(srv.requests) == 2
        await t.aclose()


async def test_a_get_on_a_dropped_kept_alive_connection_is_retried_once() -> None:
    # Idempotent: trying again on a new connection is allowed, and is what aiohttp does.
    async def reply(head, body, index):
        return [sized(b"ok")] if index == 0 else [None]

    async with Server(reply) as srv:
        t = transport()
        await t.request("GET", srv.url + "/a", headers={})
        assert (await t.request("GET", srv.url + "/b", headers={})).body == b"ok"
        assert srv.connections == 2
        await t.aclose()


async def test_100_continue_is_not_the_answer() -> None:
    async def reply(head, body, index):
        if b"/stream" in head.split(b"\r\n")[0]:
            return [b"HTTP/1.1 100 Continue\r\n\r\n", 0.2, chunked_head(), chunk(b"data: {\"n\":1}\n\n"),
                    b"0\r\n\r\n"]
        # The pause keeps the interim answer in a read of its own.
        return [b"HTTP/1.1 100 Continue\r\n\r\n", 0.2, sized(b'{"real":true}')]

    async with Server(reply) as srv:
        t = transport()
        resp = await t.request("POST", srv.url + "/unary", headers={}, body=b"{}")
        assert (resp.status, resp.body) == (200, b'{"real":true}')
        stream = await t.open_stream("POST", srv.url + "/stream", headers={}, body=b"{}")
        assert stream.status == 200 and [e async for e in stream.events()] == [b'{"n":1}']
        await stream.aclose()
        await t.aclose()


async def test_a_body_over_the_cap_is_refused_from_its_content_length() -> None:
    async def reply(head, body, index):
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n", 5.0]

    async with Server(reply) as srv:
        t = transport(max_response_bytes=1 << 20)
        with pytest.raises(TransportError) as err:
            await asyncio.wait_for(t.request("POST", srv.url + "/", headers={}, body=b"{}"), 3)
        assert not err.value.retry and not err.value.timeout
        await wait_closed(srv)
        await t.aclose()


async def test_a_chunked_body_over_the_cap_is_refused() -> None:
    async def reply(head, body, index):
        return [chunked_head(), *(chunk(b"x" * 65536) for _ in range(40)), b"0\r\n\r\n"]

    async with Server(reply) as srv:
        t = transport(max_response_bytes=1 << 20)
        with pytest.raises(TransportError) as err:
            await t.request("POST", srv.url + "/", headers={}, body=b"{}")
        assert not err.value.retry
        await t.aclose()


async def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    bomb = b"".join(packer.compress(block) for _ in range(256)) + packer.flush()  # 256 MiB of zeros
    assert len(bomb) < (1 << 20)

    async def reply(head, body, index):
        return [sized(bomb, extra=b"Content-Encoding: gzip\r\n")]

    async with Server(reply) as srv:
        t = transport(max_response_bytes=1 << 20)
        tracemalloc.start()
        try:
            with pytest.raises(TransportError) as err:
                await t.request("POST", srv.url + "/", headers={}, body=b"{}")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert not err.value.retry
        assert peak < 32 << 20, f"{peak} bytes allocated while refusing a 256 MiB bomb"
        await t.aclose()


async def test_an_event_over_the_cap_is_refused() -> None:
    async def reply(head, body, index):
        return [chunked_head(), chunk(b'data: {"ok":1}\n\n'), chunk(b"data: " + b"x" * 65536),
                *(chunk(b"x" * 65536) for _ in range(40)), b"0\r\n\r\n"]

    async with Server(reply) as srv:
        t = transport(max_response_bytes=1 << 20)
        stream = await t.open_stream("POST", srv.url + "/", headers={}, body=b"{}")
        events = stream.events()
        assert await events.__anext__() == b'{"ok":1}'
        with pytest.raises(TransportError) as err:
            await events.__anext__()
        assert not err.value.retry
        await stream.aclose()
        await t.aclose()


# --- TLS ---------------------------------------------------------------------------------------

async def test_tls_is_verified_against_the_extra_ca(pki: Pki, tmp_path: Path) -> None:
    async def reply(head, body, index):
        return [sized(b'{"tls":true}')]

    async with Server(reply, tls=server_tls(pki)) as srv:
        trusting = transport(ca_file=str(pki.ca))
        assert (await trusting.request("POST", srv.url + "/", headers={}, body=b"{}")).body == b'{"tls":true}'
        await trusting.aclose()

        default = transport()
        with pytest.raises(TransportError) as err:
            await asyncio.wait_for(default.request("POST", srv.url + "/", headers={}, body=b"{}"), 5)
        assert "certificate" in err.value.message and "127.0.0.1" not in err.value.message
        await default.aclose()

        other = write_pki(tmp_path / "other", ca_name="another CA")
        wrong = transport(ca_file=str(other.ca))
        with pytest.raises(TransportError):
            await wrong.request("POST", srv.url + "/", headers={}, body=b"{}")
        await wrong.aclose()
        assert len(srv.requests) == 1


async def test_tls_refuses_a_certificate_for_another_host(pki: Pki, tmp_path: Path) -> None:
    elsewhere = write_pki(tmp_path / "elsewhere", hosts=("backend.example",))

    async def reply(head, body, index):
        return [sized(b"{}")]

    async with Server(reply, tls=server_tls(elsewhere)) as srv:
        t = transport(ca_file=str(elsewhere.ca))
        with pytest.raises(TransportError) as err:
            await t.request("POST", srv.url + "/", headers={}, body=b"{}")
        assert "certificate" in err.value.message
        assert srv.requests == []
        await t.aclose()


def test_an_unreadable_ca_file_is_a_clear_startup_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="BACKEND_CA_FILE"):
        Transport(ca_file=str(tmp_path / "missing.pem"))


# --- proxies -----------------------------------------------------------------------------------

class Proxy:
    """A small forward proxy: absolute-form requests are answered from `reply`, CONNECT opens a
    tunnel to the named host:port. Records request heads."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "Proxy":
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            method, target, _ = head.split(b"\r\n")[0].split(b" ")
            if method == b"CONNECT":
                host, port = target.rsplit(b":", 1)
                up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

                async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                    try:
                        while data := await src.read(65536):
                            dst.write(data)
                            await dst.drain()
                    except ConnectionError:
                        pass
                    finally:
                        dst.close()

                await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
                return
            length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                           if l.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(sized(b'{"via":"proxy"}'))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_per_call_proxy_with_credentials() -> None:
    async with Proxy() as proxy:
        t = transport()
        url = proxy.url.replace("http://", "http://user:s3cret@")
        resp = await t.request("POST", "http://backend.invalid/v1internal:generateContent", headers={}, body=b"{}",
                               proxy=url)
        assert resp.body == b'{"via":"proxy"}'
        lines = proxy.heads[0].split(b"\r\n")
        assert lines[0] == b"POST http://backend.invalid/v1internal:generateContent HTTP/1.1"
        assert b"Proxy-Authorization: Basic dXNlcjpzM2NyZXQ=" in lines
        await t.aclose()


async def test_environment_proxies_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    async with Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "direct.invalid")
        t = transport()  # reads the environment once, here
        resp = await t.request("POST", "http://backend.invalid/x", headers={}, body=b"{}")
        assert resp.body == b'{"via":"proxy"}' and len(proxy.heads) == 1
        with pytest.raises(TransportError):
            await t.request("POST", "http://direct.invalid/x", headers={}, body=b"{}")  # not through the proxy
        assert len(proxy.heads) == 1
        await t.aclose()


async def test_tls_through_a_connect_proxy_is_verified(pki: Pki) -> None:
    async def reply(head, body, index):
        return [sized(b'{"tunnel":true}')]

    async with Server(reply, tls=server_tls(pki)) as srv, Proxy() as proxy:
        t = transport(ca_file=str(pki.ca))
        resp = await t.request("POST", srv.url + "/", headers={}, body=b"{}", proxy=proxy.url)
        assert resp.body == b'{"tunnel":true}'
        assert proxy.heads[0].startswith(f"CONNECT 127.0.0.1:{srv.port} HTTP/1.1".encode())
        await t.aclose()
        untrusting = transport()
        with pytest.raises(TransportError):
            await untrusting.request("POST", srv.url + "/", headers={}, body=b"{}", proxy=proxy.url)
        await untrusting.aclose()


def test_settings_reach_the_transport(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    from services.upstream.settings import Settings

    assert Settings().backend_max_response_bytes == 64 * 1024 * 1024 and Settings().backend_ca_file == ""
    monkeypatch.setenv("BACKEND_MAX_RESPONSE_BYTES", "2097152")
    monkeypatch.setenv("BACKEND_CA_FILE", str(pki.ca))
    settings = Settings()
    t = Transport.from_settings(settings)
    assert t.max_response_bytes == 2097152
    assert any(c.get("subject") and ("commonName", "gateway test CA") in sum(c["subject"], ())
               for c in t.ssl_context.get_ca_certs())
