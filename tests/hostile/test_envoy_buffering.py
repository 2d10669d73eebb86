"""Envoy must not hold request bodies for clients it has not authenticated (issue #10, item 2).

Attackers without a key open many requests that announce a large body and never finish it,
over HTTP/1.1 (one connection each) and over h2c (many streams on one connection). Each must
get its 401 while its body is still incomplete, and Envoy's memory must stay flat: it holds no
body (there is no buffer filter), only small flow-control windows.
"""
from __future__ import annotations

import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import orjson
import pytest

from tests import harness
from tests.faults.rig import Rig
from tests.support.raw_http import read_head

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024
PATH = "/gemini_cli/v1/chat/completions"
# Under the edge's 32 MiB limit: a body the gateway would accept from a key holder.
DECLARED = 30 * MIB
# What each attacker tries to push before giving up (the old Envoy took all of it).
PUSH_CAP = 8 * MIB
ANSWER_WAIT = 20.0
# Envoy's RSS may grow by this much at most while the attack runs.
RSS_BOUND_MIB = 32


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="envoybuf", envoy=True)


class PeakRss:
    """Envoy's peak RSS while the block runs: its VmHWM, reset to the current RSS through
    clear_refs on entry (samples every 50 ms could miss a peak between two of them)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = 0

    def _status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.pid}")

    def __enter__(self) -> "PeakRss":
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.before = self._status_kib("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.peak = self._status_kib("VmHWM")

    @property
    def grown_mib(self) -> float:
        return (self.peak - self.before) / 1024


def slow_keyless_post(port: int, path: str = PATH) -> tuple[bytes, int]:
    """POST without credentials announcing DECLARED bytes; push body bytes as fast as the server
    takes them (at most PUSH_CAP, never the whole body) until an answer arrives. Returns (what
    was received, body bytes sent)."""
    head = (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DECLARED}\r\n\r\n").encode()
    piece = b" " * 65536
    sent, got = 0, b""
    with socket.create_connection((harness.LOOPBACK, port), timeout=10) as s:
        s.sendall(head)
        s.setblocking(False)
        deadline = time.monotonic() + ANSWER_WAIT
        while time.monotonic() < deadline:
            writable = [s] if sent < PUSH_CAP else []
            readable, can_write, _ = select.select([s], writable, [], 0.2)
            if readable:
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                got += data
                if b"\r\n\r\n" in got:
                    head_part, _, body = got.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":", 1)[1]) for line in head_part.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), None)
                    if length is not None and len(body) >= length:
                        break
            elif can_write:
                try:
                    sent += s.send(piece)
                except BlockingIOError:
                    pass
                except OSError:  # closed after the answer: read what is left
                    writable = []
                    s.settimeout(2)
                    try:
                        got += s.recv(65536)
                    except OSError:
                        pass
                    break
    return got, sent


def test_keyless_slow_http1_bodies_get_401_before_the_body_and_envoy_holds_nothing(rig: Rig):
    assert rig.envoy is not None
    clients = 20
    with PeakRss(rig.envoy.popen.pid) as rss, ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: slow_keyless_post(rig.envoy.port), range(clients)))
    for got, sent in results:
        # Answered although its body is far from complete: the key was checked on the headers.
        assert got.startswith(b"HTTP/1.1 401"), (got[:200], sent)
        assert sent < DECLARED
        body = orjson.loads(got.partition(b"\r\n\r\n")[2])
        assert body["error"]["code"] == "missing_api_key"
    assert rss.grown_mib < RSS_BOUND_MIB, f"Envoy RSS grew by {rss.grown_mib:.0f} MiB under {clients} slow bodies"


@pytest.mark.parametrize("path", [
    "/gemini_cli/v1/responses", "/gemini_cli/v1/messages", "/gemini_cli/v1/messages/count_tokens",
    "/gemini_cli/v1/embeddings", "/gemini_cli/v1beta/models/gemini-2.5-pro:generateContent",
    "/gemini_cli/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
    "/gemini_cli/v1beta/models/gemini-2.5-pro:countTokens",
    "/gemini_cli/v1beta/models/gemini-embedding-001:embedContent",
    # The admin API checks its token on the headers too.
    "/gemini_cli/admin/api/keys", "/gemini_cli/admin/api/credentials", "/gemini_cli/admin/api/keys/1/revoke",
])
def test_every_post_route_refuses_a_keyless_body_on_its_headers(rig: Rig, path: str):
    assert rig.envoy is not None
    got, sent = slow_keyless_post(rig.envoy.port, path)
    assert got.startswith(b"HTTP/1.1 401"), (got[:200], sent)
    assert sent < DECLARED


def test_keyless_h2c_streams_get_401_before_the_body_and_envoy_holds_nothing(rig: Rig):
    assert rig.envoy is not None
    streams = 25
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    statuses: dict[int, str] = {}
    sent: dict[int, int] = {}
    settings_seen = False
    with PeakRss(rig.envoy.popen.pid) as rss, \
            socket.create_connection((harness.LOOPBACK, rig.envoy.port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())

        def pump(timeout: float) -> None:
            nonlocal settings_seen
            readable, _, _ = select.select([sock], [], [], timeout)
            if not readable:
                return
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Envoy closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    settings_seen = True
                elif isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = dict(event.headers)[":status"]
            sock.sendall(conn.data_to_send())

        deadline = time.monotonic() + 10
        while not settings_seen and time.monotonic() < deadline:
            pump(0.2)
        # Envoy caps concurrent streams per connection.
        assert conn.remote_settings.max_concurrent_streams <= 100

        for _ in range(streams):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "gw"),
                                    (":path", PATH), ("content-type", "application/json"),
                                    ("content-length", str(DECLARED))])
            sent[sid] = 0
        sock.sendall(conn.data_to_send())

        deadline = time.monotonic() + ANSWER_WAIT
        while len(statuses) < streams and time.monotonic() < deadline:
            for sid in sent:
                if sid in statuses or sent[sid] >= PUSH_CAP:
                    continue
                try:
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                               PUSH_CAP - sent[sid])
                    if room > 0:
                        conn.send_data(sid, b" " * room)
                        sent[sid] += room
                except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                    continue
            sock.sendall(conn.data_to_send())
            pump(0.05)
    assert statuses == {sid: "401" for sid in sent}, (statuses, sent)
    assert all(n < DECLARED for n in sent.values())
    assert rss.grown_mib < RSS_BOUND_MIB, f"Envoy RSS grew by {rss.grown_mib:.0f} MiB under {streams} h2 streams"


def test_a_key_holder_gets_the_same_bound(rig: Rig):
    """A valid key does not buy buffering at Envoy either: the body streams to the edge, which
    applies MAX_BODY_BYTES to what it reads (a chunked 40 MiB body is a 413)."""
    assert rig.envoy is not None
    key = rig.key()
    head = (f"POST {PATH} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    piece = b" " * (256 * 1024)
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
    with PeakRss(rig.envoy.popen.pid) as rss, socket.create_connection((harness.LOOPBACK, rig.envoy.port)) as s:
        s.sendall(head)
        s.settimeout(10)
        try:
            for _ in range(40 * MIB // len(piece)):
                s.sendall(frame)
        except OSError:
            pass
        got = read_head(s)
    assert got.startswith(b"HTTP/1.1 413"), got[:200]
    assert rss.grown_mib < RSS_BOUND_MIB


def test_a_body_that_never_completes_is_cut_at_the_deadline(rig: Rig):
    """A key holder's request whose body stops halfway is answered 408 once
    ENVOY_BODY_TIMEOUT_SECONDS passed (2 s here), instead of holding a slot for the 10-minute
    idle timeout."""
    assert rig.edge is not None and rig.upstream is not None
    key = rig.key()
    proxy = harness.start_envoy(rig.logs, rig.edge.port, rig.upstream.port, name="envoy-deadline",
                                body_timeout_seconds=2)
    try:
        head = (f"POST {PATH} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {key}\r\nContent-Length: {MIB}\r\n\r\n").encode()
        with socket.create_connection((harness.LOOPBACK, proxy.port), timeout=30) as s:
            s.sendall(head + b'{"model": "' + b"x" * 1000)
            got = read_head(s)
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
    finally:
        proxy.stop()
