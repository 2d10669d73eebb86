"""Per-key admission: allow-list and quota (403), RPM/TPM sliding windows (429 + Retry-After)."""
from __future__ import annotations

import pytest

from services.edge.errors import ApiError
from services.edge.limits import Limiter
from services.edge.store import KeyRecord


def key(id_=1, *, models=(), rpm=None, tpm=None, quota=None, used=0) -> KeyRecord:
    return KeyRecord(id=id_, name="k", prefix="gcli-abcdef", key_hash="h", enabled=True, created_at=0.0,
                     expires_at=None, revoked_at=None, models=tuple(models), rpm=rpm, tpm=tpm, quota=quota,
                     tokens_used=used)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


def refused(limiter: Limiter, k: KeyRecord, model: str = "gemini-2.5-pro") -> ApiError:
    with pytest.raises(ApiError) as info:
        limiter.admit(k, model)
    return info.value


def test_unlimited_key_always_admitted(clock):
    lim = Limiter(clock=clock)
    k = key()
    for _ in range(1000):
        lim.admit(k, "gemini-2.5-pro")


def test_model_not_allowed_is_403(clock):
    lim = Limiter(clock=clock)
    k = key(models=("gemini-2.5-*",))
    lim.admit(k, "gemini-2.5-flash")
    err = refused(lim, k, "gemini-3-pro-preview")
    assert err.status == 403 and err.code == "model_not_allowed" and err.retry_after is None


def test_rpm_sliding_window_and_retry_after(clock):
    lim = Limiter(clock=clock)
    k = key(rpm=3)
    for i in range(3):
        lim.admit(k, "m")
        clock.t += 10  # requests at 1000, 1010, 1020
    err = refused(lim, k)  # at 1030
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.retry_after == pytest.approx(30.0)  # the request at 1000 leaves the window at 1060
    clock.t = 1059.9
    refused(lim, k)
    clock.t = 1060.0
    lim.admit(k, "m")  # one slot freed; the refused attempts did not count
    err = refused(lim, k)
    assert err.retry_after == pytest.approx(10.0)


def test_rpm_is_per_key(clock):
    lim = Limiter(clock=clock)
    a, b = key(1, rpm=1), key(2, rpm=1)
    lim.admit(a, "m")
    lim.admit(b, "m")
    refused(lim, a)
    refused(lim, b)


def test_tpm_window(clock):
    lim = Limiter(clock=clock)
    k = key(tpm=100)
    lim.admit(k, "m")
    lim.record_tokens(k.id, 60)
    clock.t += 20
    lim.admit(k, "m")  # 60 < 100
    lim.record_tokens(k.id, 50)
    clock.t += 5
    err = refused(lim, k)  # 110 >= 100
    assert err.status == 429
    # Dropping the first 60 (recorded at 1000) brings the total under 100: at 1060, 35 s from now.
    assert err.retry_after == pytest.approx(35.0)
    clock.t = 1060.0
    lim.admit(k, "m")


def test_quota_is_403_and_counts_recorded_tokens(clock):
    lim = Limiter(clock=clock)
    k = key(quota=100, used=90)
    lim.sync_quota(k)
    lim.admit(k, "m")  # 90 < 100
    lim.record_tokens(k.id, 15)
    err = refused(lim, k)
    assert err.status == 403 and err.code == "insufficient_quota" and "105 of 100" in err.message


def test_quota_resync_from_store(clock):
    lim = Limiter(clock=clock)
    k = key(quota=100, used=10)
    lim.sync_quota(k, pending=0)
    lim.record_tokens(k.id, 50)
    assert lim.used(k) == 60
    # The ledger committed those 50 and someone else's 45; 5 more are still queued here.
    fresh = key(quota=100, used=105)
    lim.sync_quota(fresh, pending=5)
    assert lim.used(fresh) == 110
    assert refused(lim, fresh).status == 403


def test_allow_list_checked_before_limits(clock):
    lim = Limiter(clock=clock)
    k = key(models=("gemini-2.5-pro",), rpm=1, quota=0)
    assert refused(lim, k, "other").code == "model_not_allowed"


def test_prune_forgets_quiet_keys(clock):
    lim = Limiter(clock=clock)
    k = key(rpm=5, tpm=5)
    lim.admit(k, "m")
    lim.record_tokens(k.id, 1)
    clock.t += 61
    lim.prune()
    assert lim._requests == {} and lim._tokens == {}


# --- reservations ------------------------------------------------------------------------------

def test_reservations_hold_the_quota_while_requests_run(clock):
    lim = Limiter(clock=clock)
    k = key(quota=1000)
    lim.sync_quota(k)
    a = lim.reserve(k, "m", 600)
    b = lim.reserve(k, "m", 600)  # only 400 left: takes all of it
    assert (a.tokens, b.tokens) == (600, 400) and lim.reserved(k.id) == 1000
    err = refused_reserve(lim, k, 10)
    assert err.status == 429 and err.retry_after and "reserved" in err.message
    a.settle(300)  # used less than reserved: the rest comes back
    assert lim.used(k) == 300 and lim.reserved(k.id) == 400
    c = lim.reserve(k, "m", 1000)
    assert c.tokens == 300
    b.settle(450)  # the overrun of a clamped request is counted
    c.settle(300)
    assert lim.used(k) == 1050 and lim.reserved(k.id) == 0 and lim.running(k.id) == 0
    assert refused_reserve(lim, k, 1).status == 403


def test_settle_and_release_are_idempotent(clock):
    lim = Limiter(clock=clock)
    k = key(tpm=100)
    r = lim.reserve(k, "m", 50)
    r.settle(20)
    r.settle(20)
    r.release()
    assert lim.reserved(k.id) == 0 and lim._tokens[k.id].total == 20


def test_tpm_counts_reservations(clock):
    lim = Limiter(clock=clock)
    k = key(tpm=30)
    r = lim.reserve(k, "m", 65536)
    assert r.tokens == 30
    assert refused_reserve(lim, k, 1).status == 429
    r.settle(12)
    assert lim.reserve(k, "m", 100).tokens == 18


def test_concurrency_cap(clock):
    lim = Limiter(clock=clock)
    k = KeyRecord(id=7, name="k", prefix="p", key_hash="h", enabled=True, created_at=0.0, expires_at=None,
                  revoked_at=None, models=(), rpm=None, tpm=None, quota=None, max_concurrent=2)
    a, b = lim.reserve(k, "m"), lim.reserve(k, "m")
    err = refused_reserve(lim, k, 1)
    assert err.status == 429 and "concurrent" in err.message
    a.release()
    lim.reserve(k, "m")
    b.release()
    assert lim.running(k.id) == 1


def test_unlimited_key_holds_nothing(clock):
    lim = Limiter(clock=clock)
    k = key()
    r = lim.reserve(k, "m", 10**9, prompt=5)
    assert r.tokens == 0 and not r.counts and r.prompt == 5 and lim.running(k.id) == 0


def refused_reserve(limiter: Limiter, k: KeyRecord, estimate: int) -> ApiError:
    with pytest.raises(ApiError) as info:
        limiter.reserve(k, "m", estimate)
    return info.value
