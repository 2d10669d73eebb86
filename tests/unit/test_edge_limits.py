"""Per-key admission: allow-list and quota (403), RPM/TPM sliding windows (429 + Retry-After),
reservations and the concurrency cap.

The table of behaviours runs against both implementations of the limiter interface: the
in-process `Limiter` and `RedisLimiter` against a real redis-server on loopback (same fake clock,
passed to Redis as the time). Tests of the in-process bookkeeping alone say so in their name.
"""
from __future__ import annotations

import pytest

from services.edge.errors import ApiError
from services.edge.limits import Limiter
from services.edge.redis_conn import connect
from services.edge.redis_limits import RedisLimiter
from services.edge.store import KeyRecord


def key(id_=1, *, models=(), rpm=None, tpm=None, quota=None, used=0, max_concurrent=None) -> KeyRecord:
    return KeyRecord(id=id_, name="k", prefix="gcli-abcdef", key_hash="h", enabled=True, created_at=0.0,
                     expires_at=None, revoked_at=None, models=tuple(models), rpm=rpm, tpm=tpm, quota=quota,
                     tokens_used=used, max_concurrent=max_concurrent)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def lim(request, clock):
    """Each implementation in turn, on the test's clock."""
    if request.param == "memory":
        yield Limiter(clock=clock)
        return
    url = request.getfixturevalue("redis_url")
    limiter = RedisLimiter(connect(url, 2.0), clock=clock, timeout=2.0)
    try:
        yield limiter
    finally:
        await limiter.close()


async def settle(limiter, res, actual: int) -> None:
    """Settle, and wait for a shared limiter to have sent it."""
    res.settle(actual)
    await drained(limiter)


async def drained(limiter) -> None:
    if isinstance(limiter, RedisLimiter):
        await limiter.drain()


async def state(limiter, key_id: int) -> tuple[int, int]:
    """(requests running, tokens reserved)."""
    if isinstance(limiter, RedisLimiter):
        return await limiter.state(key_id)
    return limiter.running(key_id), limiter.reserved(key_id)


async def refused(limiter, k: KeyRecord, model: str = "gemini-2.5-pro") -> ApiError:
    with pytest.raises(ApiError) as info:
        await limiter.admit(k, model)
    await drained(limiter)
    return info.value


async def refused_reserve(limiter, k: KeyRecord, estimate: int) -> ApiError:
    with pytest.raises(ApiError) as info:
        await limiter.reserve(k, "m", estimate)
    return info.value


async def test_unlimited_key_always_admitted(lim):
    k = key()
    for _ in range(1000):
        await lim.admit(k, "gemini-2.5-pro")


async def test_model_not_allowed_is_403(lim):
    k = key(models=("gemini-2.5-*",))
    await lim.admit(k, "gemini-2.5-flash")
    err = await refused(lim, k, "gemini-3-pro-preview")
    assert err.status == 403 and err.code == "model_not_allowed" and err.retry_after is None


async def test_rpm_sliding_window_and_retry_after(lim, clock):
    k = key(rpm=3)
    for i in range(3):
        await lim.admit(k, "m")
        clock.t += 10  # requests at 1000, 1010, 1020
    err = await refused(lim, k)  # at 1030
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.retry_after == pytest.approx(30.0)  # the request at 1000 leaves the window at 1060
    clock.t = 1059.9
    await refused(lim, k)
    clock.t = 1060.0
    await lim.admit(k, "m")  # one slot freed; the refused attempts did not count
    err = await refused(lim, k)
    assert err.retry_after == pytest.approx(10.0)


async def test_rpm_is_per_key(lim):
    a, b = key(1, rpm=1), key(2, rpm=1)
    await lim.admit(a, "m")
    await lim.admit(b, "m")
    await refused(lim, a)
    await refused(lim, b)


async def test_tpm_window(lim, clock):
    k = key(tpm=100)
    await settle(lim, await lim.reserve(k, "m", 1), 60)
    clock.t += 20
    await settle(lim, await lim.reserve(k, "m", 1), 50)  # 60 < 100
    clock.t += 5
    err = await refused(lim, k)  # 110 >= 100
    assert err.status == 429
    # Dropping the first 60 (recorded at 1000) brings the total under 100: at 1060, 35 s from now.
    assert err.retry_after == pytest.approx(35.0)
    clock.t = 1060.0
    await lim.admit(k, "m")


