"""Events that reach the gateway together leave it together (one gRPC message, one write), and
a client cannot tell: through Envoy → edge → upstream every API keeps one event per backend
event, in order, with the same bytes, and a lone first event is never held back for company.

The simulator's `[burst]` sends every event of a stream in one TCP write; the reference answer
spaces them (`[delay=MS]`) so that each arrives alone. Both answer the same words (`[len=N]`).
"""
from __future__ import annotations

import asyncio
from typing import Iterator

import grpc
import httpx
import orjson
import pytest

from tests import harness
from tests.stack_fixtures import Stack, pool_stack, stack  # noqa: F401  (fixtures)

MODEL = "gemini-2.5-pro"
EVENTS = 20
BURST = f"[len={2 * EVENTS}] [chunks={EVENTS}] [burst]"
SPACED = f"[len={2 * EVENTS}] [chunks={EVENTS}] [delay=5]"
WORDS = " ".join(f"w{i}" for i in range(1, 2 * EVENTS + 1))
# Per-answer values: differ between two answers, and only they.
VOLATILE = ("responseId", "createTime")


def body(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(60, read=30), trust_env=False) as c:
        yield c


def sse_data(raw: bytes) -> list[bytes]:
    """The data of each SSE event; every non-blank line must be a `data:` or `event:` line."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        lines = block.split(b"\n")
        assert all(line.startswith((b"data: ", b"event: ")) for line in lines), block
        data = [line[len(b"data: "):] for line in lines if line.startswith(b"data: ")]
        assert len(data) == 1, block  # one JSON object per event, never two joined
        out.append(data[0])
    return out


def without_volatile(event: dict) -> dict:
    return {k: v for k, v in event.items() if k not in VOLATILE}


def text_of(event: dict) -> str:
    return "".join(p.get("text", "") for p in event["candidates"][0]["content"]["parts"])


def native_sse(http: httpx.Client, stack: Stack, key: str, prompt: str) -> list[bytes]:
    r = http.post(f"{stack.public_base}/v1beta/models/{MODEL}:streamGenerateContent", params={"alt": "sse"},
                  headers={"x-goog-api-key": key}, json=body(prompt))
    assert r.status_code == 200, r.text
    assert b"\n:" not in b"\n" + r.content  # no SSE comment lines: the Gemini CLI's SDK fails on them
    return sse_data(r.content)


def test_native_sse_burst_is_one_event_per_backend_event(http, pool_stack):
    key = pool_stack.key(name="coalesce-native")
    burst = native_sse(http, pool_stack, key, BURST)
    spaced = native_sse(http, pool_stack, key, SPACED)
    assert len(burst) == EVENTS
    parsed = [orjson.loads(e) for e in burst]
    # Each event is exactly the bytes of one backend event: one JSON object, compact, whole.
    assert all(isinstance(e, dict) and orjson.dumps(e) == raw for e, raw in zip(parsed, burst))
    assert " ".join(text_of(e).strip() for e in parsed) == WORDS
    assert [("finishReason" in e["candidates"][0], "usageMetadata" in e) for e in parsed] == \
        [(False, False)] * (EVENTS - 1) + [(True, True)]
    # The same answer spaced out reaches the client as the same events.
    assert [without_volatile(orjson.loads(e)) for e in spaced] == [without_volatile(e) for e in parsed]


def test_native_json_array_burst_keeps_one_element_per_event(http, stack):
    key = stack.key(name="coalesce-array")
    r = http.post(f"{stack.public_base}/v1beta/models/{MODEL}:streamGenerateContent",
                  headers={"x-goog-api-key": key}, json=body(BURST))
    assert r.status_code == 200
    events = orjson.loads(r.content)
    assert len(events) == EVENTS and all(isinstance(e, dict) for e in events)
    assert " ".join(text_of(e).strip() for e in events) == WORDS


def openai_stream(http: httpx.Client, stack: Stack, key: str, prompt: str) -> list[bytes]:
    r = http.post(f"{stack.public_base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                  json={"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                        "messages": [{"role": "user", "content": prompt}]})
    assert r.status_code == 200, r.text
    return sse_data(r.content)


def test_openai_burst_keeps_separate_data_lines(http, stack):
    key = stack.key(name="coalesce-openai")
    burst, spaced = openai_stream(http, stack, key, BURST), openai_stream(http, stack, key, SPACED)
    assert burst[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in burst[:-1]]
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    # One chunk per backend event (the role chunk may open the stream first), in order.
    assert len([d for d in deltas if d]) == EVENTS
    assert "".join(d or "" for d in deltas).split() == WORDS.split()

    def shape(events: list[bytes]) -> list:
        out = []
        for e in events[:-1]:
            c = orjson.loads(e)
            out.append(([ch["delta"] for ch in c["choices"]], [ch.get("finish_reason") for ch in c["choices"]],
                        c.get("usage")))
        return out

    assert shape(burst) == shape(spaced)


def event_names(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        lines = [line for line in block.split(b"\n") if line]
        if not lines:
            continue
        name = next((ln[len(b"event: "):].decode() for ln in lines if ln.startswith(b"event: ")), "")
        data = [ln[len(b"data: "):] for ln in lines if ln.startswith(b"data: ")]
        assert len(data) == 1, block
        out.append((name, orjson.loads(data[0])))
    return out


def _comparable(events: list[tuple[str, dict]]) -> list:
    """Event names with their text deltas: ids and timestamps differ between two answers."""
    out = []
    for name, data in events:
        delta = data.get("delta")
        text = delta.get("text") if isinstance(delta, dict) else (delta if isinstance(delta, str) else None)
        out.append((name, data.get("type"), text))
    return out


@pytest.mark.parametrize("api", ["anthropic", "responses"])
def test_anthropic_and_responses_burst_keep_their_event_sequence(http, stack, api):
    key = stack.key(name=f"coalesce-{api}")

    def run(prompt: str) -> list[tuple[str, dict]]:
        if api == "anthropic":
            r = http.post(f"{stack.public_base}/v1/messages",
                          headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                          json={"model": "claude-sonnet-4-6", "max_tokens": 500, "stream": True,
                                "messages": [{"role": "user", "content": prompt}]})
        else:
            r = http.post(f"{stack.public_base}/v1/responses", headers={"Authorization": f"Bearer {key}"},
                          json={"model": MODEL, "stream": True, "input": prompt})
        assert r.status_code == 200, r.text
        return event_names(r.content)

    burst, spaced = run(BURST), run(SPACED)
    assert _comparable(burst) == _comparable(spaced)
    texts = [t for _, _, t in _comparable(burst) if t]
    assert len(texts) == EVENTS and "".join(texts).split() == WORDS.split()


# --- a lone event leaves at once --------------------------------------------------------------

# The simulator sends the first event, then sleeps a minute before the next: the client must
# hold the first event long before that (the read timeout, 30 s, fails the test otherwise).
LONE = "[len=6] [chunks=3] [delay=60000]"


@pytest.mark.parametrize("route", ["native_sse", "native_array", "openai"])
def test_a_lone_first_event_is_not_held_back(http, stack, route):
    key = stack.key(name=f"lone-{route}")
    if route == "openai":
        url, kw = f"{stack.public_base}/v1/chat/completions", dict(
            headers={"Authorization": f"Bearer {key}"},
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": LONE}]})
    else:
        url, kw = f"{stack.public_base}/v1beta/models/{MODEL}:streamGenerateContent", dict(
            headers={"x-goog-api-key": key}, json=body(LONE), params={"alt": "sse"} if route == "native_sse" else {})
    got = b""
    with http.stream("POST", url, **kw) as r:
        assert r.status_code == 200
        for piece in r.iter_raw():
            got += piece
            if b"w1 w2" in got and (route == "native_array" or got.endswith(b"\n")):
                break
    # Words go out as "w<n> " (each with its space): a bare b"w3" would also match inside a random
    # response id ("...mw32v2...": it did once, in CI), which never holds a space.
    assert b"w1 w2" in got and b"w3 " not in got and b"finishReason" not in got and b'"finish_reason":"stop"' not in got


# --- the gRPC contract ------------------------------------------------------------------------

async def _generate(stack: Stack, coalesce: bool) -> list:
    from gemini_cli.upstream.v1 import upstream_pb2
    from google.api import httpbody_pb2

    async with grpc.aio.insecure_channel(stack.upstream.addr) as channel:
        call = harness.AuthedStub(channel).Generate(upstream_pb2.GenerateRequest(
            model=MODEL, stream=True, coalesce=coalesce,
            body=httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body(BURST)))))
        return [msg async for msg in call]


def test_grpc_coalesce_is_asked_for_and_old_callers_get_one_event_per_message(stack):
    plain = asyncio.run(_generate(stack, coalesce=False))
    assert len(plain) == EVENTS and all(m.chunk.data and not m.chunks for m in plain)
    batched = asyncio.run(_generate(stack, coalesce=True))
    # Events written at once arrive (mostly) at once: fewer messages than events, none empty.
    assert len(batched) < EVENTS and all(m.chunks and not m.HasField("chunk") for m in batched)
    events = [c.data for m in batched for c in m.chunks]
    assert [without_volatile(orjson.loads(e)) for e in events] == \
        [without_volatile(orjson.loads(m.chunk.data)) for m in plain]
    assert batched[0].credential_id and batched[0].trace_id
    assert batched[-1].usage.total_tokens > 0 and plain[-1].usage.total_tokens == batched[-1].usage.total_tokens


def test_rest_callers_through_the_transcoder_may_ask_for_coalesced_messages(stack):
    """Over Envoy's internal listener a REST caller gets one event per message (`chunk`) unless
    it asks (`coalesce=true`): then `chunks`, each a whole event, in order."""
    import base64

    url = f"http://{harness.LOOPBACK}:{stack.envoy.extra['internal_port']}/v1/models/{MODEL}:generate"
    auth = ("ops", harness.internal_auth().tokens["ops"])
    got = {}
    with httpx.Client(timeout=30, trust_env=False, auth=auth) as client:
        for coalesce in ("false", "true"):
            r = client.post(url, params={"stream": "true", "coalesce": coalesce}, content=orjson.dumps(body(BURST)),
                            headers={"content-type": "application/json"})
            assert r.status_code == 200, r.text
            got[coalesce] = [orjson.loads(line) for line in r.text.splitlines() if line.strip()]
    plain, batched = got["false"], got["true"]
    # (The transcoder prints empty repeated fields as [].)
    assert len(plain) == EVENTS and all(m["chunk"]["data"] and not m.get("chunks") for m in plain)
    assert len(batched) < EVENTS and all(m["chunks"] and not m.get("chunk") for m in batched)
    events = [orjson.loads(base64.b64decode(c["data"])) for m in batched for c in m["chunks"]]
    assert [without_volatile(e) for e in events] == \
        [without_volatile(orjson.loads(base64.b64decode(m["chunk"]["data"]))) for m in plain]
