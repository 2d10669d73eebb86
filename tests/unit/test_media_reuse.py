"""The media fetcher against a loopback server that closes a kept-alive connection just as the
fetcher reuses it (services/edge/media_net.py): the race of a server's idle timeout with the
pool's reuse, made deterministic. The server reads the next request's head, then hangs up
without a byte of answer; the fetch must go through on another connection. A server that had
begun its answer, or that closes a new connection unanswered, must not get the request twice."""
from __future__ import annotations

import base64
import socket
import ssl
import struct
import threading
from typing import Iterator

import httpx
import pytest

from services.edge.media_errors import MediaError
from services.edge.media_fetch import MediaFetcher
from services.edge.media_net import ReadAheadTransport
from tests.simulator.tls import write_pki
from tests.support.loops import run  # noqa: F401,F811  (the fixture: uvloop and asyncio)

pytestmark = pytest.mark.timeout(60)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


class IdleCloser:
    """HTTP/1.1 on 127.0.0.1: answers the first request of each connection with PNG and keeps the
    connection open; on the connection's next request it does `then`:
    "close" hangs up (FIN), "reset" hangs up with a reset, "partial" sends part of a status line
    and hangs up. With `then="close_new"` it hangs up on every connection's first request."""

    def __init__(self, then: str, tls: ssl.SSLContext | None = None, verify: ssl.SSLContext | bool = True) -> None:
        self.then = then
        self._tls = tls
        self.verify = verify  # what a client must trust
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request line)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self._listener.getsockname()[1]}/cat.png"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        for number in range(1_000):
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        if self._tls is not None:
            try:
                conn = self._tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
        with conn:
            buffered = b""
            for served in range(100):
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                self.requests.append((number, head.split(b"\r\n", 1)[0]))
                if served == 0 and self.then != "close_new":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(PNG), PNG))
                    continue
                if self.then == "partial":
                    conn.sendall(b"HTTP/1.1 2")
                elif self.then == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return  # the hang-up

    def close(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone does not)
        except OSError:
            pass
        self._listener.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return write_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=["http", "https"])
def scheme(request) -> str:
    return request.param


@pytest.fixture
def server(request, scheme: str, pki) -> Iterator[IdleCloser]:
    if scheme == "https":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        srv = IdleCloser(request.param, ctx, pki.client_context())
    else:
        srv = IdleCloser(request.param)
    yield srv
    srv.close()


def _fetcher(client: httpx.AsyncClient) -> MediaFetcher:
    # Pinned to the checked address (allow_private off, loopback allowed by name): the path
    # that must keep its pinning on a retry.
    return MediaFetcher(client, max_bytes=1 << 20, timeout=20, max_redirects=0, allow_private=False,
                        allow_networks=["127.0.0.0/8"])


def _client(server: IdleCloser) -> httpx.AsyncClient:
    # Kept alive for a minute: however slow the machine, the second fetch finds the first's
    # connection in the pool.
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=10, keepalive_expiry=60)
    return httpx.AsyncClient(transport=ReadAheadTransport(verify=server.verify, limits=limits), trust_env=False)


async def _twice(server: IdleCloser) -> tuple[tuple[str, bytes], tuple[str, bytes] | MediaError, int, int]:
    """Two fetches of the server's URL one after the other: (the first; the second or its error; media bytes
    the second's lease held; bytes held by the fetcher's process budget after its release)."""
    async with _client(server) as client:
        fetcher = _fetcher(client)
        mime, data = await fetcher.fetch(server.url)
        first = (mime, base64.b64decode(data.text()))
        lease = fetcher.lease()
        try:
            mime, data = await fetcher.fetch(server.url, lease)
            second: tuple[str, bytes] | MediaError = (mime, base64.b64decode(data.text()))
        except MediaError as exc:
            second = exc
        held = lease.total
        lease.release()
        return first, second, held, fetcher.inflight.held


@pytest.mark.parametrize("server", ["close", "reset"], indirect=True)
def test_a_get_on_a_kept_alive_connection_the_server_closed_is_sent_again(run, server: IdleCloser) -> None:
    first, second, held, left = run(_twice(server))
    assert first == ("image/png", PNG)
    assert second == ("image/png", PNG), f"the reused connection's close reached the client: {second!r}"
    # Connection 0 answered the first fetch and hung up on the second, which went once more, on
    # a new connection to the same address.
    assert server.requests == [(0, b"GET /cat.png HTTP/1.1")] * 2 + [(1, b"GET /cat.png HTTP/1.1")]
    # The budget counted the media once, and nothing stays held after the release.
    assert (held, left) == (len(PNG), 0)


@pytest.mark.parametrize("server", ["partial"], indirect=True)
def test_no_second_send_once_the_answer_began(run, server: IdleCloser) -> None:
    first, second, held, left = run(_twice(server))
    assert first == ("image/png", PNG)
    assert isinstance(second, MediaError) and second.status == 400
    assert server.requests == [(0, b"GET /cat.png HTTP/1.1")] * 2
    assert (held, left) == (0, 0)


@pytest.mark.parametrize("server", ["close_new"], indirect=True)
def test_no_second_send_when_a_new_connection_closes_unanswered(run, server: IdleCloser) -> None:
    async def once() -> MediaError:
        async with _client(server) as client:
            with pytest.raises(MediaError) as info:
                await _fetcher(client).fetch(server.url)
            return info.value

    assert run(once()).status == 400
    assert server.requests == [(0, b"GET /cat.png HTTP/1.1")]
