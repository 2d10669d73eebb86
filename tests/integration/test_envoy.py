"""The real Envoy (deploy/envoy.yaml) in front of the real edge and upstream.

Streams must cross Envoy chunk by chunk: the simulator holds the rest of the answer back after
its first chunk (its "hold" fault) until the client has that chunk, then the test releases it.
A pause between chunks ([delay=MS]) keeps them from reaching the upstream in one read, so each
crosses as a message of its own.
"""
from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Iterator

import grpc
import httpx
import orjson
import pytest
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gemini_cli.upstream.v1 import upstream_pb2
from tests import harness
from tests.simulator.control import SimControl
from tests.stack_fixtures import start_stack

MODEL = "gemini-2.5-flash"
DELAY_MS = 300
EDGE_LIMIT = 1024 * 1024  # the edge's MAX_BODY_BYTES in this stack, to keep oversize bodies cheap


@dataclass
class EnvoyStack:
    sim: SimControl
    refresh_token: str
    upstream: harness.Proc
    edge: harness.Proc
    envoy: harness.Proc
    key: str

    @property
    def public(self) -> str:
        return f"{self.envoy.url}/gemini_cli"

    @property
    def internal(self) -> str:
        return f"http://{harness.LOOPBACK}:{self.envoy.extra['internal_port']}"

    def hold_next_stream(self) -> None:
        """The simulator stops this stack's next streamed answer after its first chunk, until
        `self.sim.release()`: a chunk the client holds before then came through on its own."""
        self.sim.add_fault(account=self.refresh_token, op="stream", kind="hold", after_chunks=1)


def internal_client() -> httpx.Client:
    """A REST client of Envoy's internal listener, as the internal caller `ops` (Basic auth)."""
    return httpx.Client(timeout=30, trust_env=False, auth=("ops", harness.internal_auth().tokens["ops"]))


@pytest.fixture(scope="module")
def stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyStack]:
    s = start_stack(simulator, tmp_path_factory.mktemp("envoy-stack"), {"MAX_BODY_BYTES": str(EDGE_LIMIT)})
    try:
        with SimControl(simulator.url) as sim:
            yield EnvoyStack(sim, s.refresh_token, s.upstream, s.edge, s.envoy, key=s.key(name="t"))
    finally:
        s.stop()


def prompt_body(text: str) -> bytes:
    return orjson.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]})


def texts(chunk: dict) -> str:
    return "".join(p.get("text", "") for c in chunk.get("candidates", []) for p in c["content"].get("parts", []))


def test_sse_chunks_cross_envoy_one_by_one(stack: EnvoyStack):
    prompt = f"stream through envoy [chunks=3] [delay={DELAY_MS}]"
    events: list[dict] = []
    released = None
    url = f"{stack.public}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    stack.hold_next_stream()
    # The client's read timeout is the hang guard: a buffered stream never gets its first chunk out.
    with httpx.Client(timeout=30, trust_env=False) as client:
        with client.stream("POST", url, content=prompt_body(prompt),
                           headers={"x-goog-api-key": stack.key, "content-type": "application/json"}) as resp:
            assert resp.status_code == 200, resp.read()
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers.get("x-request-id")
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                events.append(orjson.loads(line[5:]))
                if released is None:
                    released = stack.sim.release()

    assert len(events) == 3
    # The first chunk was in the client's hands while the simulator held the rest back.
    assert released == 1, released
    assert "".join(texts(chunk) for chunk in events) == f"echo: {prompt}"
    assert events[-1]["usageMetadata"]["candidatesTokenCount"] > 0


def test_internal_rest_call_through_the_transcoder_streams_generate(stack: EnvoyStack):
    prompt = f"internal rest [chunks=3] [delay={DELAY_MS}]"
    messages: list[dict] = []
    released = None
    url = f"{stack.internal}/v1/models/{MODEL}:generate"
    stack.hold_next_stream()
    with internal_client() as client:
        # The raw Gemini request is the body (HttpBody); `stream` comes from the query string.
        with client.stream("POST", url, params={"stream": "true", "caller": "ops"}, content=prompt_body(prompt),
                           headers={"content-type": "application/json"}) as resp:
            assert resp.status_code == 200, resp.read()
            # One GenerateResponse per line (print_options.stream_newline_delimited).
            for line in resp.iter_lines():
                if line.strip():
                    messages.append(orjson.loads(line))
                    if released is None:
                        released = stack.sim.release()

    assert len(messages) == 3
    assert released == 1, released  # the first message came while the rest was held back
    chunks = [orjson.loads(base64.b64decode(m["chunk"]["data"])) for m in messages]
    assert all(m["chunk"]["contentType"] == "application/json" for m in messages)
    assert "".join(texts(c) for c in chunks) == f"echo: {prompt}"
    assert messages[0]["traceId"]
    assert int(messages[-1]["usage"]["totalTokens"]) > 0


