"""Image URLs the edge must refuse to fetch, end to end through the edge process's settings.

1. Default settings (MEDIA_ALLOW_PRIVATE=false): loopback in all its spellings, private ranges,
   CGNAT, link-local and the cloud metadata address 169.254.169.254, IPv6 forms and IPv4 wrapped
   in IPv6 are refused before any connection: a fast 400 saying so, a loopback trap server that
   sees no connection at all, and no backend call.
2. MEDIA_ALLOW_PRIVATE=true (so the trap server on loopback may be fetched) with small limits:
   oversized, never-ending, trickling and silent bodies, and redirect loops, are all 400s within
   the fetch deadline, and the edge's memory stays bounded.
Redirects into private space need a public first hop, which an offline test cannot have; the
fetcher's own unit tests (tests/unit/test_media.py) cover them with an allow-listed first hop.
"""
from __future__ import annotations

import secrets
import socket
import socketserver
import threading
import time
from typing import Iterator

import httpx
import pytest

from tests.faults.rig import MODEL, Rig, rss_kib
from tests.support.raw_http import read_head

pytestmark = pytest.mark.timeout(60)

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cf"
                    "c0f01f0005000201ffa65b8f0000000049454e44ae426082")
MEDIA_MAX = 1024 * 1024
FETCH_TIMEOUT_S = 2


def hold_until_hung_up(sock: socket.socket) -> None:
    """Keep the connection open, sending nothing more, until the edge closes it: however late
    its fetch deadline fires on a busy machine, the answer never ends first. (A fixed pause
    could end before it, and the edge would then report a cut connection, not its deadline.)
    The guard only keeps a broken edge from holding this thread past the test."""
    sock.settimeout(120)
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


