"""The HTTP transport of every backend call: one aiohttp `ClientSession` per process.

aiohttp parses responses with llhttp (as the hand-written client it replaces did) and brings
what a production client needs: a bounded keep-alive pool (HTTP_MAX_CONNECTIONS), a DNS cache,
Happy Eyeballs, HTTP proxies (CONNECT for https) and bounded, incremental gzip/deflate
decoding. This module adds the policy the backends share:

- TLS is always verified, against the system roots, certifi's bundle and, when set,
  BACKEND_CA_FILE (a private CA: a TLS-inspecting proxy, or the test simulator's CA).
- A request is never sent twice by the transport. aiohttp re-sends only idempotent methods
  when a kept-alive connection turns out to be closed; a POST that meets a dead connection
  fails with TransportError, and whether to try again (on another credential) is the pool's
  decision, not a hidden one here (RFC 9110 §9.2.2).
- Interim `1xx` answers (`100 Continue`) are skipped; the final answer is the one returned.
- Answers are bounded: a unary body (decompressed) and one server-sent event at most
  BACKEND_MAX_RESPONSE_BYTES, an error body at most 64 KiB. Past the cap the connection is
  dropped and the call fails with `TransportError(retry=False)`: the backend did the work,
  so the pool must not spend another credential's quota on the same oversized answer.
- Proxies: the environment's (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY, read once), or
  the `proxy` of one call ("http://user:pass@host:port"), which wins.
- Failures become `TransportError` whose message names what failed, never an address. Once the
  request was sent (the connection dropped, the answer broke off or was not HTTP) it is
  `retry=False`: only failures to connect may be tried again on another credential.

    transport = Transport.from_settings(settings)
    status, headers, body = await transport.request("POST", url, headers=h, body=parts)
    stream = await transport.open_stream("POST", url, headers=h, body=parts)
    try:
        if stream.status != 200: ... await stream.error_body()
        async for data in stream.events(): ...   # each SSE event's data, bytes
    finally:
        await stream.aclose()
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.request
from contextvars import ContextVar
from time import perf_counter
from typing import AsyncIterator, Mapping, NamedTuple, Sequence

import aiohttp
import certifi
from aiohttp import payload as aiohttp_payload
from multidict import CIMultiDictProxy
from yarl import URL

from .errors import TransportError
from .sse import EventTooLarge, SSEParser

log = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_ERROR_BODY = 64 * 1024

Body = bytes | memoryview | Sequence[bytes | memoryview]

# Seconds the current call spent waiting on backend HTTP (the overhead metric's complement).
_WAITED: ContextVar[list[float] | None] = ContextVar("backend_wait", default=None)


def count_backend_wait() -> list[float]:
    """From now on, the time the calling task (and what it awaits) spends waiting on backend
    HTTP adds up in the returned one-element list."""
    cell = [0.0]
    _WAITED.set(cell)
    return cell


def _waited(since: float) -> None:
    cell = _WAITED.get()
    if cell is not None:
        cell[0] += perf_counter() - since


class Response(NamedTuple):
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def make_ssl_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verifying TLS client context: system roots + certifi + the optional extra CA bundle."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=certifi.where())
    if ca_file:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"BACKEND_CA_FILE {ca_file!r} cannot be loaded: {exc}") from None
    return ctx


class _Parts(aiohttp_payload.Payload):
    """A body sent as several buffers one after the other (never joined into one copy)."""

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        super().__init__(parts, content_type=None)
        self._size = sum(len(p) for p in parts)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"".join(self._value)

    async def write(self, writer) -> None:  # type: ignore[override]
        for part in self._value:
            if part:
                await writer.write(part)

    async def write_with_length(self, writer, content_length: int | None) -> None:  # type: ignore[override]
        await self.write(writer)


# Up to this size a body given in parts is joined: the copy costs less than the extra send()
# per part (the first write also carries the request head: one syscall for a small request).
_JOIN_BELOW = 128 * 1024


def _payload(body: Body | None) -> bytes | aiohttp_payload.Payload | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, memoryview):
        return aiohttp_payload.BytesPayload(body, content_type=None)
    if sum(len(p) for p in body) <= _JOIN_BELOW:
        return b"".join(body)
    return _Parts(body)


def _describe(exc: BaseException, stage: str) -> TransportError:
    """A TransportError for an aiohttp / OS failure. The message says what failed and is shown
    to callers: no host, port or path in it (aiohttp's own texts carry them; they are logged)."""
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return TransportError("could not connect to the backend within the connect timeout", timeout=True)
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        return TransportError(f"backend sent nothing within the read timeout {stage}", timeout=True)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return TransportError("the backend's TLS certificate is not trusted (see BACKEND_CA_FILE)")
    if isinstance(exc, aiohttp.ClientSSLError):
        return TransportError(f"TLS handshake with the backend failed ({kind})")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return TransportError(f"the HTTP proxy refused the connection (HTTP {exc.status})")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return TransportError("the HTTP proxy is unreachable")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return TransportError(f"backend unreachable ({kind})")
    # From here on the request was sent: the backend may have run (and billed) the generation,
    # so the pool must not spend another credential on the same call (RFC 9110 §9.2.2: a POST
    # is not idempotent). Only failures to connect are retried elsewhere.
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return TransportError(f"backend closed the connection {stage}", retry=False)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(f"backend answer broke off {stage} (incomplete or corrupt body)", retry=False)
    if isinstance(exc, aiohttp.ClientResponseError):
        return TransportError(f"invalid HTTP response from the backend {stage}", retry=False)
    return TransportError(f"backend unreachable ({kind})")


class _Proxies:
    """Which proxy a URL goes through: the environment's, read once (aiohttp's `trust_env`
    would look it up in a thread on every request). Credentials in a proxy URL are sent by
    aiohttp as Proxy-Authorization (on the request, or on CONNECT for https)."""

    def __init__(self) -> None:
        self._env = urllib.request.getproxies_environment()
        self._by_origin: dict[tuple[str, str], URL | None] = {}
        self._parsed: dict[str, URL] = {}

    def parse(self, proxy: str) -> URL:
        got = self._parsed.get(proxy)
        if got is None:
            try:
                got = URL(proxy)
            except ValueError:
                got = URL()
            if got.scheme not in ("http", "https") or not got.host:
                raise TransportError("the configured proxy is not an http:// or https:// URL", retry=False)
            if len(self._parsed) < 1024:
                self._parsed[proxy] = got
        return got

    def for_url(self, url: URL) -> URL | None:
        key = (url.scheme, url.host or "")
        try:
            return self._by_origin[key]
        except KeyError:
            pass
        proxy = self._env.get(url.scheme) or self._env.get("all")
        got = None
        if proxy and not urllib.request.proxy_bypass_environment(url.host or "", self._env):
            got = self.parse(proxy)
        if len(self._by_origin) < 1024:
            self._by_origin[key] = got
        return got


class Transport:
    """The process's backend HTTP client. Create it anywhere; the session opens on first use
    (inside the running loop) and `aclose()` closes it and every connection."""

    def __init__(self, *, max_connections: int = 100, connect_timeout: float = 10.0, read_timeout: float = 120.0,
                 request_timeout: float = 600.0, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 ca_file: str | None = None, keepalive_expiry: float = 60.0, user_agent: str = "") -> None:
        self.ssl_context = make_ssl_context(ca_file)
        self.max_response_bytes = max_response_bytes
        self._max_connections = max_connections
        self._keepalive = keepalive_expiry
        self._request_timeout = request_timeout
        # `connect` covers waiting for a free pooled connection too; sock_read is the idle
        # time allowed before the answer's head and between two reads of its body.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._user_agent = user_agent
        self._proxies = _Proxies()
        self._urls: dict[str, URL] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings) -> "Transport":
        return cls(max_connections=settings.http_max_connections, connect_timeout=settings.connect_timeout,
                   read_timeout=settings.read_timeout, request_timeout=settings.request_timeout,
                   max_response_bytes=settings.backend_max_response_bytes,
                   ca_file=settings.backend_ca_file or None)

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise TransportError("the backend client is closed (server shutting down)")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, limit_per_host=0, ssl=self.ssl_context, use_dns_cache=True,
            ttl_dns_cache=60, keepalive_timeout=self._keepalive, enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, trust_env=False, auto_decompress=True,
            # Cookies set by one credential's answers must never reach another's calls.
            cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False,
            headers={"User-Agent": self._user_agent} if self._user_agent else None)
        return self._session

    def _url(self, url: str) -> URL:
        got = self._urls.get(url)
        if got is None:
            got = URL(url, encoded=True)
            if got.scheme not in ("http", "https") or not got.host:
                raise TransportError("backend URL must be http:// or https://")
            if len(self._urls) < 1024:
                self._urls[url] = got
        return got

    async def _send(self, method: str, url: str, headers: Mapping[str, str], body: Body | None,
                    proxy: str | None) -> aiohttp.ClientResponse:
        session = self._session or self._open()
        target = self._url(url)
        proxy_url = self._proxies.parse(proxy) if proxy else self._proxies.for_url(target)
        try:
            return await session.request(method, target, headers=headers, data=_payload(body),
                                         allow_redirects=False, proxy=proxy_url)
        except TransportError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("backend %s %s failed: %s: %s", method, target.with_query(None), type(exc).__name__, exc)
            raise _describe(exc, "before answering") from None
        except ValueError as exc:  # e.g. a CR/LF in a header value: nothing was sent
            log.warning("backend %s %s not sent: %s", method, target.with_query(None), exc)
            raise TransportError("the backend request could not be sent (a header holds a forbidden character)",
                                 retry=False) from None

    # --- unary ---------------------------------------------------------------------------------

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: Body | None = None,
                      proxy: str | None = None, timeout: float | None = None) -> Response:
        """One whole exchange within `timeout` (default REQUEST_TIMEOUT): status, headers, body
        (decompressed, at most BACKEND_MAX_RESPONSE_BYTES)."""
        seconds = timeout or self._request_timeout
        began = perf_counter()
        try:
            async with asyncio.timeout(seconds):
                resp = await self._send(method, url, headers, body, proxy)
                try:
                    data = await _read_capped(resp, self.max_response_bytes)
                except BaseException:
                    resp.close()
                    raise
                resp.release()
                return Response(resp.status, resp.headers, data)
        except TimeoutError:
            raise TransportError(f"backend gave no answer within {seconds:g}s", timeout=True) from None
        finally:
            _waited(began)

    # --- streams -------------------------------------------------------------------------------

    async def open_stream(self, method: str, url: str, *, headers: Mapping[str, str], body: Body | None = None,
                          proxy: str | None = None) -> "BackendStream":
        """Send the request and wait for the answer's head: READ_TIMEOUT at most once the
        request is sent, REQUEST_TIMEOUT for the whole (a backend that stops reading a large
        upload cannot hold the call forever). The body is read from the returned stream, which
        must be closed."""
        began = perf_counter()
        try:
            async with asyncio.timeout(self._request_timeout):
                resp = await self._send(method, url, headers, body, proxy)
        except TimeoutError:
            raise TransportError(f"backend gave no answer within {self._request_timeout:g}s", timeout=True) from None
        finally:
            _waited(began)
        return BackendStream(resp, self.max_response_bytes)

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The body, refused as soon as it is known to exceed `cap` (Content-Length, or the bytes
    decoded so far: a gzip bomb stops at the cap, it is never inflated whole)."""
    length = resp.content_length
    if length is not None and length > cap and "Content-Encoding" not in resp.headers:
        raise TransportError(f"backend answer is larger than {cap} bytes", retry=False)
    parts: list[bytes] = []
    total = 0
    content = resp.content
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            total += len(chunk)
            if total > cap:
                raise TransportError(f"backend answer is larger than {cap} bytes", retry=False)
            parts.append(chunk)
    except TransportError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ServerTimeoutError):
            raise  # the caller's deadline
        raise _describe(exc, "while answering") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _buffered_before_failure(content: aiohttp.StreamReader) -> bytes:
    """What the backend sent before its connection broke. aiohttp raises a failure that arrives
    in the same read as the last bytes before it hands those bytes over (StreamReader.readany
    checks its exception first), so they are taken here, past that check."""
    failure = content.exception()
    content._exception = None  # noqa: SLF001 — no public way to read past a set exception
    try:
        return content.read_nowait(-1)
    except (RuntimeError, aiohttp.ClientError):
        return b""
    finally:
        content._exception = failure  # noqa: SLF001


class BackendStream:
    """An answer whose body is read as it comes. `status`/`headers` are known; read either
    `error_body()` or `events()`; always `aclose()` (closing before the end drops the
    connection, which is how a caller's cancellation reaches the backend)."""

    __slots__ = ("status", "headers", "_resp", "_max_event")

    def __init__(self, resp: aiohttp.ClientResponse, max_event_bytes: int) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self._max_event = max_event_bytes

    async def error_body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """At most `limit` bytes of the body (enough for any error); what is left is dropped."""
        content = self._resp.content
        parts: list[bytes] = []
        total = 0
        try:
            while total < limit:
                chunk = await content.readany()
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # what arrived is all there is to show
        return b"".join(parts)[:limit]

    async def events(self) -> AsyncIterator[bytes]:
        """The data of each server-sent event, in order, until the body ends. Transport
        failures (and an event over BACKEND_MAX_RESPONSE_BYTES) raise TransportError."""
        batches = self.batches()
        try:
            async for batch in batches:
                for data in batch:
                    yield data
        finally:
            await batches.aclose()

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """As events(), but the events that one read brought (everything the backend had sent
        by then) come as one list: never empty, never waiting for more than is there."""
        parser = SSEParser(self._max_event)
        content = self._resp.content
        try:
            broken: BaseException | None = None
            while True:
                began = perf_counter()
                try:
                    chunk = await content.readany()
                except aiohttp.ClientPayloadError as exc:
                    # The events that arrived with the break are the caller's: hand them on first.
                    chunk, broken = _buffered_before_failure(content), exc
                    if not chunk:
                        raise
                finally:
                    _waited(began)
                if not chunk:
                    break
                batch = parser.feed(chunk)
                del chunk  # neither the read nor its events are held while the next read waits
                if batch:
                    yield batch
                del batch
                if broken is not None:
                    raise broken
            batch = parser.close()
            if batch:
                yield batch
        except EventTooLarge:
            raise TransportError(f"backend sent an event larger than {self._max_event} bytes", retry=False) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                raise TransportError("backend stream stalled (nothing within the read timeout)", timeout=True) from None
            raise _describe(exc, "mid-stream") from None

    async def aclose(self) -> None:
        # A body read to its end already went back to the pool; otherwise this drops it.
        self._resp.close()
