"""The media fetcher's connections: httpcore over asyncio streams, whose reader stops reading the
socket once ~2 × READ_AHEAD bytes wait in it, so each fetch holds little beyond what it has
read and counted against the media budget.

httpcore's default (anyio) streams read whenever a fetch waits for data and queue everything
that arrives until the fetch's task runs: under uvloop one wake-up reads up to 32 × 250 kB per
connection (libuv's read loop), whatever the socket's buffer holds, and loopback or fast links
fill it to several MiB. Nine 20 MiB URLs in one request queued 55-68 MiB in the edge before the
budget could refuse them (the media budget only sees what the fetch read). An asyncio
StreamReader pauses the socket's reading past twice its limit, over TLS too (0.8 MiB at most
for a slow reader, against 8 MiB on anyio's streams), and the rest waits in the kernel's
receive window: flow control as TCP means it, at no cost in throughput.

Kept-alive connections race the server's idle timeout: a server may close one just as the next
request goes out on it (Apache, Node and uvicorn close after 5 s idle, gunicorn after 2 s). Idle
connections are dropped well before that (KEEPALIVE_EXPIRY), and a GET that meets the close
anyway, before any byte of its answer, is sent once more (RFC 9110 §9.2.2: GET is idempotent;
RFC 9112 §9.3.1), as Go's and aiohttp's clients do.
"""
from __future__ import annotations

import asyncio
import ssl
from contextlib import contextmanager
from typing import Iterable, Iterator

import httpcore
import httpx

# httpcore reads 64 KiB at a time (HTTP11Connection.READ_NUM_BYTES); the reader pauses the socket
# past twice this, so what waits per connection is ~2 × READ_AHEAD plus one transport read.
READ_AHEAD = 64 * 1024
# Below the shortest idle timeout of common servers (gunicorn's 2 s), so that the race with a
# server's close is rare; what stays of it is retried (ReadAheadTransport). A fetcher reuses
# connections mostly for a redirect to the same host, which follows at once.
KEEPALIVE_EXPIRY = 1.0
# Requests sent once more when a kept-alive connection closed before any byte of the answer:
# idempotent, and without a body (the fetcher only GETs).
_RETRIED_METHODS = frozenset({"GET", "HEAD"})


class ClosedUnanswered(httpcore.ReadError):
    """A kept-alive connection the server closed after our next request went out and before
    any byte of its answer: most likely the server's idle close met our reuse."""


@contextmanager
def _mapped(timeout: type[Exception], error: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc)) from exc
    except OSError as exc:  # ssl.SSLError is one
        raise error(str(exc) or type(exc).__name__) from exc


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        # httpcore's HTTP/1.1 writes a request whole, then reads its answer: a write after a
        # read starts the next request on a connection that was kept alive.
        self._answered = False  # bytes of an answer arrived on this connection
        self._reused = False  # a request went out on it after an answer, and nothing came back yet

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
                async with asyncio.timeout(timeout):
                    data = await self._reader.read(max_bytes)
        except httpcore.ReadError as exc:
            if self._reused and isinstance(exc.__cause__, ConnectionError):
                raise ClosedUnanswered(str(exc)) from exc.__cause__
            raise
        if data:
            self._answered, self._reused = True, False
        elif self._reused:
            raise ClosedUnanswered("the server closed a kept-alive connection before answering")
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._answered:
            self._reused, self._answered = True, False
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()

    async def aclose(self) -> None:
        # As anyio does: no wait for the peer (a cut fetch's server may still be sending), and
        # whatever the kernel had buffered for us goes with the socket.
        transport = self._writer.transport
        try:
            if not transport.is_closing():
                transport.close()
                await asyncio.sleep(0)
        finally:
            transport.abort()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                async with asyncio.timeout(timeout):
                    await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException:
            await self.aclose()
            raise
        return self

    def get_extra_info(self, info: str):
        if info == "is_readable":
            # Asked of idle pooled connections before reuse: the reader keeps reading while
            # idle, so a server that hung up shows as its end of stream.
            return self._reader.at_eof() or self._reader.exception() is not None or self._writer.transport.is_closing()
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class ReadAheadBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend: asyncio streams with a bounded read-ahead."""

    def __init__(self, read_ahead: int = READ_AHEAD) -> None:
        self._limit = read_ahead

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[tuple] | None = None) -> httpcore.AsyncNetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, limit=self._limit, local_addr=(local_address, 0) if local_address else None)
        stream = _Stream(reader, writer)
        try:
            sock = writer.get_extra_info("socket")
            with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
                for option in socket_options or ():
                    sock.setsockopt(*option)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ReadAheadTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (its error mapping and response streams) over a pool on
    ReadAheadBackend: httpx takes no network backend, httpcore's pool does."""

    def __init__(self, read_ahead: int = READ_AHEAD, *, verify: ssl.SSLContext | bool = True,
                 limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                                                     keepalive_expiry=KEEPALIVE_EXPIRY)) -> None:
        # Not super().__init__(): it would build a pool on anyio's streams (and a TLS context) for
        # nothing; the pool is all httpx's transport keeps.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=ReadAheadBackend(read_ahead))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ReadError as exc:
            if request.method not in _RETRIED_METHODS or not isinstance(exc.__cause__, ClosedUnanswered):
                raise
        # Once: the pool has dropped that connection, so this goes on another (most likely a new
        # one). Same URL, so the same address: a fetch pinned to the address it checked
        # (media_fetch.py) stays pinned.
        return await super().handle_async_request(request)