def test_internal_rest_unary_calls_and_unknown_paths(stack: EnvoyStack):
    with internal_client() as client:
        models = client.get(f"{stack.internal}/v1/models")
        assert models.status_code == 200
        assert MODEL in {m["id"] for m in models.json()["models"]}
        count = client.post(f"{stack.internal}/v1/models/{MODEL}:countTokens", content=prompt_body("one two three"),
                            headers={"content-type": "application/json"})
        assert count.status_code == 200, count.text
        assert int(count.json()["totalTokens"]) > 0
        # A path that maps to no RPC is refused by the transcoder, not forwarded.
        assert client.get(f"{stack.internal}/v2/whatever").status_code == 404


def test_bodies_larger_than_envoys_buffers_pass_both_listeners(stack: EnvoyStack):
    """Envoy holds at most 32-64 KiB per connection of a public body (it streams to the edge);
    the internal listener's transcoder converts whole REST bodies and answers up to
    MAX_BODY_BYTES."""
    text = "x " * 300_000 + " [len=30000]"  # ~600 KB in, ~260 KB out
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]})
    with internal_client() as client:
        r = client.post(f"{stack.internal}/v1/models/{MODEL}:generate", content=body,
                        headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text[:300]
        assert len(base64.b64decode(r.json()["chunk"]["data"])) > 150_000
    with httpx.Client(timeout=60, trust_env=False) as client:
        r = client.post(f"{stack.public}/v1beta/models/{MODEL}:generateContent", content=body,
                        headers={"x-goog-api-key": stack.key, "content-type": "application/json"})
        assert r.status_code == 200, r.text[:300]
        assert len(r.content) > 150_000


def test_internal_rest_errors_carry_the_grpc_status_details(stack: EnvoyStack):
    # The upstream's errors carry google.rpc.ErrorInfo details; the transcoder prints them
    # only when the descriptor set holds google/rpc/error_details.proto (else: empty body).
    with internal_client() as client:
        unknown = client.post(f"{stack.internal}/v1/models/no-such-model:generate", content=prompt_body("x"),
                              headers={"content-type": "application/json"})
    assert unknown.status_code == 404
    body = unknown.json()
    assert body["code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"


def test_internal_listener_serves_grpc_too(stack: EnvoyStack):
    with grpc.insecure_channel(f"{harness.LOOPBACK}:{stack.envoy.extra['internal_port']}") as channel:
        # Everything on the internal listener needs an internal caller's credentials, health too.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5,
                                                           metadata=harness.internal_metadata())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        request = upstream_pb2.GenerateRequest(
            model=MODEL, stream=True, caller="ops",
            body=httpbody_pb2.HttpBody(content_type="application/json", data=prompt_body("grpc via envoy")))
        replies = list(harness.AuthedStub(channel).Generate(request, timeout=30))
    assert "".join(texts(orjson.loads(r.chunk.data)) for r in replies) == "echo: grpc via envoy"


def test_request_id_is_generated_returned_and_passed_on(stack: EnvoyStack):
    with httpx.Client(timeout=30, trust_env=False) as client:
        resp = client.post(f"{stack.public}/v1beta/models/{MODEL}:generateContent", content=prompt_body("rid"),
                           headers={"x-goog-api-key": stack.key, "content-type": "application/json",
                                    "x-request-id": "forged-by-client"})
    assert resp.status_code == 200, resp.text
    rid = resp.headers["x-request-id"]
    assert rid and rid != "forged-by-client"
    # Envoy's own x-envoy-* headers (upstream service time) are not the client's business.
    assert not [h for h in resp.headers if h.lower().startswith("x-envoy-")], dict(resp.headers)
    # The edge used Envoy's id for the upstream call: it is in the upstream's log.
    deadline = time.monotonic() + harness.SETTLE_TIMEOUT
    while rid not in stack.upstream.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rid in stack.upstream.log()


def test_public_listener_errors_and_health(stack: EnvoyStack):
    with httpx.Client(timeout=30, trust_env=False) as client:
        assert client.get(f"{stack.envoy.url}/healthz").status_code == 200
        outside = client.get(f"{stack.envoy.url}/v1/models")
        assert outside.status_code == 404
        assert outside.json()["error"]["code"] == 404
        assert "/gemini_cli/" in outside.json()["error"]["message"]
        # The edge's own answers pass through untouched (here: no license key).
        assert client.get(f"{stack.public}/v1beta/models").status_code == 401


def test_body_limits_are_the_edges_through_envoy(stack: EnvoyStack):
    """Envoy buffers no request body: the edge's MAX_BODY_BYTES holds through it, declared or
    chunked, with the edge's own message."""
    headers = {"x-goog-api-key": stack.key, "content-type": "application/json"}
    url = f"{stack.public}/v1beta/models/{MODEL}:generateContent"
    with httpx.Client(timeout=60, trust_env=False) as client:
        declared = client.post(url, content=b" " * (EDGE_LIMIT + 1), headers=headers)
        assert declared.status_code == 413
        assert str(EDGE_LIMIT) in declared.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:
            block = b" " * (256 * 1024)
            for _ in range(EDGE_LIMIT // len(block) + 2):
                yield block

        chunked = client.post(url, content=chunks(), headers=headers)
        assert chunked.status_code == 413
        assert str(EDGE_LIMIT) in chunked.json()["error"]["message"]
