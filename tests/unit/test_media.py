"""Media: magic-number sniffing, inline data, and MediaFetcher against a real loopback server."""
from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import os
import socket
import struct
import threading
import time
import wave
import zlib
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn

from services.edge.media_errors import MediaError
from services.edge.media_fetch import MediaFetcher, address_refused, media_http_client
from services.edge.media_inline import decode_inline
from services.edge.media_sniff import OCTET_STREAM, sniff_mime


# --- small real files ------------------------------------------------------------------------------

def png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


def wav_silence(frames: int = 800) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * frames)
    return buf.getvalue()


def bmp_1x1() -> bytes:
    pixels = b"\x00\x00\xff\x00"
    header = b"BM" + struct.pack("<IHHI", 14 + 40 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free"


GIF_1x1 = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
JPEG_HEAD = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffdb004300")
WEBP_HEAD = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00\x30\x01\x00\x9d\x01\x2a\x01\x00\x01\x00"
EBML = bytes.fromhex("1a45dfa3") + bytes.fromhex("9f4286810142f7810142f2810442f381084282")
SAMPLES = {
    "png": (png_1x1(), "image/png"),
    "jpeg": (JPEG_HEAD, "image/jpeg"),
    "gif": (GIF_1x1, "image/gif"),
    "webp": (WEBP_HEAD, "image/webp"),
    "bmp": (bmp_1x1(), "image/bmp"),
    "heic": (ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
    "heif": (ftyp(b"mif1", b"mif1"), "image/heif"),
    "avif": (ftyp(b"avif", b"avif", b"mif1", b"miaf"), "image/avif"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "application/pdf"),
    "mp3-id3": (b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE", "audio/mp3"),
    "mp3-frame": (bytes.fromhex("fffb9064") + b"\x00" * 60, "audio/mp3"),
    "mp2-frame": (bytes.fromhex("fffd9004") + b"\x00" * 60, "audio/mpeg"),
    "aac-adts": (bytes.fromhex("fff15080") + b"\x2e\x7f\xfc" + b"\x00" * 20, "audio/aac"),
    "wav": (wav_silence(), "audio/wav"),
    "aiff": (b"FORM\x00\x00\x00\x2eAIFFCOMM\x00\x00\x00\x12", "audio/aiff"),
    "ogg": (b"OggS\x00\x02" + b"\x00" * 22 + b"\x01\x1e\x01vorbis", "audio/ogg"),
    "flac": (b"fLaC\x00\x00\x00\x22\x10\x00\x10\x00", "audio/flac"),
    "m4a": (ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"), "audio/mp4"),
    "mp4": (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
    "mp4-unknown-major": (ftyp(b"xxxx", b"zzzz", b"mp42"), "video/mp4"),
    "mov": (ftyp(b"qt  ", b"qt  "), "video/mov"),
    "3gp": (ftyp(b"3gp4", b"isom", b"3gp4"), "video/3gpp"),
    "webm": (EBML + b"\x42\x82\x84webm\x42\x87\x81\x02", "video/webm"),
    "mkv": (EBML + b"\x42\x82\x88matroska\x42\x87\x81\x04", "video/x-matroska"),
    "avi": (b"RIFF\x00\x10\x00\x00AVI LIST\x00\x00\x00\x00hdrlavih", "video/avi"),
    "mpeg-ps": (bytes.fromhex("000001ba440004000401") + b"\x00" * 10, "video/mpeg"),
    "flv": (b"FLV\x01\x05\x00\x00\x00\x09", "video/x-flv"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sniff_mime_recognises_real_headers(name: str) -> None:
    data, mime = SAMPLES[name]
    assert sniff_mime(data) == mime


@pytest.mark.parametrize(
    "head",
    [b"", b"ab", b"hello, world: plain text", b"\xff\xfb\xf0\x00" + b"\x00" * 8, b"RIFF\x00\x00\x00\x00XXXX", b"{\"json\": true}"],
    ids=["empty", "short", "text", "mp3-bad-bitrate", "riff-unknown", "json"],
)
def test_sniff_mime_unknown(head: bytes) -> None:
    assert sniff_mime(head) is None


# --- decode_inline -------------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PNG_B64 = b64(png_1x1())
WAV_B64 = b64(wav_silence())
MP4_B64 = b64(SAMPLES["mp4"][0] + os.urandom(300))
NOISE = b"\x00\x01\x02not-a-known-format" * 10


@pytest.mark.parametrize(
    ("url", "mime", "data"),
    [
        (f"data:image/png;base64,{PNG_B64}", "image/png", PNG_B64),
        # The bytes win over the declared type: the seed sends audio and video through image_url.
        (f"data:image/jpeg;base64,{WAV_B64}", "audio/wav", WAV_B64),
        (f"data:image/png;base64,{MP4_B64}", "video/mp4", MP4_B64),
        (f"data:audio/x-custom;base64,{b64(NOISE)}", "audio/x-custom", b64(NOISE)),
        (f"data:;base64,{b64(NOISE)}", OCTET_STREAM, b64(NOISE)),
        (f"DATA:Image/PNG;name=a.png;BASE64,{PNG_B64}", "image/png", PNG_B64),
        (PNG_B64, "image/png", PNG_B64),
        (WAV_B64, "audio/wav", WAV_B64),
        (b64(NOISE), OCTET_STREAM, b64(NOISE)),
        (base64.urlsafe_b64encode(png_1x1()).decode(), "image/png", base64.urlsafe_b64encode(png_1x1()).decode()),
        ("data:text/plain,hello%20world", "text/plain", b64(b"hello world")),
        (f"  {PNG_B64}\n", "image/png", PNG_B64),
    ],
    ids=["png", "wav-declared-jpeg", "mp4-declared-png", "declared-fallback", "octet", "params-and-case",
         "bare-png", "bare-wav", "bare-noise", "urlsafe", "percent-encoded", "surrounding-space"],
)
def test_decode_inline(url: str, mime: str, data: str) -> None:
    assert decode_inline(url) == (mime, data)


def test_decode_inline_keeps_the_string_object() -> None:
    # No re-encoding and no copy for the usual single-line payload.
    url = f"data:image/png;base64,{PNG_B64}"
    _, data = decode_inline(url)
    assert data == PNG_B64 and base64.b64decode(data) == png_1x1()


def test_decode_inline_strips_line_breaks() -> None:
    wrapped = "\n".join(WAV_B64[i:i + 76] for i in range(0, len(WAV_B64), 76))
    assert decode_inline(f"data:audio/wav;base64,{wrapped}") == ("audio/wav", WAV_B64)


@pytest.mark.parametrize("url", ["http://example.com/a.png", "https://example.com/a.png", "HTTPS://EXAMPLE.COM/x"])
def test_decode_inline_leaves_remote_urls(url: str) -> None:
    assert decode_inline(url) is None


@pytest.mark.parametrize(
    "url",
    ["not base64 at all!", "data:image/png;base64", "data:image/png;base64,", "data:image/png;base64,@@@@####",
     "ftp://example.com/a.png", "/etc/passwd", "file:///etc/passwd", "abcde", "gs://bucket/x.png", "what is this picture"],
)
def test_decode_inline_rejects_garbage(url: str) -> None:
    with pytest.raises(MediaError):
        decode_inline(url)


# --- address policy --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False), ("1.1.1.1", False), ("2606:4700:4700::1111", False),
        ("127.0.0.1", True), ("127.8.9.10", True), ("10.1.2.3", True), ("172.16.5.4", True), ("192.168.0.1", True),
        ("100.64.0.1", True), ("169.254.169.254", True), ("0.0.0.0", True), ("224.0.0.251", True),
        ("255.255.255.255", True), ("240.0.0.1", True), ("::1", True), ("::", True), ("fe80::1", True),
        ("fc00::1", True), ("fd12:3456::1", True), ("ff02::1", True), ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True), ("2002:7f00:1::1", True), ("64:ff9b::a9fe:a9fe", True), ("2001:db8::1", True),
    ],
)
def test_address_policy(address: str, refused: bool) -> None:
    assert address_refused(ipaddress.ip_address(address)) is refused


# --- a real loopback HTTP server -------------------------------------------------------------------

PNG = png_1x1()
WAV = wav_silence(4000)
BLOB = b"\x01\x02\x03\x04no magic here" + os.urandom(64)  # the prefix matches no signature


async def media_app(scope, receive, send):  # a raw ASGI app: every behaviour the fetcher must survive
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())

    async def start(status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(data: bytes, more: bool = False) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": more})

    try:
        if path == "/png":
            await start(200, [(b"content-type", b"text/plain"), (b"content-length", str(len(PNG)).encode())])
            await body(PNG)
        elif path == "/wav-chunked":
            await start(200, [(b"content-type", b"application/octet-stream")])
            for i in range(0, len(WAV), 1000):
                await body(WAV[i:i + 1000], more=True)
            await body(b"")
        elif path == "/blob":
            await start(200, [(b"content-type", b"Audio/X-Special; charset=binary")])
            await body(BLOB)
        elif path == "/host":
            host = dict(scope["headers"]).get(b"host", b"")
            data = PNG if host == query["want"][0].encode() else b"wrong host: " + host
            await start(200, [(b"content-type", b"text/plain")])
            await body(data)
        elif path == "/redirect":
            await start(int(query.get("status", ["302"])[0]), [(b"location", query["to"][0].encode())])
            await body(b"")
        elif path == "/loop":
            await start(302, [(b"location", b"/loop")])
            await body(b"")
        elif path == "/big":
            data = b"\x00" * 5000
            await start(200, [(b"content-length", b"5000")])
            await body(data)
        elif path == "/big-chunked":
            await start(200, [])
            for _ in range(5):
                await body(b"\x00" * 1000, more=True)
            await body(b"")
        elif path == "/forever":
            await start(200, [])
            while not gone.is_set():
                await body(b"\x00" * 16384, more=True)
                await asyncio.sleep(0)
        elif path == "/trickle":
            await start(200, [])
            while not gone.is_set():
                await body(b"\x00", more=True)
                await asyncio.sleep(0.05)
        else:
            await start(404, [])
            await body(b"not found")
    finally:
        watcher.cancel()


@pytest.fixture(scope="module")
def media_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Idle connections outlive the edge's media pool keep-alive (httpx's 5 s, uvicorn's default
    # too): the edge, not this server, closes them, as with web servers that keep them longer.
    config = uvicorn.Config(media_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1, timeout_keep_alive=75)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "loopback media server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
async def client():
    # The client the edge's fetcher builds (its transport: services/edge/media_net.py).
    async with media_http_client(5.0)() as c:
        yield c


def fetcher(client: httpx.AsyncClient, *, allow_private: bool = True, max_bytes: int = 1 << 20, timeout: float = 5.0,
            max_redirects: int = 3, allow_networks=()) -> MediaFetcher:
    return MediaFetcher(client, max_bytes=max_bytes, timeout=timeout, max_redirects=max_redirects,
                        allow_private=allow_private, allow_networks=allow_networks)


async def test_fetch_sniffs_over_content_type(media_server, client) -> None:
    mime, data = await fetcher(client).fetch(f"{media_server}/png")
    assert mime == "image/png" and base64.b64decode(data.text()) == PNG


async def test_fetch_chunked_audio(media_server, client) -> None:
    mime, data = await fetcher(client).fetch(f"{media_server}/wav-chunked")
    assert mime == "audio/wav" and base64.b64decode(data.text()) == WAV


async def test_fetch_falls_back_to_content_type(media_server, client) -> None:
    mime, data = await fetcher(client).fetch(f"{media_server}/blob")
    assert mime == "audio/x-special" and base64.b64decode(data.text()) == BLOB


async def test_fetch_follows_redirects_hop_by_hop(media_server, client) -> None:
    url = f"{media_server}/redirect?to=/redirect%3Fto%3D/png%26status%3D307"
    mime, data = await fetcher(client).fetch(url)
    assert mime == "image/png" and base64.b64decode(data.text()) == PNG


async def test_fetch_redirect_limit(media_server, client) -> None:
    with pytest.raises(MediaError, match="redirects"):
        await fetcher(client, max_redirects=2).fetch(f"{media_server}/loop")
    # Exactly at the limit still works.
    url = f"{media_server}/redirect?to=/redirect%3Fto%3D/png"
    assert (await fetcher(client, max_redirects=2).fetch(url))[0] == "image/png"
    with pytest.raises(MediaError, match="redirects"):
        await fetcher(client, max_redirects=1).fetch(url)


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
async def test_fetch_size_cap(media_server, client, path: str) -> None:
    with pytest.raises(MediaError, match="larger than 4096"):
        await fetcher(client, max_bytes=4096).fetch(f"{media_server}{path}")
    assert (await fetcher(client, max_bytes=5000).fetch(f"{media_server}{path}"))[0] == OCTET_STREAM


async def test_fetch_never_ending_body_is_cut_by_size(media_server, client) -> None:
    # Cut by size, not by the deadline (that would say "longer than").
    with pytest.raises(MediaError, match="larger than"):
        await fetcher(client, max_bytes=1 << 20, timeout=10).fetch(f"{media_server}/forever")


async def test_fetch_trickling_body_is_cut_by_total_timeout(media_server, client) -> None:
    with pytest.raises(MediaError, match="longer than 0.5s"):
        await fetcher(client, timeout=0.5).fetch(f"{media_server}/trickle")


async def test_fetch_http_error_status(media_server, client) -> None:
    with pytest.raises(MediaError, match="HTTP 404"):
        await fetcher(client).fetch(f"{media_server}/nothing-here")


async def test_fetch_connection_refused(client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MediaError):
        await fetcher(client).fetch(f"http://127.0.0.1:{port}/x")


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "[::1]", "0.0.0.0", "2130706433", "[::ffff:127.0.0.1]", "127.1"],
)
async def test_fetch_refuses_loopback_when_private_not_allowed(media_server, client, host: str) -> None:
    port = media_server.rsplit(":", 1)[1]
    with pytest.raises(MediaError, match="non-public|resolve"):
        await fetcher(client, allow_private=False).fetch(f"http://{host}:{port}/png")


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.2:{port}/png", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.2]:{port}/png",
     "http://10.0.0.1/x", "http://[fe80::1]/x"],
)
async def test_redirect_into_private_space_is_refused(media_server, client, target: str) -> None:
    # The first hop is allowed by an explicit exemption, so the refusal can only come from the
    # check on the redirect's own target.
    port = media_server.rsplit(":", 1)[1]
    f = fetcher(client, allow_private=False, allow_networks=["127.0.0.1/32"])
    assert (await f.fetch(f"{media_server}/png"))[0] == "image/png"
    with pytest.raises(MediaError, match="non-public"):
        await f.fetch(f"{media_server}/redirect?to={target.format(port=port)}")


