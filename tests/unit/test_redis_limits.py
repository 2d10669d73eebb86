"""The Redis limiter as several edge replicas see it: limits shared across replicas, leases of a
dead replica expiring, the quota counted before the ledger has the rows, and Redis unreachable
or hung answered with a 503 (never a hang). Real redis-server on loopback (tests/support)."""
from __future__ import annotations

import asyncio
import socket

import pytest

from services.edge.errors import ApiError
from services.edge.redis_conn import connect
from services.edge.redis_limits import LEASE_SECONDS, RedisLimiter
from tests.harness import LOOPBACK, free_port
from tests.unit.test_edge_limits import Clock, key


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def replicas(redis_url, clock):
    """Three limiters, as three edge processes would have: each its own client and identity."""
    made = [RedisLimiter(connect(redis_url, 2.0), clock=clock, timeout=2.0) for _ in range(3)]
    yield made
    for lim in made:
        await lim.close()


async def refused(lim: RedisLimiter, k, estimate: int = 1) -> ApiError:
    with pytest.raises(ApiError) as info:
        await lim.reserve(k, "m", estimate)
    return info.value


async def test_rpm_is_shared_by_replicas(replicas):
    a, b, c = replicas
    k = key(rpm=3)
    for lim in replicas:
        await lim.admit(k, "m")
    for lim in replicas:
        err = await refused(lim, k)
        assert err.status == 429 and "requests-per-minute" in err.message


async def test_concurrency_cap_is_shared_and_freed_by_settling(replicas):
    a, b, c = replicas
    k = key(max_concurrent=2)
    ra = await a.reserve(k, "m")
    await b.reserve(k, "m")
    assert "concurrent" in (await refused(c, k)).message
    ra.release()
    await a.drain()
    await c.reserve(k, "m")


async def test_quota_counts_settlements_before_the_ledger_has_them(replicas):
    a, b, _ = replicas
    k = key(quota=1000, used=0)
    a.sync_quota(k)
    b.sync_quota(k)  # both read the ledger at 0; neither will see a new reading in this test
    r = await a.reserve(k, "m", 700)
    assert r.tokens == 700
    assert (await b.reserve(k, "m", 700)).tokens == 300  # the reservation on replica a holds the rest
    assert (await refused(b, k)).status == 429
    r.settle(650)
    await a.drain()
    # b's ledger still says 0, but Redis counts a's 650 and b's 300 in flight.
    assert (await b.reserve(k, "m", 700)).tokens == 50


async def test_higher_ledger_reading_raises_the_count(replicas):
    a, _, _ = replicas
    k = key(quota=100, used=10)
    a.sync_quota(k)
    (await a.reserve(k, "m", 5)).release()
    # Usage written by an edge that does not use Redis, seen when the record is read again.
    a.sync_quota(key(quota=100, used=100))
    err = await refused(a, key(quota=100, used=100))
    assert err.status == 403 and "100 of 100" in err.message


async def test_leases_of_a_dead_replica_expire(replicas, clock):
    a, b, _ = replicas
    k = key(quota=1000, max_concurrent=1)
    await a.reserve(k, "m", 800)  # replica a dies with this request running: no settle, no renewal
    assert (await b.state(k.id)) == (1, 800)
    assert "concurrent" in (await refused(b, k)).message
    clock.t += LEASE_SECONDS + 0.5
    r = await b.reserve(k, "m", 900)
    assert r.tokens == 900 and (await b.state(k.id)) == (1, 900)


async def test_a_live_replica_renews_its_leases(replicas, clock):
    a, b, _ = replicas
    k = key(max_concurrent=1)
    res = await a.reserve(k, "m")
    for _ in range(3):
        clock.t += LEASE_SECONDS * 0.6
        await a.renew_once()
    assert "concurrent" in (await refused(b, k)).message
    res.release()
    await a.drain()
    await b.reserve(k, "m")


async def test_redis_unreachable_refuses_limited_keys_with_503():
    lim = RedisLimiter(connect(f"redis://{LOOPBACK}:{free_port()}/0", 0.3), timeout=0.3)
    try:
        err = await refused(lim, key(rpm=10))
        assert err.status == 503 and err.code == "limits_unavailable" and err.retry_after
        assert LOOPBACK not in err.message and "redis" not in err.message.lower()
        # A key without limits needs no shared state: it is served.
        (await lim.reserve(key(), "m", 100)).release()
    finally:
        await lim.close()


async def test_hung_redis_is_a_503_not_a_hang():
    # Accepts connections and never answers.
    server = socket.socket()
    server.bind((LOOPBACK, 0))
    server.listen(16)
    port = server.getsockname()[1]
    lim = RedisLimiter(connect(f"redis://{LOOPBACK}:{port}/0", 0.3), timeout=0.3)
    try:
        err = await asyncio.wait_for(refused(lim, key(quota=10)), timeout=30)
        assert err.status == 503 and err.code == "limits_unavailable"
    finally:
        await asyncio.wait_for(lim.close(), timeout=30)
        server.close()