class Trap(socketserver.ThreadingTCPServer):
    """A loopback HTTP server with hostile answers; counts every connection it accepts."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TrapHandler)
        self.connections = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return self.server_address[1]


class _TrapHandler(socketserver.BaseRequestHandler):
    server: Trap

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections += 1
        sock: socket.socket = self.request
        data = read_head(sock)
        if b"\r\n\r\n" not in data:
            return
        path = data.split(b" ", 2)[1].decode().split("?", 1)[0]  # a signed URL's query is not the route
        try:
            self.answer(sock, path)
        except OSError:
            pass  # the edge hung up: what these answers are for

    def answer(self, sock: socket.socket, path: str) -> None:
        if path == "/png":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(PNG) + PNG)
        elif path == "/huge":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 10737418240\r\n\r\n")
            sock.sendall(PNG)
            hold_until_hung_up(sock)
        elif path == "/forever":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"\x00" * 65536
            while True:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        elif path == "/trickle":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
            while True:
                sock.sendall(b"1\r\n\x00\r\n")
                time.sleep(0.1)
        elif path == "/silent":
            hold_until_hung_up(sock)
        elif path == "/loop":
            sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\n\r\n")
        elif path == "/to-file":
            sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n")
        else:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    server = Trap()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def strict(rigs) -> Rig:
    """The edge as shipped: MEDIA_ALLOW_PRIVATE unset (false), default fetch timeout (15 s)."""
    return rigs(label="media-strict")


@pytest.fixture(scope="module")
def lenient(rigs) -> Rig:
    return rigs(label="media-lenient", edge_env={"MEDIA_ALLOW_PRIVATE": "true", "MEDIA_MAX_BYTES": str(MEDIA_MAX),
                                                 "MEDIA_FETCH_TIMEOUT": str(FETCH_TIMEOUT_S)})


@pytest.fixture(scope="module")
def strict_key(strict: Rig) -> str:
    return strict.key()


@pytest.fixture(scope="module")
def lenient_key(lenient: Rig) -> str:
    return lenient.key()


def chat_with_image(rig: Rig, key: str, url: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    with httpx.Client(timeout=60, trust_env=False) as c:
        return c.post(f"{rig.api}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def assert_media_400(r: httpx.Response) -> str:
    assert r.status_code == 400, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    return err["message"]


LOOPBACK_FORMS = ["127.0.0.1", "localhost", "127.1", "127.0.0.2", "0x7f000001", "2130706433", "0177.0.0.1",
                  "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "0.0.0.0", "0"]
# Addresses that are never contacted: a connection attempt would hang or fail, not answer fast
# with a refusal that names the address as non-public.
FORBIDDEN = ["http://169.254.169.254/latest/meta-data/iam/security-credentials/",
             "http://[::ffff:169.254.169.254]/computeMetadata/v1/", "http://[64:ff9b::a9fe:a9fe]/",
             "http://[fe80::1]/x.png", "http://10.0.0.1/x.png", "http://10.255.255.254:8080/x.png",
             "http://172.16.0.1/x.png", "http://172.31.255.1/x.png", "http://192.168.0.1/x.png",
             "http://100.64.0.1/x.png", "http://[fd00::1]/x.png", "http://[fc00::1]/x.png",
             "http://198.18.0.1/x.png", "http://224.0.0.1/x.png", "http://255.255.255.255/x.png",
             "http://user:secret@169.254.169.254/", "https://10.0.0.1:8443/x.png", "http://[2002:a9fe:a9fe::]/"]


def test_loopback_in_every_spelling_is_refused_before_connecting(strict: Rig, strict_key: str, trap: Trap, sim):
    key = strict_key
    before = trap.connections
    for host in LOOPBACK_FORMS:
        message = assert_media_400(chat_with_image(strict, key, f"http://{host}:{trap.port}/png"))
        assert "non-public" in message and "refused" in message, (host, message)
    assert trap.connections == before, "the edge connected to a loopback address"
    assert not [q for q in sim.requests(op="generate") if q["account"] in strict.tokens]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_private_and_metadata_addresses_are_refused_before_connecting(strict: Rig, strict_key: str, sim, url: str):
    key = strict_key
    message = assert_media_400(chat_with_image(strict, key, url))
    assert "non-public" in message and "refused" in message, message
    # The refusal message names the host, never the credentials in the URL.
    assert "secret" not in message
    assert not [q for q in sim.requests(op="generate") if q["account"] in strict.tokens]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/x", "ftp://10.0.0.1/x.png",
                                 "dict://127.0.0.1:11211/stat"])
def test_other_schemes_are_refused(strict: Rig, strict_key: str, url: str):
    assert_media_400(chat_with_image(strict, strict_key, url))


def test_the_trap_really_serves(lenient: Rig, lenient_key: str, trap: Trap):
    """With private addresses allowed, the same server is fetched: the refusals above are the
    policy's doing, and the limits below are what stops the hostile answers."""
    r = chat_with_image(lenient, lenient_key, f"http://127.0.0.1:{trap.port}/png")
    assert r.status_code == 200, r.text


def test_a_fetched_url_stays_out_of_the_edge_log(lenient: Rig, lenient_key: str, trap: Trap):
    """Media URLs are the client's content, and signed ones carry a secret in their query (as
    the edge's own request log leaves query strings out): no log line names what was fetched,
    not even httpx's own request line at INFO, the edge's default level."""
    assert lenient.edge is not None
    secret = secrets.token_hex(16)
    r = chat_with_image(lenient, lenient_key, f"http://127.0.0.1:{trap.port}/png?X-Signature={secret}")
    assert r.status_code == 200, r.text
    # httpx logs its line when the answer arrives, before the edge goes on; stderr is unbuffered.
    assert secret not in lenient.edge.log()


@pytest.mark.parametrize(("path", "expect"), [
    ("/huge", "larger than"), ("/forever", "larger than"), ("/trickle", "longer than"), ("/silent", "longer than"),
    ("/loop", "redirects"), ("/to-file", "http"),
])
def test_hostile_bodies_are_cut(lenient: Rig, lenient_key: str, trap: Trap, path: str, expect: str):
    assert lenient.edge is not None
    pid = lenient.edge.popen.pid
    before = rss_kib(pid)
    message = assert_media_400(chat_with_image(lenient, lenient_key, f"http://127.0.0.1:{trap.port}{path}"))
    assert expect in message, message
    if expect == "longer than":  # cut by MEDIA_FETCH_TIMEOUT, not by another, longer timeout
        assert f"longer than {FETCH_TIMEOUT_S}s" in message, message
    grown = (rss_kib(pid) - before) / 1024
    assert grown < 32, f"edge RSS grew by {grown:.0f} MiB fetching {path}"
