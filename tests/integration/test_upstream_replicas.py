"""Two real upstream processes sharing one pool's state through a real Redis (REDIS_URL).

Each replica reads its own copy of the credential files (as pods each mounting the same Secret),
so nothing but Redis tells one replica what the other did: without REDIS_URL every test here
fails (each replica refreshes for itself, never hears of the other's 429s or DEAD marks).
Calls go to each replica directly over gRPC with internal credentials.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests import harness
from tests.cloud_keys import write_service_account
from tests.integration.test_upstream import MODEL, Client, details, text_of
from tests.simulator.control import SimControl
from tests.support.servers import start_redis

FAST = {"POOL_RELOAD_SECONDS": "0.2", "STARTUP_WARMUP": "false", "QUOTA_POLL_SECONDS": "0"}


async def until(check, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {what}"
        await asyncio.sleep(0.1)


def seats(base: Path, replicas: int, names: str) -> tuple[list[Path], dict[str, str]]:
    """`replicas` directories, each with its own copy of one credential file per name."""
    tokens = {name: f"1//rep-{name}-{uuid.uuid4().hex}" for name in names}
    dirs = []
    for i in range(replicas):
        d = base / f"replica{i}"
        for name, rt in tokens.items():
            harness.write_credential(d / f"{name}.json", rt)
        dirs.append(d)
    return dirs, tokens


def refreshes(sim: SimControl, rt: str, *, answered: bool = False) -> int:
    return len([r for r in sim.requests(op="refresh", account=rt) if not answered or r["status"] == 200])


def generates(sim: SimControl, rt: str) -> int:
    return len([r for r in sim.requests(account=rt) if r["op"] in ("generate", "stream")])


@pytest.fixture
async def replicas(upstream_factory, redis_url: str, tmp_path: Path):
    clients: list[Client] = []

    def start(dirs: list[Path | None], env: dict[str, str] | None = None,
              per_replica: list[dict[str, str]] | None = None) -> list[tuple[harness.Proc, Client]]:
        """One upstream per credential directory (None: members come from `per_replica` env)."""
        out = []
        for i, d in enumerate(dirs):
            own = per_replica[i] if per_replica else {}
            proc = upstream_factory(d, {"REDIS_URL": redis_url, **FAST, **(env or {}), **own})
            clients.append(Client(proc))
            out.append((proc, clients[-1]))
        return out

    yield start
    for c in clients:
        await c.close()


async def test_concurrent_calls_on_two_replicas_refresh_each_credential_once(sim: SimControl, replicas,
                                                                              tmp_path: Path) -> None:
    dirs, tokens = seats(tmp_path, 2, "ab")
    (_, a), (_, b) = replicas(dirs)
    # Both replicas hold expired access tokens for both credentials; 24 calls at once.
    calls = [c.generate(f"call {i}", stream=i % 2 == 0) for i in range(12) for c in (a, b)]
    answers = await asyncio.gather(*calls)
    assert all(text_of(m).startswith("echo: call ") for m in answers)
    assert {name: refreshes(sim, rt) for name, rt in tokens.items()} == {"a": 1, "b": 1}
    # And later calls (tokens now valid on both) refresh nothing.
    await asyncio.gather(a.generate("again"), b.generate("again"))
    assert {name: refreshes(sim, rt) for name, rt in tokens.items()} == {"a": 1, "b": 1}


async def test_vertex_service_account_gets_one_grant_for_both_replicas(sim: SimControl, replicas,
                                                                        simulator: harness.Proc,
                                                                        tmp_path: Path) -> None:
    email = f"svc-{uuid.uuid4().hex[:8]}@proj-rep.iam.gserviceaccount.com"
    first = tmp_path / "replica0" / "svc.json"
    public = write_service_account(first, email, "proj-rep", f"{simulator.url}/token")
    sim.add_service_account(email, public, project="proj-rep", token_ttl=3600)
    second = tmp_path / "replica1" / "svc.json"
    second.parent.mkdir()
    second.write_bytes(first.read_bytes())
    (_, a), (_, b) = replicas([None, None], per_replica=[{"VERTEX_CREDENTIALS": str(first)},
                                                         {"VERTEX_CREDENTIALS": str(second)}])
    answers = await asyncio.gather(*(c.generate(f"v{i}", stream=i % 2 == 1) for i in range(8) for c in (a, b)))
    assert all(text_of(m).startswith("echo: v") for m in answers)
    grants = [r for r in sim.requests(op="refresh") if r["account"] == email]
    assert len(grants) == 1 and grants[0]["status"] == 200


async def test_a_429_seen_by_one_replica_cools_the_member_on_the_other(sim: SimControl, replicas,
                                                                       tmp_path: Path) -> None:
    dirs, tokens = seats(tmp_path, 2, "s")
    rt = tokens["s"]
    (_, a), (_, b) = replicas(dirs)
    await asyncio.gather(a.generate("warm"), b.generate("warm"))
    sim.add_fault(account=rt, op="stream", kind="429", model=MODEL, retry_delay="10s")

    with pytest.raises(grpc.aio.AioRpcError) as seen_by_a:
        await a.generate("hits the 429")
    assert details(seen_by_a.value)[0].reason == "ALL_CREDENTIALS_COOLING"

    async def cooling_on_b() -> float:
        return (await b.credentials())["s"].cooling_until.get(MODEL, 0.0)

    cooled_until = await until(cooling_on_b, "replica B shows the member cooling for the model")
    sent = generates(sim, rt)
    with pytest.raises(grpc.aio.AioRpcError) as on_b:
        await b.generate("must not reach the backend")
    info, retry = details(on_b.value)
    assert on_b.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and info.reason == "ALL_CREDENTIALS_COOLING"
    assert retry is not None and retry.retry_delay.seconds >= 1
    assert generates(sim, rt) == sent  # B did not send it to that credential
    # Another model is not cooling on B.
    assert text_of(await b.generate("other model", model="gemini-2.5-pro")) == "echo: other model"

    # Once the hint has passed, B sends that model to the credential again.
    await asyncio.sleep(max(0.0, cooled_until - time.time()) + 0.2)
    assert text_of(await b.generate("after the hint")) == "echo: after the hint"
    assert generates(sim, rt) == sent + 2


async def test_a_credential_revoked_on_one_replica_is_dead_on_the_other(sim: SimControl, replicas,
                                                                        tmp_path: Path) -> None:
    dirs, tokens = seats(tmp_path, 2, "r")
    rt = tokens["r"]
    (_, a), (_, b) = replicas(dirs)
    await asyncio.gather(a.generate("warm"), b.generate("warm"))
    sim.revoke(rt)  # invalid_grant from now on, and the access token stops working

    with pytest.raises(grpc.aio.AioRpcError) as on_a:
        await a.generate("revoked")
    assert details(on_a.value)[0].reason == "CREDENTIALS_DEAD"

    async def state_on_b() -> bool:
        return (await b.credentials())["r"].state == (await b.credentials())["r"].DEAD

    await until(state_on_b, "replica B lists the credential as DEAD")
    assert "invalid_grant" in (await b.credentials())["r"].detail
    asked = refreshes(sim, rt)
    with pytest.raises(grpc.aio.AioRpcError) as on_b:
        await b.generate("dead here too")
    assert details(on_b.value)[0].reason == "CREDENTIALS_DEAD"
    assert refreshes(sim, rt) == asked  # B did not try the revoked grant itself

    # A new login written to B's file revives it on B (A's file still holds the revoked one).
    new_rt = f"1//rep-new-{uuid.uuid4().hex}"
    harness.write_credential(dirs[1] / "r.json", new_rt)

    async def ready_on_b() -> bool:
        return (await b.credentials())["r"].state == (await b.credentials())["r"].READY

    await until(ready_on_b, "replica B revives the credential from its rewritten file")
    assert text_of(await b.generate("new login")) == "echo: new login"
    assert (await a.credentials())["r"].state == (await a.credentials())["r"].DEAD
    # The same login reaching A's file: READY there too, with B's token (no second refresh).
    harness.write_credential(dirs[0] / "r.json", new_rt)

    async def ready_on_a() -> bool:
        return (await a.credentials())["r"].state == (await a.credentials())["r"].READY

    await until(ready_on_a, "replica A revives the credential from its rewritten file")
    assert text_of(await a.generate("new login on A")) == "echo: new login on A"
    assert refreshes(sim, new_rt) == 1


async def test_killing_one_replica_mid_run_the_other_serves_the_rest(sim: SimControl, replicas,
                                                                     tmp_path: Path) -> None:
    dirs, tokens = seats(tmp_path, 2, "xy")
    (proc_a, a), (_, b) = replicas(dirs)
    sim.config(chunk_delay=0.02)
    total, served, killed = 40, [], asyncio.Event()

    async def one(i: int) -> None:
        # Like the edge with both upstreams as targets: a call the dead replica lost goes to the other.
        first = a if i % 2 == 0 and not killed.is_set() else b
        try:
            msgs = await first.generate(f"n{i} [chunks=4]")
        except grpc.aio.AioRpcError as err:
            assert first is a and killed.is_set(), err
            msgs = await b.generate(f"n{i} [chunks=4]")
        served.append(text_of(msgs))

    async def killer() -> None:
        while len(served) < 10:
            await asyncio.sleep(0.02)
        proc_a.popen.send_signal(signal.SIGKILL)
        killed.set()

    sem = asyncio.Semaphore(6)

    async def limited(i: int) -> None:
        async with sem:
            await one(i)

    await asyncio.gather(killer(), *(limited(i) for i in range(total)))
    assert proc_a.popen.wait(10) == -signal.SIGKILL
    assert sorted(served) == sorted(f"echo: n{i} [chunks=4]" for i in range(total))
    assert {name: refreshes(sim, rt) for name, rt in tokens.items()} == {"x": 1, "y": 1}
    assert (await b.credentials())["x"].state == (await b.credentials())["x"].READY


async def test_redis_hung_or_gone_the_replica_serves_on_local_state(sim: SimControl, upstream_factory,
                                                                   tmp_path: Path) -> None:
    server = start_redis()  # its own server: this test freezes it
    try:
        dirs, tokens = seats(tmp_path, 1, "h")
        proc = upstream_factory(dirs[0], {"REDIS_URL": server.url(), **FAST})
        client = Client(proc)
        try:
            sharing = (await client.stub.ListModels(harness_list(), timeout=20)).sharing
            assert sharing.configured and sharing.connected and sharing.replica_id
            assert text_of(await client.generate("shared")) == "echo: shared"

            os.kill(server.popen.pid, signal.SIGSTOP)  # Redis hangs: commands time out
            sim.expire(tokens["h"])  # the next call needs a refresh, which asks Redis first
            assert text_of(await client.generate("frozen redis")) == "echo: frozen redis"
            sharing = (await client.stub.ListModels(harness_list(), timeout=20)).sharing
            assert sharing.configured and not sharing.connected and "Redis" in sharing.detail
            assert "127.0.0.1" not in sharing.detail
            metrics = httpx.get(f"http://127.0.0.1:{proc.extra['metrics_port']}/metrics", timeout=10).text
            assert "gateway_upstream_sharing_up 0.0" in metrics

            os.kill(server.popen.pid, signal.SIGCONT)

            async def connected() -> bool:
                return (await client.stub.ListModels(harness_list(), timeout=20)).sharing.connected

            await until(connected, "the replica shares state again once Redis answers")
            server.stop()  # gone for good: still serving
            sim.expire(tokens["h"])
            assert text_of(await client.generate("no redis")) == "echo: no redis"
            assert refreshes(sim, tokens["h"]) == 3
        finally:
            await client.close()
    finally:
        if server.popen.poll() is None:
            os.kill(server.popen.pid, signal.SIGCONT)  # a stopped process would not take SIGTERM
        server.stop()


async def test_redis_unreachable_from_the_start_the_replica_serves_and_says_so(sim: SimControl, upstream_factory,
                                                                              tmp_path: Path) -> None:
    dirs, tokens = seats(tmp_path, 1, "u")
    nothing = f"redis://127.0.0.1:{harness.free_port()}/0"
    proc = upstream_factory(dirs[0], {"REDIS_URL": nothing, **FAST})
    client = Client(proc)
    try:
        assert text_of(await client.generate("alone")) == "echo: alone"
        sharing = (await client.stub.ListModels(harness_list(), timeout=20)).sharing
        assert sharing.configured and not sharing.connected and sharing.detail
        assert refreshes(sim, tokens["u"]) == 1
    finally:
        await client.close()


def harness_list():
    from gemini_cli.upstream.v1 import upstream_pb2

    return upstream_pb2.ListModelsRequest()