async def test_quota_is_403_and_counts_settled_tokens(lim):
    k = key(quota=100, used=90)
    lim.sync_quota(k)
    await settle(lim, await lim.reserve(k, "m", 1), 15)  # admitted: 90 < 100
    err = await refused(lim, k)
    assert err.status == 403 and err.code == "insufficient_quota" and "105 of 100" in err.message
    assert lim.used(k) == 105


async def test_allow_list_checked_before_limits(lim):
    k = key(models=("gemini-2.5-pro",), rpm=1, quota=0)
    assert (await refused(lim, k, "other")).code == "model_not_allowed"


# --- reservations ------------------------------------------------------------------------------

async def test_reservations_hold_the_quota_while_requests_run(lim):
    k = key(quota=1000)
    lim.sync_quota(k)
    a = await lim.reserve(k, "m", 600)
    b = await lim.reserve(k, "m", 600)  # only 400 left: takes all of it
    assert (a.tokens, b.tokens) == (600, 400) and await state(lim, k.id) == (2, 1000)
    err = await refused_reserve(lim, k, 10)
    assert err.status == 429 and err.retry_after and "reserved" in err.message
    await settle(lim, a, 300)  # used less than reserved: the rest comes back
    assert await state(lim, k.id) == (1, 400)
    c = await lim.reserve(k, "m", 1000)
    assert c.tokens == 300 and lim.used(k) == 300
    await settle(lim, b, 450)  # the overrun of a clamped request is counted
    await settle(lim, c, 300)
    assert await state(lim, k.id) == (0, 0)
    err = await refused_reserve(lim, k, 1)
    assert err.status == 403 and "1050 of 1000" in err.message


async def test_settle_and_release_are_idempotent(lim, clock):
    k = key(tpm=100)
    r = await lim.reserve(k, "m", 50)
    r.settle(20)
    r.settle(20)
    r.release()
    await drained(lim)
    assert await state(lim, k.id) == (0, 0)
    assert (await lim.reserve(k, "m", 1000)).tokens == 80  # 20 counted once


async def test_tpm_counts_reservations(lim):
    k = key(tpm=30)
    r = await lim.reserve(k, "m", 65536)
    assert r.tokens == 30
    assert (await refused_reserve(lim, k, 1)).status == 429
    await settle(lim, r, 12)
    assert (await lim.reserve(k, "m", 100)).tokens == 18


async def test_concurrency_cap(lim):
    k = key(7, max_concurrent=2)
    a, b = await lim.reserve(k, "m"), await lim.reserve(k, "m")
    err = await refused_reserve(lim, k, 1)
    assert err.status == 429 and "concurrent" in err.message and err.retry_after
    await settle(lim, a, 0)
    await lim.reserve(k, "m")
    await settle(lim, b, 0)
    assert (await state(lim, k.id))[0] == 1


async def test_unlimited_key_holds_nothing(lim):
    k = key()
    r = await lim.reserve(k, "m", 10**9, prompt=5)
    assert r.tokens == 0 and not r.counts and r.prompt == 5 and await state(lim, k.id) == (0, 0)


# --- the in-process limiter's own bookkeeping ----------------------------------------------------

async def test_in_process_quota_counts_recorded_tokens(clock):
    lim = Limiter(clock=clock)
    k = key(quota=100, used=90)
    lim.sync_quota(k)
    await lim.admit(k, "m")  # 90 < 100
    lim.record_tokens(k.id, 15)
    err = await refused(lim, k)
    assert err.status == 403 and "105 of 100" in err.message


async def test_in_process_tpm_counts_recorded_tokens(clock):
    lim = Limiter(clock=clock)
    k = key(tpm=100)
    lim.record_tokens(k.id, 100)
    assert (await refused(lim, k)).retry_after == pytest.approx(60.0)


async def test_in_process_quota_resync_from_store(clock):
    lim = Limiter(clock=clock)
    k = key(quota=100, used=10)
    lim.sync_quota(k, pending=0)
    lim.record_tokens(k.id, 50)
    assert lim.used(k) == 60
    # The ledger committed those 50 and someone else's 45; 5 more are still queued here.
    fresh = key(quota=100, used=105)
    lim.sync_quota(fresh, pending=5)
    assert lim.used(fresh) == 110
    assert (await refused(lim, fresh)).status == 403


async def test_in_process_prune_forgets_quiet_keys(clock):
    lim = Limiter(clock=clock)
    k = key(rpm=5, tpm=5)
    await lim.admit(k, "m")
    lim.record_tokens(k.id, 1)
    clock.t += 61
    lim.prune()
    assert lim._requests == {} and lim._tokens == {}
