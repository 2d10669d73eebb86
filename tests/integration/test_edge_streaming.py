"""Streams through the real stack, the usage ledger, and graceful shutdown.

"Incremental" is shown without timing: the simulator holds the rest of the answer back (its
"hold" fault) until the client has the first chunk, then the test releases it. A gateway that
buffered would leave the client waiting until its read timeout (the hang guard).
"""
from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from typing import Iterator

import httpx
import orjson
import pytest

from tests import harness
from tests.simulator.control import SimControl
from tests.stack_fixtures import EDGE_ENV, Stack, stack  # noqa: F401  (fixture)

MODEL = "gemini-2.5-pro"
SLOW = "[chunks=3] [delay=400] one two three four five six"  # 2 pauses of 0.4 s after the first chunk


def body(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    return stack.key(name="streaming")


def pieces_while_held(http: httpx.Client, stack: Stack, method: str, url: str,
                      **kw) -> tuple[httpx.Response, list[bytes]]:
    """Body pieces as they arrive on the socket. The simulator holds the answer back after its
    first chunk; it is released once the client has that chunk's text, and the release must
    find it still held (the chunk came through on its own, not with the rest)."""
    pieces: list[bytes] = []
    released = None
    with SimControl(stack.simulator.url) as sim:
        sim.add_fault(account=stack.refresh_token, op="stream", kind="hold", after_chunks=1)
        try:
            with http.stream(method, url, **kw) as r:
                for piece in r.iter_raw():
                    pieces.append(piece)
                    if released is None and b"echo" in b"".join(pieces):
                        released = sim.release()
        except httpx.ReadTimeout:
            pytest.fail(f"hung: no chunk reached the client while the backend held the rest back ({pieces!r})")
    assert released == 1, f"the first chunk reached the client only after the backend's hold ended: {released}"
    return r, pieces


def sse_events(raw: bytes) -> list[bytes]:
    return [line[len(b"data: "):] for line in raw.replace(b"\r\n", b"\n").split(b"\n") if line.startswith(b"data: ")]


# --- chunk by chunk ---------------------------------------------------------------------------

def test_native_array_stream_is_incremental(http, stack, key):
    r, pieces = pieces_while_held(http, stack, "POST", f"{stack.base}/v1beta/models/{MODEL}:streamGenerateContent",
                                  headers={"X-Goog-Api-Key": key}, json=body(SLOW))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    raw = b"".join(pieces)
    chunks = orjson.loads(raw)
    assert len(chunks) == 3
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == f"echo: {SLOW}"
    assert pieces[0].startswith(b"[{") and b"finishReason" not in pieces[0]


def test_native_sse_stream_is_incremental(http, stack, key):
    r, pieces = pieces_while_held(http, stack, "POST", f"{stack.base}/v1beta/models/{MODEL}:streamGenerateContent",
                                  params={"alt": "sse"}, headers={"X-Goog-Api-Key": key}, json=body(SLOW))
    assert r.headers["content-type"].startswith("text/event-stream")
    raw = b"".join(pieces)
    assert raw.startswith(b"data: {") and raw.endswith(b"\r\n\r\n")
    events = [orjson.loads(e) for e in sse_events(raw)]
    assert len(events) == 3 and events[-1]["candidates"][0]["finishReason"] == "STOP"


def test_openai_stream_is_incremental(http, stack, key):
    r, pieces = pieces_while_held(http, stack, "POST", f"{stack.base}/v1/chat/completions",
                                  headers={"Authorization": f"Bearer {key}"},
                                  json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": SLOW}]})
    raw = b"".join(pieces)
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == f"echo: {SLOW}"


KEEPALIVE = b": keep-alive\n\n"


def test_openai_keepalive_during_silence(http, stack, key):
    # SSE_KEEPALIVE_SECONDS is 0.5 in this stack. The backend holds its answer after the first
    # chunk until the client has seen a keep-alive comment after that chunk; only then is the
    # rest released, so the comment can only have come from the silence (no race of timings).
    text = "[chunks=3] one two three four five six"
    pieces: list[bytes] = []
    released = None
    with SimControl(stack.simulator.url) as sim:
        sim.add_fault(account=stack.refresh_token, op="stream", kind="hold", after_chunks=1)
        try:
            with http.stream("POST", f"{stack.base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                             json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": text}]}) as r:
                for piece in r.iter_raw():
                    pieces.append(piece)
                    raw = b"".join(pieces)
                    if released is None and b"echo" in raw and KEEPALIVE in raw[raw.index(b"echo"):]:
                        released = sim.release()
        except httpx.ReadTimeout:
            pytest.fail(f"hung: no keep-alive comment reached the client while the backend held the answer "
                        f"back ({b''.join(pieces)!r})")
        finally:
            if released is None:
                sim.release()  # let the held answer go whatever failed here
    assert r.status_code == 200
    assert released is not None, f"the answer ended with no keep-alive comment after its first chunk: {pieces!r}"
    assert released == 1, f"the keep-alive came only after the backend's hold ended: {released}"
    raw = b"".join(pieces).replace(b"\r\n", b"\n")
    # Keep-alives are whole comment lines between events, never inside one.
    assert all(line.startswith((b"data: ", b": keep-alive")) for line in raw.split(b"\n") if line), raw
    events = sse_events(raw)
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == f"echo: {text}"


