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
from time import perf_counter
from typing import Mapping, NamedTuple

import aiohttp
import certifi
from multidict import CIMultiDictProxy
from yarl import URL

from .backend_stream import BackendStream
from .backend_wait import add_backend_wait
from .body_payload import Body, to_payload
from .errors import TransportError
from .proxies import Proxies
from .transport_failures import describe_failure

log = logging.getLogger(__name__)

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


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
        self._proxies = Proxies()
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
            return await session.request(method, target, headers=headers, data=to_payload(body),
                                         allow_redirects=False, proxy=proxy_url)
        except TransportError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("backend %s %s failed: %s: %s", method, target.with_query(None), type(exc).__name__, exc)
            raise describe_failure(exc, "before answering") from None
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
            add_backend_wait(began)

    # --- streams -------------------------------------------------------------------------------

    async def open_stream(self, method: str, url: str, *, headers: Mapping[str, str], body: Body | None = None,
                          proxy: str | None = None) -> BackendStream:
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
            add_backend_wait(began)
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
        raise describe_failure(exc, "while answering") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)
