"""The real upstream process against the Code Assist simulator, through a grpc.aio client."""
from __future__ import annotations

import asyncio
import os
import signal
import stat
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.api import httpbody_pb2
from google.protobuf import descriptor_pool
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from gemini_cli.upstream.v1 import upstream_pb2
from tests import harness
from tests.integration.conftest import new_refresh_token
from tests.simulator.control import SimControl

SERVICE = "gemini_cli.upstream.v1.Upstream"
MODEL = "gemini-2.5-flash"
CALL_TIMEOUT = 20


def gen_request(prompt: str, *, stream: bool = True, model: str = MODEL, rid: str = "") -> upstream_pb2.GenerateRequest:
    body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    return upstream_pb2.GenerateRequest(
        model=model, stream=stream, request_id=rid, caller="it",
        body=httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(body)))


def text_of(msgs: list[upstream_pb2.GenerateResponse]) -> str:
    out = []
    for msg in msgs:
        for cand in orjson.loads(msg.chunk.data).get("candidates", []):
            out += [p["text"] for p in cand.get("content", {}).get("parts", []) if "text" in p and not p.get("thought")]
    return "".join(out)


def details(err: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo | None, error_details_pb2.RetryInfo | None]:
    """ErrorInfo and RetryInfo from the grpc-status-details-bin trailer."""
    raw = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw is None:
        return None, None
    status = status_pb2.Status.FromString(raw)
    assert status.code == err.code().value[0]
    info = retry = None
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
        elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_.Unpack(retry)
    return info, retry


class Client:
    def __init__(self, proc: harness.Proc) -> None:
        self.channel = grpc.aio.insecure_channel(proc.addr)
        self.stub = harness.AuthedStub(self.channel)

    async def generate(self, prompt: str, **kw: Any) -> list[upstream_pb2.GenerateResponse]:
        call = self.stub.Generate(gen_request(prompt, **kw), timeout=CALL_TIMEOUT)
        return [msg async for msg in call]

    async def credentials(self) -> dict[str, upstream_pb2.CredentialStatus]:
        resp = await self.stub.ListModels(upstream_pb2.ListModelsRequest(), timeout=CALL_TIMEOUT)
        return {c.id: c for c in resp.credentials}

    async def close(self) -> None:
        await self.channel.close()


@pytest.fixture
async def clients():
    made: list[Client] = []

    def make(proc: harness.Proc) -> Client:
        made.append(Client(proc))
        return made[-1]

    yield make
    for c in made:
        await c.close()


def write_creds(directory: Path, sim: SimControl, names: str, **account: Any) -> dict[str, str]:
    """One credential file per name (sorted names = pool order); returns name → refresh token."""
    tokens = {}
    for name in names:
        rt = new_refresh_token(name)
        if account:
            sim.add_account(rt, **account)
        harness.write_credential(directory / f"{name}.json", rt)
        tokens[name] = rt
    return tokens


# --- basics ------------------------------------------------------------------------------------

async def test_health_reflection_and_models(sim: SimControl, upstream_factory, creds_dir: Path, clients) -> None:
    write_creds(creds_dir, sim, "a")
    proc = upstream_factory(creds_dir)
    with grpc.insecure_channel(proc.addr) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", SERVICE):
            assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT).status == \
                health_pb2.HealthCheckResponse.SERVING
        db = ProtoReflectionDescriptorDatabase(ch)
        assert SERVICE in db.get_services()
        methods = {m.name for m in descriptor_pool.DescriptorPool(db).FindServiceByName(SERVICE).methods}
        assert methods == {"Generate", "GenerateUnary", "GenerateChunked", "CountTokens", "Embed", "ListModels",
                           "SetCredentialEnabled", "AddCredential"}
    client = clients(proc)
    resp = await client.stub.ListModels(upstream_pb2.ListModelsRequest(), timeout=CALL_TIMEOUT)
    ids = [m.id for m in resp.models]
    assert "gemini-2.5-pro" in ids and resp.models[ids.index("gemini-2.5-pro")].thinking.max_budget == 32768
    assert [c.id for c in resp.credentials] == ["a"]
    assert resp.credentials[0].kind == "gemini-cli-oauth"


