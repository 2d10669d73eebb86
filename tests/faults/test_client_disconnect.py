"""A client that goes away cancels the backend call: the simulator records it `cancelled`.

Two moments are covered for every route: after the first chunk reached the client (the edge
is writing a stream), and before any byte of the answer (the edge is still waiting on the
upstream: a unary call, or a stream whose first chunk has not come). In both, a backend call
left running would hold a backend connection and a credential's quota for nobody.
"""
from __future__ import annotations

import httpx
import orjson
import pytest

from tests import harness
from tests.faults.rig import MODEL, Rig, chat_body, client, gemini_body, wait_for

pytestmark = pytest.mark.timeout(60)

# A hang guard: the backend call's end is awaited, then what ended it is checked (a call left
# running answers in full, cancelled=False, or hangs past this).
CANCEL_BOUND_S = 30.0


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    # A short drain: should a call outlive its client (the bug these tests catch), stopping the
    # edge must not wait the default 30 s for it.
    return rigs(label="disc", edge_env={"SHUTDOWN_GRACE_SECONDS": "2"})


@pytest.fixture(scope="module")
def key(rig: Rig) -> str:
    return rig.key()


def request_for(rig: Rig, key: str, route: str, text: str) -> dict:
    if route.startswith("openai"):
        return dict(method="POST", url=f"{rig.api}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                    json=chat_body(text, stream=route == "openai-stream"))
    method = {"gemini-unary": "generateContent", "gemini-sse": "streamGenerateContent?alt=sse",
              "gemini-array": "streamGenerateContent"}[route]
    return dict(method="POST", url=f"{rig.api}/v1beta/models/{MODEL}:{method}", headers={"x-goog-api-key": key},
                json=gemini_body(text))


def backend_entry(rig: Rig, marker: str, op: str) -> dict:
    def find():
        hits = [q for q in rig.sim.requests(op=op) if marker in orjson.dumps(q["body"]).decode()]
        return hits[-1] if hits else None
    return wait_for(find, harness.SETTLE_TIMEOUT, f"the backend to receive {marker!r}")


def assert_cancelled(rig: Rig, marker: str, op: str) -> None:
    def ended() -> dict | None:
        entry = backend_entry(rig, marker, op)
        return entry if entry["finished"] is not None else None

    entry = wait_for(ended, CANCEL_BOUND_S, f"the backend call for {marker!r} to end after its client left (hung)")
    assert entry["cancelled"], f"the backend call for {marker!r} ran to its end after the client left: {entry}"


@pytest.mark.parametrize("route", ["openai-stream", "gemini-sse", "gemini-array"])
def test_disconnect_after_first_chunk(rig: Rig, key: str, sim, route: str):
    marker = f"left-{route}"
    text = f"[chunks=5] {marker} a b c d e"
    # The backend holds the rest of the answer after its first chunk until released, so its call
    # can only end by being cancelled, however long the cancellation takes to reach it.
    sim.add_fault(account=rig.tokens[0], op="stream", kind="hold", after_chunks=1)
    try:
        with client() as c:
            with c.stream(**request_for(rig, key, route, text)) as r:
                assert r.status_code == 200
                next(r.iter_raw())  # the first chunk arrived; now hang up
        assert_cancelled(rig, marker, "stream")
    finally:
        sim.release()
    kid = rig.key_id(key)
    rows = wait_for(lambda: [row for row in rig.usage_rows(kid) if row["status"] == 499 and row["op"] == "stream"
                             and row["api"] == route.split("-")[0]], harness.SETTLE_TIMEOUT, "a 499 ledger row")
    assert rows


@pytest.mark.parametrize("route", ["gemini-unary", "openai-unary", "gemini-sse", "gemini-array", "openai-stream"])
def test_disconnect_before_any_byte(rig: Rig, key: str, sim, route: str):
    """The backend never answers; the client gives up after half a second."""
    marker = f"waiting-{route}"
    op = "stream" if route.endswith(("stream", "sse", "array")) else "generate"
    sim.add_fault(account=rig.tokens[0], op=op, kind="hang", times=1)
    req = request_for(rig, key, route, marker)
    with httpx.Client(timeout=httpx.Timeout(30, read=0.5), trust_env=False) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.request(**req)
    assert_cancelled(rig, marker, op)
