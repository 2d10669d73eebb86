"""Fetching media from http(s) URLs a client chose.

`MediaFetcher` is the one place the gateway makes requests to addresses a client chose, so it
guards against server-side request forgery: every resolved address of every hop must be a
public unicast address (unless `allow_private`), the connection goes to the address that was
checked (no second DNS lookup that could answer differently), redirects are followed by hand
and checked hop by hop, the body is streamed and cut at `max_bytes`, and one deadline covers
the whole fetch.
"""
from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import socket
import traceback
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import urljoin, urlsplit, urlunsplit

from services.edge.media_budget import InflightBudget, MediaLease
from services.edge.media_encode import Encoded, Encoder
from services.edge.media_errors import MediaError
from services.edge.media_sniff import OCTET_STREAM, sniff_mime

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("edge.media")

# A failed fetch of at least this many bytes is followed by a collection (fetch_all).
COLLECT_AFTER_BYTES = 1 << 20

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for anything but a public unicast address, looking through IPv6 wrappers of IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None and address_refused(inner):
            return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


_REDIRECTS = {301, 302, 303, 307, 308}


def media_http_client(timeout: float) -> Callable[[], "httpx.AsyncClient"]:
    """What builds the fetcher's httpx client on its first fetch: httpx (with httpcore, and
    h2/trio when installed) weighs ~4-8 MiB in an edge that never fetches a media URL."""
    def build() -> "httpx.AsyncClient":
        import httpx

        from services.edge.media_net import ReadAheadTransport
        # Each connection reads ahead a bounded amount (media_net.py): the budgets count what
        # was read, so what waits unread must stay small too.
        return httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=timeout,
                                 transport=ReadAheadTransport(),
                                 headers={"User-Agent": "gemini-cli-gateway-media/1"})
    return build


