"""Where the key is read from (and in which order), and the key cache's freshness rules."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from services.edge.auth import KeyCache, authenticate, extract_key
from services.edge.errors import ApiError
from services.edge.limits import Limiter
from services.edge.store import NewKey, SQLiteLicenseStore, UsageRow, generate_key, hash_key, key_prefix, open_store

SECRET = b"auth-test-secret"


@pytest.mark.parametrize("headers, query, expected", [
    ({"authorization": "Bearer A"}, {}, ("A", "bearer")),
    ({"authorization": "bearer A"}, {}, ("A", "bearer")),
    ({"authorization": "BEARER   A  "}, {}, ("A", "bearer")),
    ({"authorization": "A"}, {}, ("A", "authorization")),
    ({"x-goog-api-key": "G"}, {}, ("G", "x-goog-api-key")),
    ({}, {"key": "Q"}, ("Q", "query")),
    ({"x-api-key": "X"}, {}, ("X", "x-api-key")),
    ({"x-api-key": "X"}, {"key": "Q"}, ("X", "x-api-key")),
    ({"authorization": "Bearer A", "x-api-key": "X"}, {}, ("A", "bearer")),
    # precedence: Bearer > bare Authorization > x-goog-api-key > ?key=
    ({"authorization": "Bearer A", "x-goog-api-key": "G"}, {"key": "Q"}, ("A", "bearer")),
    ({"authorization": "A", "x-goog-api-key": "G"}, {"key": "Q"}, ("A", "authorization")),
    ({"x-goog-api-key": "G"}, {"key": "Q"}, ("G", "x-goog-api-key")),
    # empty values fall through to the next source
    ({"authorization": "Bearer ", "x-goog-api-key": "G"}, {}, ("G", "x-goog-api-key")),
    ({"authorization": "  ", "x-goog-api-key": " "}, {"key": "Q"}, ("Q", "query")),
    ({}, {}, (None, "")),
    ({}, {"key": ""}, (None, "")),
])
def test_extract_key_precedence(headers, query, expected):
    assert extract_key(headers, query) == expected


@pytest.fixture
async def store(license_db: str):
    """The key cache on either engine (SQLite file, PostgreSQL database)."""
    s = open_store(license_db)
    yield s
    await s.close()


async def _new(store, **kw):
    key = generate_key()
    rec = await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name="n", **kw))
    return key, rec


async def test_lookup_known_and_unknown(store):
    key, rec = await _new(store)
    cache = KeyCache(store, SECRET)
    got = await cache.lookup(key)
    assert got is not None and got.id == rec.id
    assert await cache.lookup(key + "nope") is None
    assert await cache.lookup("") is None


async def test_revocation_reaches_cache_through_revision(store, license_db):
    key, rec = await _new(store)
    cache = KeyCache(store, SECRET, ttl=3600)
    await cache.poll_once()
    assert (await cache.lookup(key)).revoked_at is None
    # A second store instance plays the admin CLI (another process, same database).
    cli = open_store(license_db)
    try:
        await cli.revoke(rec.id)
    finally:
        await cli.close()
    assert (await cache.lookup(key)).revoked_at is None  # still cached: nobody polled yet
    await cache.poll_once()
    assert (await cache.lookup(key)).revoked_at is not None


async def test_background_poll_invalidates(store):
    key, rec = await _new(store)
    cache = KeyCache(store, SECRET, refresh=0.02, ttl=3600)
    cache.start()
    try:
        await asyncio.sleep(0.05)
        assert (await cache.lookup(key)).enabled
        await store.set_enabled(rec.id, False)
        # Polled every 20 ms; 30 s only guards against a hang (100 tries of 10 ms, about 1 s,
        # were too few for a starved loop polling PostgreSQL).
        async with asyncio.timeout(30):
            while (await cache.lookup(key)).enabled:
                await asyncio.sleep(0.01)
    finally:
        await cache.stop()


async def test_new_key_visible_after_negative_cache(store):
    cache = KeyCache(store, SECRET)
    await cache.poll_once()
    key = generate_key()
    assert await cache.lookup(key) is None
    await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name="late"))
    await cache.poll_once()  # creation bumps the revision too
    assert await cache.lookup(key) is not None


async def test_concurrent_lookups_share_one_read(store):
    key, _ = await _new(store)
    reads = 0
    original = store.find_by_hash

    async def counting(h):
        nonlocal reads
        reads += 1
        return await original(h)

    store.find_by_hash = counting
    cache = KeyCache(store, SECRET)
    results = await asyncio.gather(*(cache.lookup(key) for _ in range(50)))
    assert all(r is not None for r in results) and reads == 1


async def test_lookup_syncs_quota_with_pending_tokens(store):
    key, rec = await _new(store, quota=1000)
    await store.record_usage([UsageRow(key_id=rec.id, api="gemini", op="generate", model="m", status=200,
                                       latency_ms=1, total_tokens=40)])
    lim = Limiter()
    cache = KeyCache(store, SECRET, limiter=lim, pending_tokens=lambda key_id: 7)
    got = await cache.lookup(key)
    assert got.tokens_used == 40 and lim.used(got) == 47


def _request(app, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": query,
                    "app": app})


async def test_authenticate_outcomes(store):
    key, rec = await _new(store)
    cache = KeyCache(store, SECRET)
    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(keys=cache)))
    got = await authenticate(_request(app, [], b"key=" + key.encode()))
    assert got.id == rec.id
    with pytest.raises(ApiError) as info:
        await authenticate(_request(app, []))
    assert info.value.status == 401 and info.value.code == "missing_api_key"
    await store.revoke(rec.id)
    cache.invalidate()
    with pytest.raises(ApiError) as info:
        await authenticate(_request(app, [(b"authorization", b"Bearer " + key.encode())]))
    assert info.value.status == 401 and info.value.code == "key_revoked" and key not in info.value.message


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_store_failure_is_503_not_500(tmp_path, engine):
    if engine == "sqlite":
        broken = SQLiteLicenseStore(tmp_path / "gone.db")
        await broken.close()
    else:
        from tests.harness import free_port

        broken = open_store(f"postgresql://gw@127.0.0.1:{free_port()}/down")  # nothing listens there
    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(keys=KeyCache(broken, SECRET))))
    with pytest.raises(ApiError) as info:
        await authenticate(_request(app, [(b"x-goog-api-key", b"gcli-whatever")]))
    assert info.value.status == 503 and info.value.retry_after
