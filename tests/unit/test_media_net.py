"""The media fetcher's transport (services/edge/media_net.py) against real loopback servers, on
uvloop (as the edge runs) and on asyncio's own loop: bounded read-ahead, TLS with the checked
address pinned, pooled connections the server closed, and httpx's errors."""
from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
import tracemalloc
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from services.edge.media_fetch import MediaFetcher
from services.edge.media_net import READ_AHEAD, ReadAheadBackend, ReadAheadTransport
from tests.simulator.tls import write_pki
from tests.support.loops import run  # noqa: F401,F811  (the fixture: uvloop and asyncio)

pytestmark = pytest.mark.timeout(60)

MIB = 1 << 20
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * (3 * MIB // 256)


@pytest.fixture
def firehose() -> Iterator[int]:
    """A port whose server answers anything with 64 MiB, as fast as the socket takes it."""
    listener = socket.create_server(("127.0.0.1", 0))
    body = memoryview(bytes(64 * MIB))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    conn.sendall(body)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(5)


async def _peak_while_reading_slowly(port: int) -> int:
    """Bytes the process allocated at its peak (tracemalloc) while reading 64 KiB at a time with
    pauses, during which the server keeps the socket full."""
    stream = await ReadAheadBackend().connect_tcp("127.0.0.1", port, timeout=10)
    try:
        await stream.write(b"GET / HTTP/1.1\r\nHost: media\r\n\r\n", timeout=10)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(200):
                await asyncio.sleep(0.002)
                data = await stream.read(65536, timeout=10)
                assert data
                del data
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    finally:
        await stream.aclose()


def test_read_ahead_stays_bounded_for_a_slow_reader(run, firehose: int) -> None:
    # What waits unread is at most ~2 x READ_AHEAD plus one transport read (256 KiB), and the
    # 64 KiB handed out. (httpcore's default anyio streams queue what each wake-up reads:
    # several MiB here on uvloop.)
    peak = run(_peak_while_reading_slowly(firehose))
    assert peak <= 2 * READ_AHEAD + MIB, f"{peak / MIB:.1f} MiB held while reading 64 KiB at a time"


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/close":
            # A complete response, then the server hangs up without saying so (no Connection:
            # close): the client's pool must notice before it reuses the connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/silent":
            self.server.release.wait(10)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for off in range(0, len(PNG), 100_000):
            piece = PNG[off:off + 100_000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.release = threading.Event()
        self.hung_up = threading.Event()  # set once the server closed a connection

    def shutdown_request(self, request) -> None:
        super().shutdown_request(request)
        self.hung_up.set()


@contextmanager
def _serving(scheme: str, tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext | bool, _Server]]:
    """(base URL, what a client must trust, the server) of a threaded loopback server, plain or TLS."""
    srv = _Server(("127.0.0.1", 0), _Handler)
    verify: ssl.SSLContext | bool = True
    if scheme == "https":
        pki = write_pki(tmp_path / "pki")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        verify = pki.client_context()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://localhost:{srv.server_address[1]}", verify, srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@pytest.fixture(params=["http", "https"])
def server(request, tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext | bool, _Server]]:
    with _serving(request.param, tmp_path) as served:
        yield served


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext | bool, _Server]]:
    with _serving("https", tmp_path) as served:
        yield served


def test_fetch_pinned_to_the_checked_address(run, server) -> None:
    # allow_private=False: the fetcher connects to the address it checked, by IP, and sends the
    # name as Host and (over TLS) as SNI, which the certificate for localhost must match.
    base, verify, _ = server

    async def go():
        async with httpx.AsyncClient(transport=ReadAheadTransport(verify=verify), trust_env=False) as client:
            fetcher = MediaFetcher(client, max_bytes=8 * MIB, timeout=20, max_redirects=0, allow_private=False,
                                   allow_networks=["127.0.0.0/8", "::1/128"])
            return await fetcher.fetch(f"{base}/png")

    try:
        socket.getaddrinfo("localhost", None)
    except socket.gaierror:
        pytest.fail("localhost does not resolve on this machine")
    mime, data = run(go())
    assert mime == "image/png" and base64.b64decode(data.text()) == PNG


def test_pooled_connection_the_server_closed_is_not_reused(run, server) -> None:
    base, verify, srv = server
    sent: list[str] = []

    async def trace(event: str, _info: dict) -> None:
        if event.endswith(".started"):
            sent.append(event.removesuffix(".started"))

    async def go():
        async with httpx.AsyncClient(transport=ReadAheadTransport(verify=verify), trust_env=False) as client:
            first = await client.get(f"{base}/close")
            assert await asyncio.to_thread(srv.hung_up.wait, 20), "the server did not hang up"
            await asyncio.sleep(0.1)  # a few turns of the loop: its reader sees the end of stream
            second = await client.get(f"{base}/close", extensions={"trace": trace})
            return first.content, second.content

    assert run(go()) == (PNG, PNG)
    # A new connection at once, not a request on the closed one first (which the transport
    # would then send again: see test_media_reuse.py).
    assert sent.count("http11.send_request_headers") == 1 and sent.count("connection.connect_tcp") == 1, sent


def test_errors_are_httpx_errors(run, server) -> None:
    base, verify, _ = server
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    async def go():
        async with httpx.AsyncClient(transport=ReadAheadTransport(verify=verify), trust_env=False,
                                     timeout=httpx.Timeout(10, read=0.3)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{base}/silent")
            with pytest.raises(httpx.ConnectError):
                await client.get(f"http://127.0.0.1:{closed}/")

    run(go())


def test_untrusted_certificate_is_a_connect_error(run, tls_server) -> None:
    base, _, _ = tls_server

    async def go():
        async with httpx.AsyncClient(transport=ReadAheadTransport(), trust_env=False) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{base}/png")

    run(go())