async def test_unary_and_count_tokens(sim: SimControl, upstream_factory, creds_dir: Path, clients) -> None:
    write_creds(creds_dir, sim, "a")
    client = clients(upstream_factory(creds_dir))
    msgs = await client.generate("hello unary world", stream=False, rid="rid-1")
    assert len(msgs) == 1
    assert text_of(msgs) == "echo: hello unary world"
    assert (msgs[0].usage.prompt_tokens, msgs[0].usage.candidates_tokens, msgs[0].usage.total_tokens) == (3, 4, 7)
    assert msgs[0].trace_id and msgs[0].credential_id == "a"
    gen = sim.requests(op="generate")[-1]
    assert gen["body"]["user_prompt_id"] == "rid-1" and gen["body"]["model"] == MODEL

    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "one two three four"}]}]})
    resp = await client.stub.CountTokens(upstream_pb2.CountTokensRequest(
        model="gemini-2.5-pro", body=httpbody_pb2.HttpBody(content_type="application/json", data=body)),
        timeout=CALL_TIMEOUT)
    assert resp.total_tokens == 4 and orjson.loads(resp.body.data) == {"totalTokens": 4}


async def test_bad_requests_are_invalid_argument(sim: SimControl, upstream_factory, creds_dir: Path,
                                                 clients) -> None:
    write_creds(creds_dir, sim, "ab")
    client = clients(upstream_factory(creds_dir))
    bad = upstream_pb2.GenerateRequest(model=MODEL, body=httpbody_pb2.HttpBody(data=b"{not json"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        [m async for m in client.stub.Generate(bad, timeout=CALL_TIMEOUT)]
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(info.value)[0].reason == "INVALID_REQUEST"
    # The backend's 400 keeps its message and is not retried on the other credential.
    sim.clear_requests()
    sim.add_fault(op="stream", kind="400", message="function call is missing a thought_signature", times=-1)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.generate("x")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "function call is missing a thought_signature"
    err_info, _ = details(info.value)
    assert err_info.reason == "BACKEND_ERROR" and err_info.metadata["http_status"] == "400"
    assert len(sim.requests(op="stream")) == 1
    sim.clear_faults()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.generate("x", model="gemini-0-nonexistent")
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


# --- streaming ---------------------------------------------------------------------------------

async def test_stream_chunks_arrive_as_the_simulator_sends_them(sim: SimControl, upstream_factory,
                                                                  creds_dir: Path, clients) -> None:
    tokens = write_creds(creds_dir, sim, "a")
    client = clients(upstream_factory(creds_dir))
    await client.generate("warm up", stream=False)  # token and project are ready
    # Forwarded, not buffered: the simulator holds the answer back after its first chunk, which
    # must be in the caller's hands before the test releases the rest (the call's deadline is
    # the hang guard: a buffered stream would give nothing until then). The delay only keeps
    # the later chunks apart, one message each (events that arrive together may share one).
    sim.add_fault(account=tokens["a"], op="stream", kind="hold", after_chunks=1)
    prompt = "one two three four five six [chunks=5] [delay=250]"
    msgs: list[upstream_pb2.GenerateResponse] = []
    released = None
    async for msg in client.stub.Generate(gen_request(prompt), timeout=CALL_TIMEOUT):
        msgs.append(msg)
        if len(msgs) == 1:
            released = sim.release()
    assert released == 1, "the first chunk did not come while the rest was held back"
    assert len(msgs) == 5
    assert text_of(msgs) == f"echo: {prompt}"
    assert msgs[0].trace_id and msgs[0].credential_id == "a"
    assert all(not m.trace_id and not m.credential_id for m in msgs[1:])
    assert [m.HasField("usage") for m in msgs] == [False] * 4 + [True]


async def test_mid_stream_cut_is_unavailable_without_retry(sim: SimControl, upstream_factory, creds_dir: Path,
                                                           clients) -> None:
    write_creds(creds_dir, sim, "ab")
    client = clients(upstream_factory(creds_dir))
    sim.add_fault(op="stream", kind="cut", after_chunks=2)
    got: list[upstream_pb2.GenerateResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for msg in client.stub.Generate(gen_request("a b c d e f [chunks=4]"), timeout=CALL_TIMEOUT):
            got.append(msg)
    assert len(got) == 2
    # A clean error, not a hang: a call left waiting would end at its deadline as DEADLINE_EXCEEDED.
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(info.value)[0].reason == "STREAM_CUT"
    assert len(sim.requests(op="stream")) == 1  # never retried after the first chunk went out


async def test_cancellation_reaches_the_simulator(sim: SimControl, upstream_factory, creds_dir: Path,
                                                  clients) -> None:
    tokens = write_creds(creds_dir, sim, "a")
    client = clients(upstream_factory(creds_dir))
    # The backend holds the rest of the answer after its first chunk until released, so its call
    # can only end by being cancelled, however long a busy machine takes to pass that on.
    sim.add_fault(account=tokens["a"], op="stream", kind="hold", after_chunks=1)
    try:
        call = client.stub.Generate(gen_request("w " * 10 + "[chunks=10]"), timeout=CALL_TIMEOUT)
        first = await call.read()
        assert first.credential_id == "a"
        call.cancel()
        deadline = time.monotonic() + 30
        entry: dict[str, Any] = {}
        while time.monotonic() < deadline:
            entry = sim.requests(op="stream")[-1]
            if entry["finished"] is not None:
                break
            await asyncio.sleep(0.05)
        assert entry.get("finished") is not None, f"hung: the backend call was still open 30 s after the cancel: {entry}"
        assert entry.get("cancelled") is True, entry
    finally:
        sim.release()


# --- the pool ----------------------------------------------------------------------------------

async def test_429_on_a_is_retried_on_b(sim: SimControl, upstream_factory, creds_dir: Path, clients) -> None:
    tokens = write_creds(creds_dir, sim, "ab")
    client = clients(upstream_factory(creds_dir))
    sim.add_fault(account=tokens["a"], op="stream", kind="429", retry_delay="30s")
    before = time.time()
    msgs = await client.generate("retry me please")
    after = time.time()
    assert text_of(msgs) == "echo: retry me please"
    assert msgs[0].credential_id == "b"
    streams = sim.requests(op="stream")
    assert [(e["account"], e["status"]) for e in streams] == [(tokens["a"], 429), (tokens["b"], 200)]
    creds = await client.credentials()
    assert creds["a"].state == upstream_pb2.CredentialStatus.COOLING
    # 30 s from the 429, which came during the call (the report rounds to the second or finer).
    assert before + 30 - 1 <= creds["a"].cooling_until[MODEL] <= after + 30 + 1
    assert creds["b"].state == upstream_pb2.CredentialStatus.READY


async def test_all_cooling_is_resource_exhausted_with_retry_info(sim: SimControl, upstream_factory,
                                                                 creds_dir: Path, clients) -> None:
    tokens = write_creds(creds_dir, sim, "ab")
    client = clients(upstream_factory(creds_dir))
    for rt in tokens.values():
        sim.add_fault(account=rt, op="stream", kind="429", retry_delay="20s", reason="RATE_LIMIT_EXCEEDED")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.generate("anyone there")
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    err_info, retry = details(info.value)
    assert err_info.reason == "ALL_CREDENTIALS_COOLING"
    assert err_info.metadata["upstream_reason"] == "RATE_LIMIT_EXCEEDED"
    assert retry is not None and 15 < retry.retry_delay.seconds <= 20
    # While they cool down, the backend is not asked again.
    sim.clear_requests()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.generate("still cooling")
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sim.requests(op="stream") == []


# Who finds the expired token first. No warm-up in either. With QUOTA_POLL_SECONDS=0 the 50 calls
# themselves do; with the default quota poll, its first poll at start-up starts the refresh and the
# calls arrive while it runs or after it (its file write once lagged behind the calls' answers).
@pytest.mark.parametrize("env", [
    pytest.param({"STARTUP_WARMUP": "false", "QUOTA_POLL_SECONDS": "0"}, id="the-calls-find-it"),
    pytest.param({"STARTUP_WARMUP": "false"}, id="the-start-up-quota-poll-finds-it"),
])
async def test_expired_token_is_refreshed_once_for_50_concurrent_calls(sim: SimControl, upstream_factory,
                                                                       creds_dir: Path, clients,
                                                                       env: dict[str, str]) -> None:
    tokens = write_creds(creds_dir, sim, "a")
    client = clients(upstream_factory(creds_dir, env))
    results = await asyncio.gather(*(client.generate(f"call {i}", stream=i % 2 == 0) for i in range(50)))
    wrong = [(i, text_of(msgs)) for i, msgs in enumerate(results) if text_of(msgs) != f"echo: call {i}"]
    assert wrong == [], f"(call, answer) not echoed: {wrong[:5]}"
    refreshes = sim.requests(op="refresh", account=tokens["a"])
    assert len(refreshes) == 1, f"{len(refreshes)} refreshes: {[e['status'] for e in refreshes]}"
    loads = sim.requests(op="load", account=tokens["a"])
    assert len(loads) == 1, f"{len(loads)} loadCodeAssist calls"
    # The refreshed token is in the file once the calls are answered (oauth_credential.py writes it
    # before any call may use it), and it is the one they were sent with.
    data = orjson.loads((creds_dir / "a.json").read_bytes())
    on_file = data.get("access_token", "")
    assert data.get("refresh_token") == tokens["a"] and on_file.startswith("ya29.sim-"), \
        f"the file after the calls holds access token {on_file!r}, refresh token kept: " \
        f"{data.get('refresh_token') == tokens['a']}"
    used = {e["headers"].get("authorization") for e in sim.requests(account=tokens["a"])
            if e["op"] in ("generate", "stream")}
    assert used == {"..." + on_file[-6:]}, f"the calls sent tokens ending {used}; the file holds ...{on_file[-6:]}"
    # The backend stops accepting that token: the 401s of 50 calls share one refresh too.
    sim.expire(tokens["a"])
    sim.clear_requests()
    results = await asyncio.gather(*(client.generate(f"again {i}", stream=False) for i in range(50)))
    assert len(results) == 50
    refreshes = sim.requests(op="refresh", account=tokens["a"])
    assert len(refreshes) == 1, f"after the 401s, {len(refreshes)} refreshes: {[e['status'] for e in refreshes]}"


async def test_invalid_grant_credential_is_skipped_and_reported_dead(sim: SimControl, upstream_factory,
                                                                     creds_dir: Path, clients) -> None:
    tokens = write_creds(creds_dir, sim, "a", revoked=True)
    tokens |= write_creds(creds_dir, sim, "b")
    client = clients(upstream_factory(creds_dir))
    for i in range(3):
        msgs = await client.generate(f"hi {i}", stream=False)
        assert msgs[0].credential_id == "b"
    creds = await client.credentials()
    assert creds["a"].state == upstream_pb2.CredentialStatus.DEAD
    assert "invalid_grant" in creds["a"].detail
    assert creds["b"].state == upstream_pb2.CredentialStatus.READY and creds["b"].requests >= 3
    assert len(sim.requests(op="refresh", account=tokens["a"])) == 1  # not hammered


async def test_onboarding_of_a_new_account(sim: SimControl, upstream_factory, creds_dir: Path, clients) -> None:
    tokens = write_creds(creds_dir, sim, "n", onboarded=False)
    client = clients(upstream_factory(creds_dir))
    msgs = await client.generate("first words", stream=False)
    assert text_of(msgs) == "echo: first words"
    ops = [e["op"] for e in sim.requests(account=tokens["n"]) if e["op"] in ("load", "onboard", "operation")]
    assert ops[:2] == ["load", "onboard"] and ops.count("operation") >= 1
    project = next(a for a in sim.accounts() if a["refresh_token"] == tokens["n"])["project"]
    assert project and sim.requests(op="generate", account=tokens["n"])[-1]["body"]["project"] == project
    creds = await client.credentials()
    assert creds["n"].project == project


async def test_credential_files_stay_valid_through_concurrent_refreshes(sim: SimControl, upstream_factory,
                                                                        creds_dir: Path, clients) -> None:
    tokens = write_creds(creds_dir, sim, "abcdef")
    for name in tokens:  # fields the Gemini CLI (or the operator) wrote must survive
        path = creds_dir / f"{name}.json"
        path.write_bytes(orjson.dumps({**orjson.loads(path.read_bytes()), "x_note": name}))
        path.chmod(0o600)
    client = clients(upstream_factory(creds_dir))
    stop = threading.Event()
    problems: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            for name in tokens:
                path = creds_dir / f"{name}.json"
                try:
                    data = orjson.loads(path.read_bytes())
                    mode = stat.S_IMODE(os.stat(path).st_mode)
                except (orjson.JSONDecodeError, FileNotFoundError) as exc:
                    problems.append(f"{name}: {exc!r}")
                    continue
                if mode != 0o600 or data.get("refresh_token") != tokens[name] or data.get("x_note") != name:
                    problems.append(f"{name}: mode {oct(mode)} {data}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for round_ in range(4):
            for rt in tokens.values():
                sim.expire(rt)
            await asyncio.gather(*(client.generate(f"r{round_} {i}", stream=False) for i in range(24)))
    finally:
        stop.set()
        watcher.join()
    assert problems == []
    # Every round forced refreshes; how the pool spread a round's calls over the six
    # credentials depends on timing, so only "each credential refreshed" is exact (below).
    assert len(sim.requests(op="refresh")) >= 4
    for name, rt in tokens.items():
        data = orjson.loads((creds_dir / f"{name}.json").read_bytes())
        issued = [e for e in sim.requests(op="refresh", account=rt) if e["status"] == 200]
        assert data["access_token"].startswith("ya29.sim-") and data["expiry_date"] > time.time() * 1000
        assert len(issued) >= 1
    assert sorted(p.name for p in creds_dir.iterdir()) == sorted(f"{n}.json" for n in tokens)  # no temp files


# --- bodies in parts (GenerateChunked) ---------------------------------------------------------

def chunked_parts(body: bytes, size: int, *, stream: bool = True, declared: int | None = None,
                  rid: str = "") -> list[upstream_pb2.GenerateRequestPart]:
    """GenerateRequestParts as protobuf serializes them (the upstream reads them by hand)."""
    head = upstream_pb2.GenerateRequest(model=MODEL, stream=stream, request_id=rid, caller="it")
    head.body.content_type = "application/json"
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    parts = [upstream_pb2.GenerateRequestPart(data=p) for p in pieces]
    parts[0].head.CopyFrom(head)
    parts[0].body_bytes = len(body) if declared is None else declared
    return parts


async def test_generate_chunked_is_generate_with_the_body_in_parts(sim: SimControl, upstream_factory,
                                                                   creds_dir: Path, clients) -> None:
    tokens = write_creds(creds_dir, sim, "ab")
    client = clients(upstream_factory(creds_dir))
    prompt = "parts " + "x" * 300_000
    request = {"contents": [{"role": "user", "parts": [{"text": prompt}]}], "session_id": "s-1"}
    body = orjson.dumps(request)
    # The body is kept whole until the answer starts: a 429 on a is retried on b with all of it.
    sim.add_fault(account=tokens["a"], op="stream", kind="429", retry_delay="30s")
    msgs = [m async for m in client.stub.GenerateChunked(iter(chunked_parts(body, 65_536, rid="rid-c")),
                                                         timeout=CALL_TIMEOUT)]
    assert text_of(msgs) == f"echo: {prompt}" and msgs[0].credential_id == "b"
    streams = sim.requests(op="stream")
    assert [(e["account"], e["status"]) for e in streams] == [(tokens["a"], 429), (tokens["b"], 200)]
    for entry in streams:
        assert harness.sent_request(entry) == request  # its own session_id kept, not doubled
        assert entry["body"]["user_prompt_id"] == "rid-c"
    unary = [m async for m in client.stub.GenerateChunked(iter(chunked_parts(body, 100_000, stream=False)),
                                                          timeout=CALL_TIMEOUT)]
    assert len(unary) == 1 and text_of(unary) == f"echo: {prompt}"


@pytest.mark.parametrize("case", ["no head", "two heads", "more than declared", "less than declared",
                                  "nothing declared", "body in head", "not json"])
async def test_generate_chunked_refuses_parts_that_do_not_add_up(sim: SimControl, upstream_factory,
                                                                 creds_dir: Path, case: str) -> None:
    write_creds(creds_dir, sim, "a")
    proc = upstream_factory(creds_dir)
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "y" * 5000}]}]})
    parts = chunked_parts(body, 2000)
    if case == "no head":
        parts[0].ClearField("head")
    elif case == "two heads":
        parts[1].head.CopyFrom(parts[0].head)
    elif case == "more than declared":
        parts[0].body_bytes = len(body) - 1
    elif case == "less than declared":
        parts[0].body_bytes = len(body) + 1
    elif case == "nothing declared":
        parts[0].body_bytes = 0
    elif case == "body in head":
        parts[0].head.body.data = b"{}"
    else:
        parts = chunked_parts(b"{not json" + b" " * 3000, 2000)
    sim.clear_requests()
    # The upstream may refuse (and end the call) before the last part is sent. grpc.aio then
    # reports the failed send as INTERNAL ("Internal error from Core", set on the call by the
    # client itself) whenever that send fails before the upstream's status has arrived, however
    # the parts are written: flaky under load. The synchronous client only stops sending, and
    # its status is always the one the upstream gave.
    def refusal() -> grpc.RpcError:
        with grpc.insecure_channel(proc.addr) as ch, pytest.raises(grpc.RpcError) as info:
            list(harness.AuthedStub(ch).GenerateChunked(iter(parts), timeout=CALL_TIMEOUT))
        return info.value

    err = await asyncio.to_thread(refusal)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    assert not sim.requests(op="stream")