@pytest.mark.parametrize("url", ["http://exa mple.com/x", "http://[::1/x", "http://127.0.0.1:99999/x", "http:///nohost"])
async def test_malformed_urls_are_media_errors(client, url: str) -> None:
    with pytest.raises(MediaError):
        await fetcher(client, allow_private=False).fetch(url)


async def test_redirect_to_other_scheme_is_refused(media_server, client) -> None:
    with pytest.raises(MediaError, match="http"):
        await fetcher(client).fetch(f"{media_server}/redirect?to=file:///etc/passwd")


async def test_pinned_connection_keeps_host_header(media_server, client) -> None:
    # allow_private=False makes the fetcher connect to the checked address itself; the server must
    # still see the original Host (and TLS would see the original name).
    try:
        socket.getaddrinfo("localhost", None)
    except socket.gaierror:
        pytest.fail("localhost does not resolve on this machine: this test needs a name that resolves to loopback")
    port = media_server.rsplit(":", 1)[1]
    f = fetcher(client, allow_private=False, allow_networks=["127.0.0.0/8", "::1/128"])
    mime, data = await f.fetch(f"http://localhost:{port}/host?want=localhost:{port}")
    assert (mime, base64.b64decode(data.text())) == ("image/png", PNG)


async def test_fetch_all_concurrent_and_deduplicated(media_server, client) -> None:
    urls = [f"{media_server}/png", f"{media_server}/wav-chunked", f"{media_server}/png"]
    got = await fetcher(client).fetch_all(urls)
    assert list(got) == [urls[0], urls[1]]
    assert got[urls[0]][0] == "image/png" and got[urls[1]][0] == "audio/wav"
    assert await fetcher(client).fetch_all([]) == {}


async def test_fetch_all_fails_on_first_error(media_server, client) -> None:
    started = time.monotonic()
    with pytest.raises(MediaError, match="HTTP 404"):
        await fetcher(client, timeout=5).fetch_all([f"{media_server}/trickle", f"{media_server}/missing"])
    assert time.monotonic() - started < 4  # the trickling fetch was cancelled, not waited for


def test_media_lease_budgets() -> None:
    from services.edge.media_budget import InflightBudget, MediaLease

    inflight = InflightBudget(100)
    a, b = MediaLease(60, inflight), MediaLease(60, inflight)
    a.claim(50, "u")
    with pytest.raises(MediaError) as too_big:
        a.claim(11, "u")
    assert too_big.value.status == 413 and too_big.value.code == "media_too_large"
    b.claim(50, "u")
    with pytest.raises(MediaError) as busy:
        MediaLease(60, inflight).claim(1, "u")
    assert busy.value.status == 503 and busy.value.retry_after
    a.release()
    a.release()  # idempotent
    assert inflight.held == 50
    with MediaLease(60, inflight) as c:
        c.claim(50, "u")
    assert inflight.held == 50
