"""SIGTERM while streams are in flight: they finish, new requests are refused, exit code 0."""
from __future__ import annotations

import signal
import threading

import httpx
import orjson
import pytest

from tests import harness
from tests.faults.rig import MODEL, Rig, chat_body, client, gemini_body, sse_data, wait_for

pytestmark = pytest.mark.timeout(60)

# Four chunks. Each test has the simulator hold the answer after its first chunk (its "hold"
# fault) until the signal has done its work, so the signal always meets the stream in flight,
# however slow the machine; then it releases the rest and the stream must finish whole.
SLOW = "[chunks=4] one two three four five six seven eight"


def hold_streams(rig: Rig, n: int) -> None:
    rig.sim.add_fault(op="stream", kind="hold", after_chunks=1, times=n)


class Reader(threading.Thread):
    """Reads one streamed response to its end in the background."""

    def __init__(self, **request) -> None:
        super().__init__(daemon=True)
        self.request = request
        self.first = threading.Event()
        self.status = 0
        self.raw = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with client() as c, c.stream("POST", **self.request) as r:
                self.status = r.status_code
                pieces = []
                for piece in r.iter_raw():
                    pieces.append(piece)
                    self.first.set()
                self.raw = b"".join(pieces)
        except BaseException as exc:
            self.error = exc
        finally:
            self.first.set()


def openai_text(raw: bytes) -> str:
    events = sse_data(raw)
    assert events[-1] == b"[DONE]", raw[-300:]
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert not any("error" in ch for ch in chunks), raw[-300:]
    return "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch.get("choices"))


def gemini_sse_text(raw: bytes) -> str:
    events = [orjson.loads(e) for e in sse_data(raw)]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP", raw[-300:]
    return "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"]["parts"])


def test_upstream_sigterm_drains_in_flight_and_refuses_new(rigs, sim):
    rig: Rig = rigs(label="term-up", upstream_env={"DRAIN_SECONDS": "10"})
    key = rig.key()
    assert rig.upstream is not None
    hold_streams(rig, 1)
    reader = Reader(url=f"{rig.api}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                    headers={"x-goog-api-key": key}, json=gemini_body(SLOW))
    reader.start()
    assert reader.first.wait(10) and reader.error is None
    rig.upstream.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down" in rig.upstream.log(), harness.SETTLE_TIMEOUT, "the upstream to start draining")

    with client(timeout=10) as c:
        # New calls are refused while the stream drains: 503 in each API's format.
        r = c.post(f"{rig.api}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key},
                   json=gemini_body("too late"))
        assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE", r.text
        r = c.post(f"{rig.api}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json=chat_body("too late", stream=True))
        assert r.status_code == 503 and r.json()["error"]["message"], r.text
    assert rig.upstream.alive(), "the upstream exited before its in-flight stream finished"
    assert rig.sim.release() == 1, "the stream was no longer held when the drain was checked"

    reader.join(15)
    assert reader.error is None and reader.status == 200
    assert gemini_sse_text(reader.raw) == f"echo: {SLOW}"
    assert rig.upstream.popen.wait(15) == 0
    assert not rig.sim.requests(op="generate"), "a refused call reached the backend"


def test_sigterm_on_edge_and_upstream_together(rigs, sim):
    """What `docker compose down` or a rolling update does: both services get SIGTERM at once."""
    rig: Rig = rigs(label="term-both", upstream_env={"DRAIN_SECONDS": "10"},
                    edge_env={"SHUTDOWN_GRACE_SECONDS": "10"})
    key = rig.key()
    kid = rig.key_id(key)
    assert rig.upstream is not None and rig.edge is not None
    hold_streams(rig, 2)
    readers = [
        Reader(url=f"{rig.api}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
               json=chat_body(SLOW, stream=True)),
        Reader(url=f"{rig.api}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
               headers={"x-goog-api-key": key}, json=gemini_body(SLOW)),
    ]
    for r in readers:
        r.start()
    for r in readers:
        assert r.first.wait(10) and r.error is None
    rig.edge.popen.send_signal(signal.SIGTERM)
    rig.upstream.popen.send_signal(signal.SIGTERM)

    # The edge stops accepting at once: a new client is refused, or (if it got in before the
    # listener closed) answered with an error, never served. uvicorn logs "Shutting down" in the
    # step that closes its listener; a fixed 0.2 s pause let a busy edge still be serving.
    wait_for(lambda: "Shutting down" in rig.edge.log(), harness.SETTLE_TIMEOUT, "the edge to start its shutdown")
    with client(timeout=5) as c:
        try:
            r = c.post(f"{rig.api}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key},
                       json=gemini_body("too late"))
        except httpx.TransportError:
            pass
        else:
            assert r.status_code == 503, r.text
    assert rig.edge.alive() and rig.upstream.alive(), "a service exited before its in-flight streams finished"
    assert rig.sim.release() == 2, "the streams were no longer held when the shutdown was checked"

    for r in readers:
        r.join(15)
        assert r.error is None and r.status == 200
    assert openai_text(readers[0].raw) == f"echo: {SLOW}"
    assert gemini_sse_text(readers[1].raw) == f"echo: {SLOW}"
    assert rig.edge.popen.wait(15) == 0
    assert rig.upstream.popen.wait(15) == 0
    # The edge flushed both streams' ledger rows before it exited.
    rows = rig.usage_rows(kid)
    assert sorted((r["api"], r["status"]) for r in rows) == [("gemini", 200), ("openai", 200)]
    assert all(r["total_tokens"] > 0 for r in rows)
