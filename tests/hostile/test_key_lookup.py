"""Key lookup cannot leak how much of a key matched (inspected, not timed).

A key is never compared as text: the edge computes HMAC-SHA256(secret, key) and looks that up
(an index on a keyed hash: how much of a guessed key matches a real one says nothing about how
close the hashes are), then compares the hashes once more with hmac.compare_digest. These
tests check that with the real store and cache, by watching what they are handed.
"""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from services.edge import store as store_module
from services.edge.auth import KeyCache
from services.edge.store import NewKey, SQLiteLicenseStore, generate_key, hash_key, key_prefix

SECRET = b"unit-test-secret-0123456789"


class RecordingStore:
    """The real SQLite store, with every find_by_hash argument recorded."""

    def __init__(self, inner: SQLiteLicenseStore) -> None:
        self.inner = inner
        self.asked: list[str] = []

    async def find_by_hash(self, key_hash: str):
        self.asked.append(key_hash)
        return await self.inner.find_by_hash(key_hash)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteLicenseStore(tmp_path / "licenses.db")
    yield s
    await s.close()


async def test_only_a_keyed_hash_is_stored(store: SQLiteLicenseStore, tmp_path: Path):
    key = generate_key()
    rec = await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name="t"))
    assert rec.key_hash == hmac.new(SECRET, key.encode(), hashlib.sha256).hexdigest()
    # Without the server secret the stored value is not the plain hash of the key either.
    assert rec.key_hash != hashlib.sha256(key.encode()).hexdigest()
    await store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("licenses.db"))
    assert key.encode() not in on_disk and key[len(key_prefix(key)):].encode() not in on_disk


async def test_store_compares_hashes_with_compare_digest(store: SQLiteLicenseStore, monkeypatch):
    key = generate_key()
    h = hash_key(SECRET, key)
    await store.create_key(h, key_prefix(key), NewKey(name="t"))
    calls: list[tuple] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(store_module.hmac, "compare_digest", spy)
    assert (await store.find_by_hash(h)) is not None
    assert calls and all(h.encode() in pair for pair in calls), calls
    assert all(key.encode() not in pair and key not in pair for pair in calls)


async def test_cache_hands_the_store_only_hashes(store: SQLiteLicenseStore):
    key = generate_key()
    await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name="t"))
    recording = RecordingStore(store)
    cache = KeyCache(recording, SECRET, refresh=60, ttl=60)  # type: ignore[arg-type]
    await cache.poll_once()

    near_misses = [key[:-1] + ("A" if key[-1] != "A" else "B"),  # all but the last character right
                   key[:len(key) // 2] + "x" * (len(key) - len(key) // 2),
                   key_prefix(key),  # the visible prefix alone
                   hash_key(SECRET, key),  # the stored hash presented as a key ("pass the hash")
                   key + " ", key.upper()]
    assert (await cache.lookup(key)) is not None
    for guess in near_misses:
        assert (await cache.lookup(guess)) is None, guess

    expected = [hash_key(SECRET, k) for k in [key, *near_misses]]
    assert recording.asked == expected
    for asked in recording.asked:
        assert len(asked) == 64 and all(c in "0123456789abcdef" for c in asked)
    # Nothing kept in memory is indexed by a raw key either.
    raw = {key, *near_misses} - {hash_key(SECRET, key)}
    assert not (raw & set(cache._entries))
