"""GenerateUnary, the non-streaming Generate as a unary call, on the real upstream process against
the simulator; and the edge's UpstreamClient over it (what every non-streaming route uses).

It must answer, fail, retry and end exactly as Generate with stream=false does."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2
from gemini_cli.upstream.v1 import upstream_pb2_grpc
from services.edge.upstream_client import UpstreamClient
from services.edge.upstream_errors import UpstreamError
from tests import harness
from tests.integration.test_upstream import CALL_TIMEOUT, MODEL, details, gen_request, text_of, write_creds
from tests.simulator.control import SimControl


@pytest.fixture
async def channels():
    made: list[grpc.aio.Channel] = []

    def make(proc: harness.Proc) -> grpc.aio.Channel:
        made.append(grpc.aio.insecure_channel(proc.addr))
        return made[-1]

    yield make
    for ch in made:
        await ch.close()


@pytest.fixture
async def edge_clients():
    made: list[UpstreamClient] = []

    def make(proc: harness.Proc) -> UpstreamClient:
        made.append(UpstreamClient.connect(proc.addr, authorization=harness.internal_auth().authorization("edge"),
                                           timeout=CALL_TIMEOUT))
        return made[-1]

    yield make
    for c in made:
        await c.close()


async def test_answers_as_generate_does(sim: SimControl, upstream_factory, creds_dir: Path, channels) -> None:
    write_creds(creds_dir, sim, "a")
    stub = harness.AuthedStub(channels(upstream_factory(creds_dir)))
    msg = await stub.GenerateUnary(gen_request("hello unary world", stream=False, rid="rid-u1"), timeout=CALL_TIMEOUT)
    assert text_of([msg]) == "echo: hello unary world"
    assert (msg.usage.prompt_tokens, msg.usage.candidates_tokens, msg.usage.total_tokens) == (3, 4, 7)
    assert msg.trace_id and msg.credential_id == "a" and msg.credential_kind == "gemini-cli-oauth"
    gen = sim.requests(op="generate")[-1]
    assert gen["body"]["user_prompt_id"] == "rid-u1" and gen["body"]["model"] == MODEL
    # What Generate sends for the same call (but for the backend's per-call response id).
    [old] = [m async for m in stub.Generate(gen_request("hello unary world", stream=False), timeout=CALL_TIMEOUT)]
    assert text_of([old]) == text_of([msg]) and old.usage == msg.usage and old.credential_id == msg.credential_id
    assert orjson.loads(old.chunk.data).keys() == orjson.loads(msg.chunk.data).keys()


async def test_errors_are_generates(sim: SimControl, upstream_factory, creds_dir: Path, channels) -> None:
    tokens = write_creds(creds_dir, sim, "ab")
    stub = harness.AuthedStub(channels(upstream_factory(creds_dir)))

    async def fails(request: upstream_pb2.GenerateRequest) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GenerateUnary(request, timeout=CALL_TIMEOUT)
        return info.value

    err = await fails(upstream_pb2.GenerateRequest(model=MODEL, body=httpbody_pb2.HttpBody(data=b"{not json")))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and details(err)[0].reason == "INVALID_REQUEST"
    err = await fails(gen_request("x", stream=True))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "Generate" in err.details()
    err = await fails(gen_request("x", stream=False, model="gemini-0-nonexistent"))
    assert err.code() is grpc.StatusCode.NOT_FOUND
    # The backend's 400 keeps its message and is not retried on the other credential.
    sim.clear_requests()
    sim.add_fault(op="generate", kind="400", message="function call is missing a thought_signature")
    err = await fails(gen_request("x", stream=False))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "function call is missing a thought_signature"
    assert details(err)[0].metadata["http_status"] == "400"
    assert len(sim.requests(op="generate")) == 1
    # A 429 is retried on the other credential...
    sim.clear_requests()
    sim.add_fault(account=tokens["a"], op="generate", kind="429", retry_delay="30s")
    msg = await stub.GenerateUnary(gen_request("retry me", stream=False), timeout=CALL_TIMEOUT)
    assert text_of([msg]) == "echo: retry me" and msg.credential_id == "b"
    # ... and when every credential cools down: RESOURCE_EXHAUSTED with RetryInfo.
    sim.add_fault(account=tokens["b"], op="generate", kind="429", retry_delay="20s", reason="RATE_LIMIT_EXCEEDED")
    err = await fails(gen_request("anyone there", stream=False))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    info, retry = details(err)
    assert info.reason == "ALL_CREDENTIALS_COOLING" and retry is not None and 0 < retry.retry_delay.seconds <= 30


async def test_refused_without_internal_credentials(sim: SimControl, upstream_factory, creds_dir: Path,
                                                    channels) -> None:
    write_creds(creds_dir, sim, "a")
    channel = channels(upstream_factory(creds_dir))
    bare = upstream_pb2_grpc.UpstreamStub(channel)
    sim.clear_requests()
    for metadata in ((), (("authorization", harness.internal_auth().authorization("ops")[:-4] + "AAA="),)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await bare.GenerateUnary(gen_request("who are you", stream=False), metadata=metadata, timeout=CALL_TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert sim.requests(op="generate") == []  # nothing reached the backend


async def test_deadline_and_cancellation_reach_the_backend(sim: SimControl, upstream_factory, creds_dir: Path,
                                                           channels) -> None:
    write_creds(creds_dir, sim, "a")
    stub = harness.AuthedStub(channels(upstream_factory(creds_dir)))
    await stub.GenerateUnary(gen_request("warm", stream=False), timeout=CALL_TIMEOUT)  # token refreshed
    # The backend never answers (its "hang" fault): a backend call can only end by being
    # cancelled, however slow the machine; one that was not is still open when
    # backend_call_ended gives up (its hang guard).
    sim.add_fault(op="generate", kind="hang", times=-1)

    async def backend_call_ended(n: int) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        entry: dict[str, Any] = {}
        while time.monotonic() < deadline:
            calls = sim.requests(op="generate")
            entry = calls[-1] if len(calls) >= n else {}
            if entry.get("finished") is not None:
                break
            await asyncio.sleep(0.05)
        return entry

    sim.clear_requests()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GenerateUnary(gen_request("too slow", stream=False), timeout=3)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    ended = await backend_call_ended(1)
    assert ended.get("finished") is not None, f"hung: the backend call outlived its caller's deadline: {ended}"
    assert ended.get("cancelled") is True, ended

    call = stub.GenerateUnary(gen_request("never mind", stream=False), timeout=CALL_TIMEOUT)
    while len(sim.requests(op="generate")) < 2:
        await asyncio.sleep(0.02)
    call.cancel()
    ended = await backend_call_ended(2)
    assert ended.get("finished") is not None, f"hung: the backend call outlived its cancelled caller: {ended}"
    assert ended.get("cancelled") is True, ended


# --- the edge's client -------------------------------------------------------------------------

async def test_edge_client_maps_answers_and_errors(sim: SimControl, upstream_factory, creds_dir: Path,
                                                   edge_clients) -> None:
    tokens = write_creds(creds_dir, sim, "a")
    client = edge_clients(upstream_factory(creds_dir))
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "edge says hi"}]}]})
    sim.clear_requests()
    msg = await client.generate(MODEL, body, request_id="rid-e1", caller="alice")
    assert text_of([msg]) == "echo: edge says hi" and msg.usage.total_tokens == 7 and msg.trace_id
    assert sim.requests(op="generate")[-1]["body"]["user_prompt_id"] == "rid-e1"
    sim.add_fault(account=tokens["a"], op="generate", kind="429", retry_delay="12s")
    with pytest.raises(UpstreamError) as info:
        await client.generate(MODEL, body)
    assert info.value.http_status == 429 and info.value.retry_after == pytest.approx(12, abs=2)
    with pytest.raises(UpstreamError) as info:
        await client.generate("gemini-0-nonexistent", body)
    assert info.value.http_status == 404


async def test_edge_client_falls_back_to_generate_on_an_older_upstream() -> None:
    """An upstream without GenerateUnary (older, while a deployment rolls) still answers: over
    Generate, for this call and the following ones. (A servicer that leaves GenerateUnary to the
    generated base class answers UNIMPLEMENTED 'Method not implemented!' from a sync gRPC server:
    tests/integration/test_edge_embeddings_routes.py's fake upstream takes that way.)"""
    calls: list[str] = []

    class Older(upstream_pb2_grpc.UpstreamServicer):
        async def Generate(self, request, context):
            calls.append(f"Generate stream={request.stream} rid={request.request_id}")
            msg = upstream_pb2.GenerateResponse(credential_id="old", credential_kind="gemini-cli-oauth")
            msg.chunk.data = request.body.data
            yield msg

    handlers = {"Generate": grpc.unary_stream_rpc_method_handler(
        Older().Generate, request_deserializer=upstream_pb2.GenerateRequest.FromString,
        response_serializer=upstream_pb2.GenerateResponse.SerializeToString)}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "gemini_cli.upstream.v1.Upstream", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = UpstreamClient.connect(f"127.0.0.1:{port}")
    try:
        for rid in ("r1", "r2"):
            msg = await client.generate(MODEL, b'{"contents": []}', request_id=rid)
            assert msg.chunk.data == b'{"contents": []}' and msg.credential_id == "old"
        assert calls == ["Generate stream=False rid=r1", "Generate stream=False rid=r2"]
    finally:
        await client.close()
        await server.stop(None)