class MediaFetcher:
    def __init__(
        self,
        client: "httpx.AsyncClient | Callable[[], httpx.AsyncClient]",
        *,
        max_bytes: int,
        timeout: float,
        max_redirects: int,
        allow_private: bool,
        allow_networks: Iterable[str] = (),
        max_total: int | None = None,
        max_inflight: int | None = None,
    ) -> None:
        """`allow_networks` (CIDRs) are exempt from the non-public refusal — an operator's
        internal media host, say — without opening every private address. `max_total` bounds
        the bytes fetched for one request, `max_inflight` those held by all requests at once."""
        # A client, or what builds one on the first fetch (media_http_client).
        self._client: httpx.AsyncClient | None = None if callable(client) else client
        self._make_client = client if callable(client) else None
        self._max_bytes = max_bytes
        self._max_total = max_total if max_total is not None else 1 << 62
        self.inflight = InflightBudget(max_inflight if max_inflight is not None else 1 << 62)
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._allow_private = allow_private
        self._allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allow_networks)

    @property
    def client(self) -> "httpx.AsyncClient":
        if self._client is None:
            assert self._make_client is not None
            self._client = self._make_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def lease(self) -> MediaLease:
        """A new request's media budget; release it once the request was handed on."""
        return MediaLease(self._max_total, self.inflight)

    async def fetch(self, url: str, lease: MediaLease | None = None) -> tuple[str, Encoded]:
        """(mime, base64 in pieces) of the resource at `url`; MediaError when refused or failed."""
        if lease is None:
            with self.lease() as own:
                return await self.fetch(url, own)
        import httpx  # loaded by the client already, or about to be (media_http_client)

        try:
            async with asyncio.timeout(self._timeout):
                return await self._fetch(url, lease)
        except MediaError:
            raise
        except TimeoutError:
            raise MediaError(f"fetching {url} took longer than {self._timeout:g}s", url) from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as exc:
            # Bad URL syntax, refused connection, TLS failure…: the client's URL, so a 400.
            raise MediaError(f"fetching {url} failed: {type(exc).__name__}", url) from None

    async def fetch_all(self, urls: Iterable[str], lease: MediaLease | None = None) -> dict[str, tuple[str, Encoded]]:
        """Fetch several URLs at once; the first failure (a budget exceeded included) cancels
        the rest and is raised. Without a `lease`, the budget is released on return."""
        unique = list(dict.fromkeys(urls))
        if not unique:
            return {}
        if lease is None:
            with self.lease() as own:
                return await self.fetch_all(unique, own)
        results: dict[str, tuple[str, Encoded]] = {}

        async def one(u: str) -> None:
            results[u] = await self.fetch(u, lease)

        try:
            async with asyncio.TaskGroup() as tg:
                for u in unique:
                    tg.create_task(one(u))
        except BaseExceptionGroup as group:
            first = next((e for e in group.exceptions if isinstance(e, MediaError)), None)
            if first is None:
                raise
            # The group and its tracebacks form reference cycles holding the frames of the
            # fetches, with the bytes they had read (up to MEDIA_MAX_TOTAL_BYTES): cleared
            # here, a refused request's media is freed at once, not whenever the cyclic GC
            # next runs (until then each refusal's bytes added to the edge's memory).
            for exc in (group, *group.exceptions):
                traceback.clear_frames(exc.__traceback__)
            if lease.total >= COLLECT_AFTER_BYTES:
                # So are the connections cut short, with what they had buffered beyond what
                # was read (little: media_net.py). A refusal this size cost the client as
                # many bytes: one collection per refusal is cheap beside.
                gc.collect()
            raise first.with_traceback(None) from None
        return {u: results[u] for u in unique}

    async def _fetch(self, url: str, lease: MediaLease) -> tuple[str, Encoded]:
        current = url
        for _hop in range(self._max_redirects + 1):
            parts = urlsplit(current)
            if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
                raise MediaError(f"media URL must be http(s): {current}", url)
            targets = await self._targets(parts.hostname, parts.port or (443 if parts.scheme.lower() == "https" else 80), url)
            response = await self._open(current, parts, targets, url)
            try:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise MediaError(f"redirect without Location from {current}", url)
                    current = urljoin(current, location)
                    continue
                if response.status_code != 200:
                    raise MediaError(f"fetching {current} returned HTTP {response.status_code}", url)
                head, encoded = await self._read(response, url, lease)
            finally:
                await response.aclose()
            ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
            mime = sniff_mime(head) or (ctype if "/" in ctype and ctype != OCTET_STREAM else None) or OCTET_STREAM
            return mime, encoded
        raise MediaError(f"fetching {url}: more than {self._max_redirects} redirects", url)

    async def _targets(self, host: str, port: int, url: str) -> list[str] | None:
        """The checked addresses to connect to, or None to let the client resolve (private allowed)."""
        if self._allow_private:
            return None
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as exc:
                raise MediaError(f"cannot resolve media host {host!r}", url) from exc
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if not addresses:
            raise MediaError(f"cannot resolve media host {host!r}", url)
        for ip in addresses:
            if address_refused(ip) and not any(ip.version == n.version and ip in n for n in self._allowed):
                # The address itself stays in the log: it maps the operator's network for whoever asks.
                log.warning("media URL host %r resolves to the non-public address %s; refused", host, ip)
                raise MediaError(f"media URL host {host!r} resolves to a non-public address; refused", url)
        return [str(ip) for ip in addresses]

    async def _open(self, current: str, parts, targets: list[str] | None, url: str) -> httpx.Response:
        import httpx

        if targets is None:
            request = self.client.build_request("GET", current)
            return await self.client.send(request, stream=True, follow_redirects=False)
        # Connect to the address that was checked; Host header and TLS name stay the original.
        host_header = parts.netloc.rpartition("@")[2]
        last: Exception | None = None
        for ip in targets:
            netloc = f"[{ip}]" if ":" in ip else ip
            if parts.port:
                netloc += f":{parts.port}"
            pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
            extensions = {"sni_hostname": parts.hostname} if parts.scheme.lower() == "https" else {}
            request = self.client.build_request("GET", pinned, headers={"Host": host_header}, extensions=extensions)
            try:
                return await self.client.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError as exc:
                last = exc
        raise MediaError(f"cannot connect to media host {parts.hostname!r}: {type(last).__name__}", url)

    async def _read(self, response: httpx.Response, url: str, lease: MediaLease) -> tuple[bytes, Encoded]:
        """(the first bytes, for sniffing; the body in base64), counted against the request's
        and the process's media budgets as it arrives (a declared length is claimed before
        reading anything).

        The body is encoded as it arrives and never held raw: the base64 is the one copy of
        the media this process keeps (it is sent on as it is, see services/edge/spliced.py).
        A declared length gets its buffer at once, otherwise each chunk's encoding is a piece of
        its own; no buffer grows by reallocation (many growing buffers side by side, one per
        URL of a request, would fragment the heap to several times the bytes they hold)."""
        declared = response.headers.get("content-length")
        size = int(declared) if declared and declared.isdigit() else None
        if size is not None:
            if size > self._max_bytes:
                raise MediaError(f"media at {url} is larger than {self._max_bytes} bytes", url)
            lease.claim(size, url)
        encoder = Encoder(size)
        got = 0
        claimed = size or 0
        async for chunk in response.aiter_bytes():
            end = got + len(chunk)
            if end > self._max_bytes:
                raise MediaError(f"media at {url} is larger than {self._max_bytes} bytes", url)
            if end > claimed:
                lease.claim(end - claimed, url)
                claimed = end
            encoder.feed(chunk)
            got = end
        return encoder.head, encoder.finish()
