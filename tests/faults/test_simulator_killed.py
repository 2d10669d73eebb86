"""The backend dies mid-stream: every client stream ends, well-formed, with an error, at once.

A dedicated simulator (this test kills it) serves three slow streams at the same time, one per
streaming format. When each has delivered its first chunk the simulator is SIGKILLed; then
- OpenAI SSE ends with an error event and `data: [DONE]`,
- Gemini SSE ends with an error event,
- Gemini's JSON-array stream ends with an error element and a closing bracket,
each because the connection was cut (the upstream logs STREAM_CUT, not a timeout), and every
stream's ledger row is written (its cleanup ran). No elapsed time is asserted: a stream left
waiting would not end before the hang guard.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from tests import harness
from tests.faults.rig import MODEL, Rig, chat_body, client, gemini_body, sse_data

pytestmark = pytest.mark.timeout(90)

# Four chunks; the simulator holds each answer after its first (its "hold" fault, never
# released), so every stream is still open when the simulator is killed, however slow the machine.
SLOW = "[chunks=4] one two three four five six seven eight"
HANG_GUARD_S = 30.0  # a stream not ended by then hung (its backend was gone)


@pytest.fixture
def doomed(tmp_path: Path):
    proc = harness.start_simulator(tmp_path / "logs")
    yield proc
    proc.kill()


def test_streams_end_with_an_error_when_the_backend_dies(rigs, doomed: harness.Proc):
    rig: Rig = rigs(simulator_proc=doomed, label="killed")
    key = rig.key()
    kid = rig.key_id(key)
    rig.sim.add_fault(op="stream", kind="hold", after_chunks=1, times=3)
    forms = {
        "openai": dict(url=f"{rig.api}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json=chat_body(SLOW, stream=True)),
        "sse": dict(url=f"{rig.api}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                    headers={"x-goog-api-key": key}, json=gemini_body(SLOW)),
        "array": dict(url=f"{rig.api}/v1beta/models/{MODEL}:streamGenerateContent",
                      headers={"x-goog-api-key": key}, json=gemini_body(SLOW)),
    }
    first = {name: threading.Event() for name in forms}
    result: dict[str, tuple[int, bytes]] = {}
    errors: dict[str, BaseException] = {}

    def consume(name: str) -> None:
        try:
            with client() as c, c.stream("POST", **forms[name]) as r:
                pieces = []
                for piece in r.iter_raw():
                    pieces.append(piece)
                    first[name].set()
                result[name] = (r.status_code, b"".join(pieces))
        except BaseException as exc:  # reported below; an exception here is a failure too
            errors[name] = exc
            first[name].set()

    threads = [threading.Thread(target=consume, args=(name,), daemon=True) for name in forms]
    for t in threads:
        t.start()
    for name, ev in first.items():
        assert ev.wait(15), f"{name}: no first chunk"
    doomed.kill()
    guard = time.monotonic() + HANG_GUARD_S
    for t in threads:
        t.join(max(0.0, guard - time.monotonic()))
    assert not errors, f"client side failures: {errors!r}"
    assert set(result) == set(forms), f"hung: a stream did not end after the kill ({sorted(result)} did)"
    for name, (status, _raw) in result.items():
        assert status == 200, name

    # OpenAI: content, then an error event, then [DONE].
    events = sse_data(result["openai"][1])
    assert events[-1] == b"[DONE]"
    err = orjson.loads(events[-2])["error"]
    assert err["message"] and err["type"]
    assert any((orjson.loads(e).get("choices") or [{}])[0].get("delta", {}).get("content") for e in events[:-2])

    # Gemini SSE: the first chunk, then one error event.
    events = [orjson.loads(e) for e in sse_data(result["sse"][1])]
    assert "candidates" in events[0]
    assert events[-1]["error"]["code"] == 503 and events[-1]["error"]["status"] == "UNAVAILABLE"

    # Gemini array: a complete JSON document whose last element is the error.
    items = orjson.loads(result["array"][1])
    assert isinstance(items, list) and "candidates" in items[0]
    assert items[-1]["error"]["code"] == 503 and items[-1]["error"]["status"] == "UNAVAILABLE"

    # Each stream's cleanup ran: one ledger row per stream, recording the failure.
    rows = rig.usage_rows(kid, expect=3)
    assert sorted(r["status"] for r in rows) == [503, 503, 503]
    # And the upstream finished every call (none is left waiting on a dead socket).
    assert rig.upstream is not None
    assert log_lines(rig.upstream, "stream=True", "outcome=UNAVAILABLE/STREAM_CUT", count=3) == 3

    # With the backend gone, a new request fails with 503 in its API's format (the client's 30 s
    # timeout is the hang guard).
    with client() as c:
        r = c.post(forms["sse"]["url"].split(":stream")[0] + ":generateContent", headers={"x-goog-api-key": key},
                   json=gemini_body("anyone there?"))
        assert r.status_code == 503 and r.json()["error"]["status"] == "UNAVAILABLE", r.text
        r = c.post(forms["openai"]["url"], headers=forms["openai"]["headers"], json=chat_body("anyone?"))
        assert r.status_code == 503 and r.json()["error"]["type"], r.text


def log_lines(proc: harness.Proc, *needles: str, count: int, timeout: float = harness.SETTLE_TIMEOUT) -> int:
    """How many log lines of `proc` contain all `needles`, waiting up to `timeout` for `count`."""
    deadline = time.monotonic() + timeout
    while True:
        n = sum(all(s in line for s in needles) for line in proc.log().splitlines())
        if n >= count or time.monotonic() > deadline:
            return n
        time.sleep(0.05)
