"""Abusive HTTP: slow-loris, huge headers, a 100 MiB body, deeply nested JSON, invalid UTF-8,
wrong content types. Each gets a 4xx quickly and the edge's memory stays bounded.

The stack runs with the edge's default limits (MAX_BODY_BYTES 32 MiB) behind the real Envoy
configuration, since Envoy is what clients reach; where the edge alone must hold, the test
talks to it directly.
"""
from __future__ import annotations

import socket
import time
from typing import Iterator

import httpx
import pytest

from tests import harness
from tests.faults.rig import MODEL, Rig, rss_kib
from tests.support.raw_http import read_head

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024
HUNDRED_MIB = 100 * MIB


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    # Default body limit: the edge's EDGE_ENV overrides nothing about sizes.
    return rigs(label="abuse", envoy=True)


@pytest.fixture(scope="module")
def key(rig: Rig) -> str:
    return rig.key()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


def routes(base: str) -> list[tuple[str, str]]:
    """(url, api) for every POST route."""
    native = f"{base}/v1beta/models/{MODEL}"
    return [(f"{native}:generateContent", "google"), (f"{native}:streamGenerateContent?alt=sse", "google"),
            (f"{native}:streamGenerateContent", "google"), (f"{native}:countTokens", "google"),
            (f"{base}/v1/chat/completions", "openai")]


def auth(key: str) -> dict[str, str]:
    # Both headers: each route takes the one its clients send (Bearer wins where both are read).
    return {"Authorization": f"Bearer {key}", "x-goog-api-key": key}


def assert_error(r: httpx.Response, status: int | tuple[int, ...], api: str) -> dict:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["message"]
    if api == "openai":
        assert set(err) == {"message", "type", "param", "code"}
    else:
        assert err["code"] == r.status_code and err["status"]
    return err


# --- slow-loris -------------------------------------------------------------------------------

def header_timeouts(rig: Rig) -> int:
    """Envoy's count of public requests it closed because their headers did not complete in time."""
    assert rig.envoy is not None
    r = httpx.get(f"http://{harness.LOOPBACK}:{rig.envoy.extra['admin_port']}/stats",
                  params={"filter": r"^http\.public\.downstream_rq_header_timeout$"}, timeout=30, trust_env=False)
    r.raise_for_status()
    counts = [int(line.split(":")[1]) for line in r.text.splitlines() if line.strip()]
    assert len(counts) == 1, r.text
    return counts[0]


def test_slow_loris_is_cut_off_by_envoy(rig: Rig):
    """Headers sent one byte per second never complete: Envoy hangs up at its 10 s
    request_headers_timeout (408), so such clients cannot pile up. Envoy's own counter says
    which timeout cut the connection (tests/deploy/test_envoy_config.py pins the 10 s); the
    module's timeout is the hang guard."""
    assert rig.envoy is not None
    request = f"GET /gemini_cli/v1/models HTTP/1.1\r\nHost: gw\r\nX-Slow: {'a' * 100}".encode()
    timeouts_before = header_timeouts(rig)
    outcome = None
    with socket.create_connection((harness.LOOPBACK, rig.envoy.port)) as s:
        s.settimeout(1.0)
        for byte in request:
            try:
                s.sendall(bytes([byte]))
                reply = s.recv(4096)
            except socket.timeout:
                continue
            except OSError as exc:  # reset
                outcome = f"reset ({exc})"
                break
            outcome = reply or b"closed"
            break
    assert outcome is not None, "still connected after sending headers for 100+ s"
    assert header_timeouts(rig) == timeouts_before + 1, f"not cut by request_headers_timeout: {outcome!r}"
    if isinstance(outcome, bytes) and outcome != b"closed":
        assert outcome.startswith(b"HTTP/1.1 408"), outcome[:200]


# --- huge headers -----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["one-huge", "very-many"])
def test_huge_headers_refused_by_envoy(rig: Rig, key: str, http: httpx.Client, shape: str):
    if shape == "one-huge":
        extra = {"X-Huge": "a" * MIB}
    else:
        extra = {f"X-Many-{i}": "b" * 100 for i in range(3000)}
    r = http.get(f"{rig.public}/v1/models", headers={"Authorization": f"Bearer {key}", **extra})  # 30 s: hang guard
    assert r.status_code in (400, 431), r.status_code


# --- 100 MiB bodies ----------------------------------------------------------------------------

