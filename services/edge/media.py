"""Media for the OpenAI path: recognise what bytes are, unpack inline data, fetch http(s) URLs.

Clients send audio and video through `image_url` (the seed documents exactly that), so the type
always comes from the bytes' magic numbers; a declared type is only the fallback.

`MediaFetcher` is the one place the gateway makes requests to addresses a client chose, so it
guards against server-side request forgery: every resolved address of every hop must be a
public unicast address (unless `allow_private`), the connection goes to the address that was
checked (no second DNS lookup that could answer differently), redirects are followed by hand
and checked hop by hop, the body is streamed and cut at `max_bytes`, and one deadline covers
the whole fetch.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import ipaddress
import logging
import re
import socket
import traceback
from typing import TYPE_CHECKING, Callable, Iterable
from urllib.parse import unquote_to_bytes, urljoin, urlsplit, urlunsplit

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("edge.media")

OCTET_STREAM = "application/octet-stream"
# Enough decoded bytes for every signature below, including ftyp compatible-brand lists.
SNIFF_BYTES = 512
# A failed fetch of at least this many bytes is followed by a collection (fetch_all).
COLLECT_AFTER_BYTES = 1 << 20
_SNIFF_B64 = SNIFF_BYTES // 3 * 4


class MediaError(ValueError):
    """Media the gateway cannot use (bad data, refused or failed fetch); the edge answers
    `status` (400 unless a budget refused it: 413 too much for one request, 503 too much in
    flight on this edge)."""

    def __init__(self, message: str, url: str | None = None, *, status: int = 400, code: str = "invalid_media",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.status = status
        self.code = code
        self.retry_after = retry_after


class InflightBudget:
    """Bytes held by all requests of this process at once: fetched media here, large request
    bodies in body_budget.py (the edge's memory for them is a small multiple of it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


class MediaLease:
    """The media bytes one request fetched: bounded by the per-request total, and held against
    the process-wide in-flight budget until `release()` (once the request was handed on)."""

    def __init__(self, max_total: int, inflight: InflightBudget) -> None:
        self.max_total = max_total
        self._inflight = inflight
        self.total = 0

    def claim(self, n: int, url: str) -> None:
        if n <= 0:
            return
        if self.total + n > self.max_total:
            raise MediaError(f"the media of this request exceed the limit of {self.max_total} bytes in total "
                             "(MEDIA_MAX_TOTAL_BYTES)", url, status=413, code="media_too_large")
        if not self._inflight.take(n):
            raise MediaError("the gateway is fetching too much media at the moment; retry shortly", url,
                             status=503, code="media_busy", retry_after=1.0)
        self.total += n

    def release(self) -> None:
        self._inflight.give(self.total)
        self.total = 0

    def __enter__(self) -> "MediaLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- sniffing ------------------------------------------------------------------------------------

# ISO base media (ftyp) brands. Gemini spells QuickTime "video/mov" and 3GP "video/3gpp".
_FTYP_BRANDS: dict[bytes, str] = {
    **dict.fromkeys((b"avif", b"avis"), "image/avif"),
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"), "image/heic"),
    **dict.fromkeys((b"mif1", b"msf1"), "image/heif"),
    **dict.fromkeys((b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "), "audio/mp4"),
    b"qt  ": "video/mov",
    **dict.fromkeys((b"3gp4", b"3gp5", b"3gp6", b"3gp7", b"3gs7", b"3ge6", b"3ge7", b"3gg6"), "video/3gpp"),
    **dict.fromkeys((b"3g2a", b"3g2b", b"3g2c"), "video/3gpp2"),
    **dict.fromkeys(
        (b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP", b"MSNV", b"NDAS", b"f4v ", b"mmp4"),
        "video/mp4",
    ),
}


def _ftyp(head: bytes) -> str | None:
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    if major in _FTYP_BRANDS:
        return _FTYP_BRANDS[major]
    # Unknown major brand: the compatible brands usually name a family we know.
    end = min(len(head), size if 16 <= size <= len(head) else len(head))
    for off in range(16, end - 3, 4):
        brand = head[off:off + 4]
        if brand in _FTYP_BRANDS:
            return _FTYP_BRANDS[brand]
    return "video/mp4"


def _mpeg_audio(head: bytes) -> str | None:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    layer = (head[1] >> 1) & 0x03
    if layer == 0:
        # ADTS: sync, then layer bits 00 (AAC carries no layer).
        return "audio/aac" if head[1] & 0xF6 == 0xF0 else None
    version = (head[1] >> 3) & 0x03
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0x03
    if version == 1 or bitrate == 0x0F or rate == 0x03:  # reserved values: not a frame header
        return None
    return "audio/mp3" if layer == 1 else "audio/mpeg"


def sniff_mime(head: bytes) -> str | None:
    """The media type of a file from its first bytes, or None when unknown."""
    if len(head) < 4:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:4] == b"RIFF" and len(head) >= 12:
        kind = head[8:12]
        if kind == b"WEBP":
            return "image/webp"
        if kind == b"WAVE":
            return "audio/wav"
        if kind == b"AVI ":
            return "video/avi"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head[4:8] == b"ftyp" and len(head) >= 12:
        return _ftyp(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # EBML: the DocType element near the start says webm or matroska.
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"\x80theora" in head else "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3"):
        return "audio/mp3"
    if head.startswith(b"FLV\x01"):
        return "video/x-flv"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "video/wmv"  # ASF container
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video/mpeg"  # MPEG program stream / elementary video sequence header
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "video/mp2t"
    if head[:2] == b"BM" and len(head) >= 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    return _mpeg_audio(head)


# --- inline data ---------------------------------------------------------------------------------

_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),", re.IGNORECASE)
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_WS = re.compile(r"\s+")


def _b64_head(data: str) -> bytes:
    """Decode (and thereby validate) the first bytes of a base64 string."""
    chunk = data[:_SNIFF_B64]
    if not chunk or not _B64_CHARS.fullmatch(chunk) or not _B64_CHARS.fullmatch(data[-4:]):
        raise MediaError("media data is not valid base64")
    if len(data) % 4 == 1:
        raise MediaError("media data is not valid base64 (truncated)")
    chunk = chunk.replace("-", "+").replace("_", "/")
    chunk = chunk[: len(chunk) - len(chunk) % 4] if len(chunk) < len(data) else chunk + "=" * (-len(chunk) % 4)
    try:
        return base64.b64decode(chunk, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError("media data is not valid base64") from exc


def _normalise_b64(data: str) -> str:
    # Only copies when needed: most clients send one unbroken line.
    return _WS.sub("", data) if any(c in data[:_SNIFF_B64] or c in data[-_SNIFF_B64:] for c in "\r\n\t ") else data


def is_remote(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


NOT_MEDIA_URL = "media URL must be http(s), a data: URL or base64"


def looks_like_path(text: str) -> bool:
    """A media URL field holding something that is neither a URL nor base64 (a file path, say)."""
    return "://" in text[:16] or text[:1] in ("/", ".") or " " in text[:_SNIFF_B64]


def decode_inline(url: str, *, base64_only: bool = False) -> tuple[str, str] | None:
    """A `data:` URL or bare base64 → (mime, base64 exactly as sent); None for http(s) URLs.

    The type is sniffed from the decoded head; the declared data-URL type is the fallback, then
    application/octet-stream. Raises MediaError for anything else. `base64_only`: the field
    holds base64 by definition (Anthropic's base64 source), so a leading "/" (all JPEGs) is no
    sign of a path.
    """
    text = url.strip()
    if is_remote(text):
        return None
    if text[:5].lower() == "data:":
        m = _DATA_URL.match(text)
        if not m:
            raise MediaError("malformed data: URL (expected data:<type>;base64,<data>)")
        declared = m.group("mime").strip().lower() or None
        payload = text[m.end():]
        params = [p.strip().lower() for p in m.group("params").split(";") if p.strip()]
        if "base64" in params:
            data = _normalise_b64(payload)
        else:
            # Percent-encoded data URL (rare for media): the one case that needs encoding.
            data = base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
        if not data:
            raise MediaError("data: URL carries no data")
        head = _b64_head(data)
        return sniff_mime(head) or declared or OCTET_STREAM, data
    if not base64_only and looks_like_path(text):
        raise MediaError(NOT_MEDIA_URL)
    data = _normalise_b64(text)
    head = _b64_head(data)
    return sniff_mime(head) or OCTET_STREAM, data


def spliced_mime(prefix: str, first: bytes, total: int) -> str:
    """The type of inline base64 that stayed in the client's body (services/edge/spliced.py):
    `prefix` is what came before it in the string ("" or "data:<type>;base64,"), `first` its
    first bytes, `total` its length. Only runs of the base64 alphabet are left there, so what
    remains to check is the length and the head."""
    declared = None
    if prefix:
        m = _DATA_URL.fullmatch(prefix.strip())
        if not m:
            raise MediaError("malformed data: URL (expected data:<type>;base64,<data>)")
        declared = m.group("mime").strip().lower() or None
    if total % 4 == 1:
        raise MediaError("media data is not valid base64 (truncated)")
    chunk = first[:_SNIFF_B64]
    try:
        head = base64.b64decode(chunk[:len(chunk) // 4 * 4], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError("media data is not valid base64") from exc
    return sniff_mime(head) or declared or OCTET_STREAM


# --- fetching ------------------------------------------------------------------------------------

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
        encoder = _Encoder(size)
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


class Encoded(list):
    """Base64 text in pieces (bytes or bytearray, sent one after the other); `text()` joins them."""

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self)

    def text(self) -> str:
        return b"".join(self).decode("ascii")


class _Encoder:
    """Base64 of a body: encoded as it arrives into one buffer of the final size when the size
    is declared; without a declared length the raw chunks are kept as they come (the cheapest
    way to hold bytes that a budget may still refuse) and encoded into one buffer at the end.
    Keeps the first SNIFF_BYTES raw bytes."""

    def __init__(self, size: int | None) -> None:
        self._buf: bytearray | None = bytearray((size + 2) // 3 * 4) if size else None
        self._pos = 0
        self._raw: list[bytes] = []  # without a declared length, or past it
        self._carry = b""
        self.head = b""

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[:SNIFF_BYTES - len(self.head)]
        if self._buf is None or self._raw:
            self._raw.append(chunk)
            return
        data = self._carry + chunk if self._carry else chunk
        whole = len(data) - len(data) % 3
        encoded = base64.b64encode(memoryview(data)[:whole]) if whole else b""
        end = self._pos + len(encoded)
        if end > len(self._buf) or (end == len(self._buf) and len(data) > whole):
            # More than declared (the client library normally refuses it): the rest as raw.
            self._raw.append(chunk)
            return
        self._carry = bytes(data[whole:])
        self._buf[self._pos:end] = encoded
        self._pos = end

    def finish(self) -> Encoded:
        out = Encoded()
        if self._buf is not None:
            if not self._raw:
                if self._carry:
                    tail = base64.b64encode(self._carry)
                    self._buf[self._pos:self._pos + len(tail)] = tail
                    self._pos += len(tail)
                if self._pos < len(self._buf):
                    del self._buf[self._pos:]
                out.append(self._buf)
                self._buf = None
                return out
            # Past the declared length: what was encoded so far goes on with the rest below.
            self._raw.insert(0, self._carry)
            out.append(self._buf[:self._pos])
            self._buf = None
        total = sum(len(c) for c in self._raw)
        buf = bytearray((total + 2) // 3 * 4)
        pos, carry = 0, b""
        raw, self._raw = self._raw, []
        for i in range(len(raw)):
            data = carry + raw[i] if carry else raw[i]
            raw[i] = b""  # each raw chunk is let go once encoded
            whole = len(data) - len(data) % 3
            carry = bytes(data[whole:])
            encoded = base64.b64encode(memoryview(data)[:whole])
            buf[pos:pos + len(encoded)] = encoded
            pos += len(encoded)
        if carry:
            tail = base64.b64encode(carry)
            buf[pos:pos + len(tail)] = tail
            pos += len(tail)
        del buf[pos:]
        out.append(buf)
        return out
