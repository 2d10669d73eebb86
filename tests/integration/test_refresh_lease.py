"""The refresh lease itself, in process: real Redis, the simulator's token endpoint, and two
SharedState objects standing for two replicas (each with its own copy of the credential file)."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from services.upstream.oauth_credential import OAuthCredential
from services.upstream.errors import RefreshError
from services.upstream.refresh_lease import LEASE, TOKEN
from services.upstream.shared_state import DEAD, SharedState
from tests import harness
from tests.simulator.control import SimControl
from tests.support.servers import RedisServer


@pytest.fixture
async def replica_pair(simulator: harness.Proc, redis_url: str, tmp_path: Path):
    """make(rt) → two OAuthCredential objects for `rt`, one per simulated replica."""
    http = httpx.AsyncClient(trust_env=False)
    states = [SharedState(redis_url, refresh_timeout=10), SharedState(redis_url, refresh_timeout=10)]
    for s in states:
        await s.start(lambda: ())
        assert s.connected

    def make(rt: str) -> list[OAuthCredential]:
        creds = []
        for i, s in enumerate(states):
            path = harness.write_credential(tmp_path / f"replica{i}" / "seat.json", rt)
            cred = OAuthCredential(path, orjson.loads(path.read_bytes()), http=http,
                                   token_url=f"{simulator.url}/token", client_id="c", client_secret="s", timeout=10)
            cred.shared, cred.on_change = s, s.credential_changed
            creds.append(cred)
        return creds

    yield make
    for s in states:
        await s.close()
    await http.aclose()


def refreshes(sim: SimControl, rt: str) -> list[dict]:
    return sim.requests(op="refresh", account=rt)


async def test_a_lease_left_by_a_dead_replica_expires_and_another_refreshes(sim: SimControl, replica_pair,
                                                                            redis_server: RedisServer) -> None:
    rt = f"1//lease-{uuid.uuid4().hex}"
    first, second = replica_pair(rt)
    # A replica took the lease and died before refreshing: nobody renews it.
    assert redis_server.command("SET", LEASE + first.share_key, "dead-replica", "PX", "1500").startswith(b"+OK")
    headers = await asyncio.wait_for(first.auth_headers(), 30)
    assert len(refreshes(sim, rt)) == 1
    assert redis_server.command("EXISTS", LEASE + first.share_key) == b":0\r\n"  # released by compare-and-delete
    stored = redis_server.command("GET", TOKEN + first.share_key)
    assert first.access_token.encode() in stored
    # The other replica takes that token: no second refresh.
    assert await second.auth_headers() == headers
    assert len(refreshes(sim, rt)) == 1 and first.shared.tokens.counts["refreshed"] == 1
    assert second.shared.tokens.counts == {"refreshed": 0, "taken": 1, "local": 0}


async def test_a_refused_refresh_leaves_a_dead_mark_the_waiting_replica_obeys(sim: SimControl, replica_pair,
                                                                              redis_server: RedisServer) -> None:
    rt = f"1//refused-{uuid.uuid4().hex}"
    first, second = replica_pair(rt)
    sim.revoke(rt)  # its grant is refused (invalid_grant)
    sim.config(latency=0.3)  # the replica holding the lease waits for the answer a while
    results = await asyncio.gather(first.auth_headers(), second.auth_headers(), return_exceptions=True)
    assert all(isinstance(r, RefreshError) and r.permanent for r in results), results
    assert len(refreshes(sim, rt)) == 1  # the replica that waited did not try the refused grant
    assert first.state.value == second.state.value == "DEAD"
    assert first.fingerprint().encode() in redis_server.command("HGET", DEAD, first.share_key)


async def test_a_rotated_refresh_token_reaches_the_other_replica(sim: SimControl, replica_pair,
                                                                 redis_server: RedisServer) -> None:
    rt = f"1//rot-{uuid.uuid4().hex}"
    first, second = replica_pair(rt)
    await first.auth_headers()
    # A token endpoint that rotates the refresh token: the record carries it with its lineage.
    rotated = f"1//rot-new-{uuid.uuid4().hex}"
    first._data["refresh_token"] = rotated
    first._lineage.append(first.fingerprint())
    record = first.token_record()
    assert record is not None and record["rt"] == rotated and len(record["fp"]) == 2
    assert second.take_token(record, None)
    assert second._data["refresh_token"] == rotated
    # Its file still holds the older token of the same login: not a new login.
    assert not second.reload({"refresh_token": rt, "access_token": "x"})


async def test_close_is_bounded_when_a_sharing_task_lets_a_cancellation_pass(redis_url: str) -> None:
    """Shutdown never waits for ever on a sharing task: one that carried on after its first
    cancellation (a client library that turned it into an error or kept reading; seen as a
    120 s teardown hang under load) is cancelled again, and the clients are closed."""
    state = SharedState(redis_url, refresh_timeout=10)
    await state.start(lambda: ())
    assert state.connected
    cancels = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancels.append(1)
                if len(cancels) > 1:
                    raise

    task = asyncio.create_task(stubborn(), name="sharing-stubborn")
    state._tasks.add(task)
    task.add_done_callback(state._tasks.discard)
    await asyncio.sleep(0)  # it runs up to its sleep
    listener = next(t for t in state._tasks if t.get_name() == "sharing-listener")
    closing = asyncio.create_task(state.close())
    try:
        # A hang detector far above close()'s own bound (in a task of its own: the old close()
        # swallowed its caller's cancellation too).
        done, _ = await asyncio.wait({closing}, timeout=60)
        assert closing in done, "SharedState.close() hung on a task that ignored one cancellation"
        assert task.cancelled() and len(cancels) == 2
        assert listener.done() and not state._tasks
    finally:
        closing.cancel()
        task.cancel()