def raw_post(port: int, path: str, headers: dict[str, str], total: int, *, chunked: bool) -> tuple[bytes, int]:
    """POST up to `total` body bytes over a raw socket, stopping as soon as a response arrives
    or the server stops reading. Returns (status line and headers, body bytes sent)."""
    head = f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {total}\r\n\r\n"
    piece = b" " * (256 * 1024)
    frame = (b"%x\r\n" % len(piece) + piece + b"\r\n") if chunked else piece
    sent, got = 0, b""
    guard = time.monotonic() + 60  # a hang guard: 100 MiB over loopback takes a fraction of it
    with socket.create_connection((harness.LOOPBACK, port)) as s:
        s.sendall(head.encode())
        while sent < total and time.monotonic() < guard:
            s.setblocking(False)
            try:
                got += s.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if got:
                break
            s.settimeout(5)
            try:
                s.sendall(frame)
            except OSError:  # the server stopped reading and closed: the answer is waiting
                break
            sent += len(piece)
        s.settimeout(5)
        got = read_head(s, got)
    return got, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_100_mib_body_to_the_edge(rig: Rig, key: str, chunked: bool):
    assert rig.edge is not None
    pid = rig.edge.popen.pid
    before = rss_kib(pid)
    head, sent = raw_post(rig.edge.port, f"/gemini_cli/v1beta/models/{MODEL}:generateContent",
                          {"x-goog-api-key": key}, HUNDRED_MIB, chunked=chunked)
    assert head.startswith(b"HTTP/1.1 413"), head[:300]
    # Refused while the body was still coming, not after reading it all.
    assert sent < HUNDRED_MIB, "the edge read the whole 100 MiB before refusing it"
    if not chunked:
        # The declared length alone is enough to refuse: nothing like 100 MiB was read.
        assert sent < 16 * MIB, f"{sent} bytes sent before the refusal"
    # Memory: at most the body limit (32 MiB) was held, never the whole 100 MiB.
    grown = (rss_kib(pid) - before) / 1024
    assert grown < 64, f"edge RSS grew by {grown:.0f} MiB"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_100_mib_body_through_envoy(rig: Rig, key: str, chunked: bool):
    assert rig.envoy is not None and rig.edge is not None
    before = rss_kib(rig.edge.popen.pid)
    head, sent = raw_post(rig.envoy.port, "/gemini_cli/v1/chat/completions",
                          {"Authorization": f"Bearer {key}"}, HUNDRED_MIB, chunked=chunked)
    assert head.startswith(b"HTTP/1.1 413"), head[:300]
    assert sent < 48 * MIB
    assert (rss_kib(rig.edge.popen.pid) - before) / 1024 < 64


# --- malformed JSON ------------------------------------------------------------------------------

def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"a":' * depth + inner + b"}" * depth


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_deeply_nested_json_is_a_400(rig: Rig, key: str, http: httpx.Client, depth: int):
    """Far deeper than any parser's recursion limit: a 400 naming the problem, not a 500."""
    for url, api in routes(rig.api):
        r = http.post(url, headers={**auth(key), "Content-Type": "application/json"},
                      content=b'{"contents":' + nested(depth) + b"}")
        err = assert_error(r, 400, api)
        assert "depth" in err["message"] or "nest" in err["message"], err


def test_deep_but_parseable_json_is_never_a_5xx(rig: Rig, key: str, http: httpx.Client):
    """Nesting the edge's parser accepts must not blow up the translators or the upstream."""
    for depth in (200, 500, 1000):
        deep = nested(depth)
        bodies = [
            b'{"contents":[{"role":"user","parts":[{"text":"x"}]}],"extra":' + deep + b"}",
            b'{"contents":[{"role":"user","parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"f",'
            b'"parameters":' + nested(depth, b'{"type":"object"}').replace(b'"a"', b'"properties"') + b"}]}]}",
            b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"x"}],"tools":[{"type":'
            b'"function","function":{"name":"f","parameters":' + deep + b"}}]}",
            b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"x"}],"response_format":'
            b'{"type":"json_schema","json_schema":{"name":"n","schema":' + deep + b"}}}",
        ]
        for url, api in routes(rig.api):
            for body in bodies:
                is_chat = url.endswith("/chat/completions")
                if is_chat != body.startswith(b'{"model"'):
                    continue
                r = http.post(url, headers={**auth(key), "Content-Type": "application/json"}, content=body)
                assert r.status_code < 500, (depth, url, r.status_code, r.text[:300])


@pytest.mark.parametrize("raw", [
    b'{"contents":[{"role":"user","parts":[{"text":"\xff\xfe"}]}],"messages":[{"role":"user","content":"\xff"}],'
    b'"model":"gemini-2.5-pro"}',
    b'{"contents":[{"role":"user","parts":[{"text":"\xc0\xaf"}]}],"messages":[{"role":"user","content":"\xc0\xaf"}],'
    b'"model":"gemini-2.5-pro"}',                                       # overlong encoding
    b'{"contents":[{"role":"user","parts":[{"text":"\xed\xa0\x80"}]}],"messages":[{"role":"user",'
    b'"content":"\xed\xa0\x80"}],"model":"gemini-2.5-pro"}',             # encoded surrogate
    b'{"contents":[{"role":"user","parts":[{"text":"\\ud800"}]}],"messages":[{"role":"user","content":"\\udfff"}],'
    b'"model":"gemini-2.5-pro"}',                                       # lone escaped surrogate
    b"\xef\xbb\xbf\xff{}",                                                # BOM then garbage
], ids=["invalid-bytes", "overlong", "surrogate", "escaped-surrogate", "bom-garbage"])
def test_invalid_utf8_is_a_400(rig: Rig, key: str, http: httpx.Client, raw: bytes):
    for url, api in routes(rig.api):
        r = http.post(url, headers={**auth(key), "Content-Type": "application/json"}, content=raw)
        assert_error(r, 400, api)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=xyz", "application/xml", "*/*",
                                   "application/jsonx", "image/png"])
def test_wrong_content_type_is_a_415(rig: Rig, key: str, http: httpx.Client, ctype: str):
    body = b'{"model":"gemini-2.5-pro","messages":[{"role":"user","content":"x"}],' \
           b'"contents":[{"role":"user","parts":[{"text":"x"}]}]}'
    for url, api in routes(rig.api):
        r = http.post(url, headers={**auth(key), "Content-Type": ctype}, content=body)
        assert_error(r, 415, api)
    # Through Envoy too: the same answer, in the same shape.
    r = http.post(f"{rig.public}/v1/chat/completions", headers={**auth(key), "Content-Type": ctype}, content=body)
    assert_error(r, 415, "openai")