# --- errors in streams ---------------------------------------------------------------------------

def test_error_before_first_chunk_keeps_http_status(http, stack, key, sim):
    sim.add_fault(account=stack.refresh_token, op="stream", kind="400", model=MODEL, times=2)
    r = http.post(f"{stack.base}/v1beta/models/{MODEL}:streamGenerateContent", params={"alt": "sse"},
                  headers={"X-Goog-Api-Key": key}, json=body("x"))
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = http.post(f"{stack.base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                  json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("form", ["array", "sse", "openai"])
def test_error_mid_stream(http, stack, key, sim, form):
    sim.add_fault(account=stack.refresh_token, op="stream", kind="cut", model=MODEL, after_chunks=1, times=1)
    text = "[chunks=4] a b c d e f g h"
    if form == "openai":
        r = http.post(f"{stack.base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": text}]})
        events = sse_events(r.content)
        assert r.status_code == 200 and events[-1] == b"[DONE]"
        last = orjson.loads(events[-2])
        assert last["error"]["message"]
        assert any((orjson.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") for e in events[:-2])
        return
    params = {"alt": "sse"} if form == "sse" else None
    r = http.post(f"{stack.base}/v1beta/models/{MODEL}:streamGenerateContent", params=params,
                  headers={"X-Goog-Api-Key": key}, json=body(text))
    assert r.status_code == 200
    items = [orjson.loads(e) for e in sse_events(r.content)] if form == "sse" else orjson.loads(r.content)
    assert "candidates" in items[0]  # the first chunk made it
    err = items[-1]["error"]
    assert err["code"] >= 500 and err["status"] == "UNAVAILABLE" and err["message"]


# --- the ledger ------------------------------------------------------------------------------

def test_usage_rows_for_every_kind_of_call(http, stack, sim):
    k = stack.key(name="ledger")
    kid = stack.key_id(k)
    g = {"X-Goog-Api-Key": k}
    o = {"Authorization": f"Bearer {k}"}
    base = f"{stack.base}/v1beta/models/{MODEL}"
    assert http.post(f"{base}:generateContent", headers=g, json=body("one two")).status_code == 200
    assert http.post(f"{base}:streamGenerateContent", headers=g, json=body("one two three")).status_code == 200
    assert http.post(f"{base}:streamGenerateContent?alt=sse", headers=g, json=body("a b c d")).status_code == 200
    assert http.post(f"{base}:countTokens", headers=g, json=body("a b")).status_code == 200
    r = http.post(f"{stack.base}/v1/chat/completions", headers=o,
                  json={"model": f"{MODEL}-thinking", "messages": [{"role": "user", "content": "think hard"}]})
    assert r.status_code == 200
    oai_usage = r.json()["usage"]
    r = http.post(f"{stack.base}/v1/chat/completions", headers=o,
                  json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x y"}]})
    assert r.status_code == 200
    assert http.post(f"{stack.base}/v1beta/models/no-such:generateContent", headers=g, json=body("z")).status_code == 404

    rows = stack.ledger(kid, expect=7)
    assert [(r["api"], r["op"], r["status"]) for r in rows] == [
        ("gemini", "generate", 200), ("gemini", "stream", 200), ("gemini", "stream", 200), ("gemini", "count", 200),
        ("openai", "generate", 200), ("openai", "stream", 200), ("gemini", "generate", 404)]
    # Tokens are the backend's usage (the simulator counts words), for streams too.
    assert (rows[0]["prompt_tokens"], rows[0]["completion_tokens"], rows[0]["total_tokens"]) == (2, 3, 5)
    assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"]) == (3, 4)
    assert (rows[2]["prompt_tokens"], rows[2]["completion_tokens"]) == (4, 5)
    assert rows[3]["total_tokens"] == 0
    assert rows[4]["thought_tokens"] > 0 and rows[4]["model"] == MODEL
    assert rows[4]["total_tokens"] == oai_usage["total_tokens"]
    assert oai_usage["completion_tokens_details"]["reasoning_tokens"] == rows[4]["thought_tokens"]
    assert rows[5]["completion_tokens"] == 3
    assert rows[6]["total_tokens"] == 0 and rows[6]["model"] == "no-such"
    assert all(r["latency_ms"] > 0 and r["created_at"] > 0 and r["request_id"] for r in rows)
    table = stack.cli("usage", k).stdout
    assert "ledger" in table and MODEL in table


def test_client_disconnect_is_recorded_and_cancels_upstream(stack, sim):
    k = stack.key(name="gone")
    kid = stack.key_id(k)
    prompt = "[chunks=5] gone a b c d e"
    # The backend holds the rest of the answer after its first chunk until released, so its call
    # can only end by being cancelled, however long a busy machine takes to pass that on.
    sim.add_fault(account=stack.refresh_token, op="stream", kind="hold", after_chunks=1)
    try:
        with httpx.Client(timeout=30, trust_env=False) as c:
            with c.stream("POST", f"{stack.base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                          headers={"X-Goog-Api-Key": k}, json=body(prompt)) as r:
                next(r.iter_raw())  # the first chunk, then hang up
        (row,) = stack.ledger(kid, expect=1)
        assert row["status"] == 499
        deadline = time.monotonic() + harness.SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            streams = [q for q in sim.requests(op="stream") if prompt in orjson.dumps(q["body"]).decode()]
            if streams and streams[-1]["finished"] is not None:
                break
            time.sleep(0.05)
        assert streams and streams[-1]["finished"] is not None, \
            "hung: the backend call was still open long after the client left (the cancellation never reached it)"
        assert streams[-1]["cancelled"], streams[-1]
    finally:
        sim.release()


def test_concurrent_requests_lose_no_rows(stack):
    k = stack.key(name="burst")
    kid = stack.key_id(k)
    n = 200

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(timeout=60, trust_env=False, limits=limits) as c:
            async def one(i: int) -> int:
                kind = i % 4
                if kind == 3:
                    r = await c.post(f"{stack.base}/v1/chat/completions", headers={"Authorization": f"Bearer {k}"},
                                     json={"model": MODEL, "stream": i % 8 == 3,
                                           "messages": [{"role": "user", "content": f"n{i}"}]})
                else:
                    method = ("generateContent", "streamGenerateContent", "streamGenerateContent?alt=sse")[kind]
                    r = await c.post(f"{stack.base}/v1beta/models/{MODEL}:{method}", headers={"X-Goog-Api-Key": k},
                                     json=body(f"n{i} w"))
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(n)))

    statuses = asyncio.run(burst())
    assert statuses == [200] * n
    rows = stack.ledger(kid, expect=n)
    assert len(rows) == n
    assert all(r["status"] == 200 for r in rows)
    # Each native call: prompt "nI w" (2 words) + answer "echo: nI w" (3 words).
    native = [r for r in rows if r["api"] == "gemini"]
    assert len(native) == 150 and all(r["total_tokens"] == 5 for r in native)
    with sqlite3.connect(stack.db_path) as conn:
        used = conn.execute("SELECT tokens_used FROM keys WHERE id = ?", (kid,)).fetchone()[0]
    assert used == sum(r["total_tokens"] for r in rows)


# --- shutdown ----------------------------------------------------------------------------------

def test_graceful_shutdown_lets_streams_finish(stack, tmp_path):
    env = {**EDGE_ENV, "SHUTDOWN_GRACE_SECONDS": "10"}
    edge = harness.start_edge(tmp_path / "logs", stack.upstream.addr, tmp_path / "data", env, name="edge-drain")
    try:
        k = harness.create_key(edge, "--name", "drain")
        got: dict = {}

        def client() -> None:
            with httpx.Client(timeout=30, trust_env=False) as c:
                with c.stream("POST", f"{edge.url}/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent",
                              headers={"X-Goog-Api-Key": k}, json=body("[chunks=4] [delay=300] a b c d e f")) as r:  # noqa: E501
                    got["first"] = threading.Event()
                    pieces = []
                    for piece in r.iter_raw():
                        pieces.append(piece)
                        got["first"].set()
                    got["raw"] = b"".join(pieces)

        t = threading.Thread(target=client)
        t.start()
        deadline = time.monotonic() + 10
        while "first" not in got or not got["first"].is_set():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        edge.popen.send_signal(signal.SIGTERM)
        t.join(15)
        assert edge.popen.wait(15) == 0
        chunks = orjson.loads(got["raw"])  # complete: all chunks and the closing bracket
        assert len(chunks) == 4 and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
        with sqlite3.connect(edge.extra["env"]["LICENSE_DB"]) as conn:
            rows = conn.execute("SELECT status, total_tokens FROM usage").fetchall()
        prompt = "[chunks=4] [delay=300] a b c d e f"
        # The row was flushed before the process exited: prompt words + "echo:" + prompt words.
        assert rows == [(200, 2 * len(prompt.split()) + 1)]
    finally:
        edge.stop()
