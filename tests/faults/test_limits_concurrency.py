"""Token limits hold under concurrency, and cut or abandoned streams are billed (issue #10, item 6).

An attacker with a limited key fires many requests at once, through Envoy, while the backend is
slow (2 s per answer): admission must reserve each request's estimated cost, so requests running
together can never be admitted past the key's quota or tokens-per-minute. The bound asserted is
the one the limiter promises: tokens served never exceed the limit by more than the overrun of
the last admitted request (at most one request's own tokens). A stream the client abandons, or
that the backend cuts before it sends usage, is billed for what was streamed instead of 0. An
optional per-key cap bounds the requests a key may have running at once.
"""
from __future__ import annotations

import httpx
import orjson
import pytest

from tests import harness
from tests.faults.rig import MODEL, Rig, assert_refusal, burst, client, gemini_body, slow_generations, wait_for
from tests.support.raw_http import HeldPost

pytestmark = pytest.mark.timeout(180)

LATENCY_S = 2
# ~400 tokens a request with the simulator's counting: 200 prompt words, an echo of 201 words.
PROMPT = " ".join(f"w{i}" for i in range(200))


@pytest.fixture(scope="module")
def rig(rigs) -> Rig:
    return rigs(label="limits", envoy=True)


@pytest.fixture
def slow_backend(rig: Rig):
    """Every generation of this rig's account waits LATENCY_S before answering."""
    with slow_generations(rig, LATENCY_S):
        yield


def served(rig: Rig, key: str, expect: int) -> list[dict]:
    return rig.usage_rows(rig.key_id(key), expect=expect, timeout=15)


# (path, body, burst size): every generating route reserves the same way.
ROUTES = {
    "chat": ("/v1/chat/completions", {"model": MODEL, "max_tokens": 300,
                                      "messages": [{"role": "user", "content": PROMPT}]}, 100),
    "messages": ("/v1/messages", {"model": MODEL, "max_tokens": 300,
                                  "messages": [{"role": "user", "content": PROMPT}]}, 30),
    "responses": ("/v1/responses", {"model": MODEL, "max_output_tokens": 300, "input": PROMPT}, 30),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_quota_holds_against_a_parallel_burst(rig: Rig, slow_backend, route: str):
    quota = 1000
    key = rig.key("--quota", str(quota))
    path, body, size = ROUTES[route]

    def call(c: httpx.Client, _i: int = 0) -> httpx.Response:
        return c.post(f"{rig.public}{path}", headers={"Authorization": f"Bearer {key}", "x-api-key": key},
                      json=body)

    sent = 0
    ok = 0
    # Waves of parallel requests until the key is refused outright: each wave is one burst.
    for _wave in range(5):
        responses = burst(size, call)
        sent += len(responses)
        for r in responses:
            if r.status_code == 200:
                ok += 1
            else:
                assert_refusal(r)
        if all(r.status_code == 403 for r in responses):
            break
    rows = served(rig, key, sent)
    assert len(rows) == sent
    tokens = [row["total_tokens"] for row in rows if row["status"] == 200]
    assert ok >= 2 and len(tokens) == ok, "the key's quota was not used at all"
    biggest = max(tokens)
    assert 380 <= biggest <= 420, biggest  # ~400-token requests, as intended
    total = sum(row["total_tokens"] for row in rows)
    assert total <= quota + biggest, f"{total} tokens served against a quota of {quota} ({ok} requests)"
    # And it is spent now: a plain request is refused with the quota error.
    with client() as c:
        err = call(c)
    assert err.status_code == 403 and "quota" in err.text, err.text


def test_tpm_holds_against_a_burst(rig: Rig, slow_backend):
    tpm = 30
    key = rig.key("--tpm", str(tpm))

    def call(c: httpx.Client, _i: int) -> httpx.Response:
        return c.post(f"{rig.public}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                      headers={"x-goog-api-key": key}, json=gemini_body("[len=10] go"))

    responses = burst(50, call)
    for r in responses:
        if r.status_code != 200:
            assert_refusal(r)
    ok = [r for r in responses if r.status_code == 200]
    assert ok, "nothing was served"
    rows = served(rig, key, len(responses))
    tokens = [row["total_tokens"] for row in rows if row["status"] == 200]
    total = sum(row["total_tokens"] for row in rows)
    assert total <= tpm + max(tokens), f"{total} tokens served in one minute against --tpm {tpm} ({len(ok)} of 50)"


def _sse_events(r: httpx.Response) -> int:
    return sum(1 for line in r.iter_lines() if line.startswith("data: "))


def test_stream_cut_by_the_backend_is_billed(rig: Rig):
    key = rig.key()
    fid = rig.sim.add_fault(account=rig.tokens[0], op="stream", kind="cut", after_chunks=2, times=1)
    try:
        with client() as c:
            r = c.post(f"{rig.public}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                       headers={"x-goog-api-key": key},
                       json=gemini_body("[len=60] [chunks=6] tell me a long story"))
    finally:
        try:
            rig.sim.remove_fault(fid)
        except RuntimeError:
            pass  # used up
    assert r.status_code == 200 and b"w1 " in r.content  # text was streamed before the cut
    (row,) = served(rig, key, 1)
    assert row["status"] != 200, row
    assert row["completion_tokens"] > 0 and row["total_tokens"] > row["completion_tokens"], row


def test_stream_abandoned_by_the_client_is_billed(rig: Rig):
    key = rig.key()
    body = {"model": MODEL, "stream": True,
            "messages": [{"role": "user", "content": "[len=40] [chunks=8] a slow story"}]}
    # The backend holds the answer after its first chunk until released: the stream is still
    # open when the client hangs up, however slow the machine.
    rig.sim.add_fault(op="stream", kind="hold", after_chunks=1)
    try:
        with client() as c:
            with c.stream("POST", f"{rig.public}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json=body) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data: ") and '"content"' in line and "w1" in line:
                        break  # got some text: hang up
    finally:
        rig.sim.release()
    (row,) = served(rig, key, 1)
    assert row["status"] == 499, row
    assert row["completion_tokens"] > 0 and row["total_tokens"] >= row["completion_tokens"], row


def test_concurrent_request_cap(rig: Rig):
    key = rig.key("--max-concurrent", "2")
    fid = rig.sim.add_fault(account=rig.tokens[0], op="generate", kind="hang", times=-1)
    url = f"{rig.public}/v1beta/models/{MODEL}:generateContent"
    headers = {"x-goog-api-key": key}
    before = len(rig.sim.requests(op="generate", account=rig.tokens[0]))
    holders: list[HeldPost] = []
    try:
        # Held until the extra ones are answered (a client timeout of 6 s let them go on its own
        # clock, on a busy machine before the extra ones were in).
        holders += [HeldPost(url, headers, orjson.dumps(gemini_body("hold"))) for _ in range(2)]
        wait_for(lambda: len(rig.sim.requests(op="generate", account=rig.tokens[0])) >= before + 2,
                 harness.SETTLE_TIMEOUT, "two requests at the backend")
        with client() as c:
            extra = [c.post(url, headers=headers, json=gemini_body("one more")) for _ in range(3)]
        for r in extra:
            assert r.status_code == 429, r.text
            assert "concurrent" in r.json()["error"]["message"]
    finally:
        rig.sim.remove_fault(fid)
        for h in holders:
            h.close()
    # The held ones were cut by their client: once the edge has seen them go, the key runs again.
    with client() as c:
        wait_for(lambda: c.post(url, headers=headers, json=gemini_body("after")).status_code == 200,
                 harness.SETTLE_TIMEOUT, "the key to run again once its held requests were cut")