# --- life cycle --------------------------------------------------------------------------------

async def test_no_credentials_still_serves_and_explains(sim: SimControl, upstream_factory, tmp_path: Path,
                                                        clients) -> None:
    missing = tmp_path / "nowhere" / "oauth_creds.json"
    proc = upstream_factory(missing)  # start_upstream waits for health SERVING
    client = clients(proc)
    creds = await client.credentials()
    assert str(missing) in creds["(none)"].detail
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.generate("hello")
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(info.value)[0].reason == "NO_CREDENTIALS" and str(missing) in info.value.details()


async def test_sigterm_drains_an_in_flight_stream_and_exits_0(sim: SimControl, upstream_factory, creds_dir: Path,
                                                              clients) -> None:
    tokens = write_creds(creds_dir, sim, "a")
    proc = upstream_factory(creds_dir, {"DRAIN_SECONDS": "10"})
    client = clients(proc)
    # The backend holds the answer after its first chunk until the upstream is draining, so the
    # signal always meets the stream in flight, however slow the machine.
    sim.add_fault(account=tokens["a"], op="stream", kind="hold", after_chunks=1)
    call = client.stub.Generate(gen_request("a b c d e f [chunks=5]"), timeout=CALL_TIMEOUT)
    msgs = [await call.read()]
    proc.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + harness.SETTLE_TIMEOUT
    while "shutting down" not in proc.log():
        assert time.monotonic() < deadline, "hung: the upstream never logged its shutdown after SIGTERM"
        await asyncio.sleep(0.05)
    assert proc.alive(), "the upstream exited before its in-flight stream finished"
    assert sim.release() == 1, "the stream was no longer held when the drain began"
    while (msg := await call.read()) is not grpc.aio.EOF:
        msgs.append(msg)
    assert await call.code() is grpc.StatusCode.OK
    assert len(msgs) == 5 and text_of(msgs) == "echo: a b c d e f [chunks=5]"
    assert await asyncio.to_thread(proc.popen.wait, 10) == 0
    assert "upstream stopped" in proc.log()
