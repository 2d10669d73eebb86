"""The license store: keyed hashes only, prefixes, revocation, expiry, allow-lists, the ledger.

Every test taking `store` runs on SQLite and on PostgreSQL (the `license_db` fixture)."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from services.edge.store import (KEY_SCHEME, NewKey, SQLiteLicenseStore, StoreError, UsageRow, describe_location,
                                 generate_key, hash_key, key_prefix, model_allowed, open_store)
from services.edge.store_postgres import PostgresLicenseStore
from services.edge.store_schema import SCHEMA_VERSION
from tests.support import stores

SECRET = b"unit-test-secret"


@pytest.fixture
async def store(license_db: str):
    s = open_store(license_db)
    yield s
    await s.close()


async def _new(store, name="k", **kw):
    key = generate_key()
    rec = await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name=name, **kw))
    return key, rec


def test_keys_are_random_and_prefixed():
    a, b = generate_key(), generate_key()
    assert a != b and a.startswith(KEY_SCHEME) and len(a) >= 40
    assert key_prefix(a) == a[: len(KEY_SCHEME) + 6]


def test_hash_is_keyed():
    key = generate_key()
    assert hash_key(SECRET, key) == hash_key(SECRET, key)
    assert hash_key(SECRET, key) != hash_key(b"other-secret", key)
    assert len(hash_key(SECRET, key)) == 64


async def test_only_the_hash_is_stored(store, license_db: str):
    key, rec = await _new(store, "alice")
    assert rec.key_hash == hash_key(SECRET, key)
    assert rec.prefix == key_prefix(key)
    raw = await stores.everything_stored(license_db)
    assert rec.key_hash.encode() in raw and b"alice" in raw  # the dump does hold the key's row
    assert key.encode() not in raw
    assert key[len(rec.prefix):].encode() not in raw  # not even the secret part


async def test_sqlite_file_is_private(tmp_path: Path):
    store = SQLiteLicenseStore(tmp_path / "licenses.db")
    await store.close()
    assert (tmp_path / "licenses.db").stat().st_mode & 0o077 == 0


async def test_find_by_hash_and_unknown(store):
    key, rec = await _new(store)
    found = await store.find_by_hash(hash_key(SECRET, key))
    assert found is not None and found.id == rec.id and found.name == "k"
    assert await store.find_by_hash(hash_key(SECRET, key + "x")) is None
    assert await store.find_by_hash(hash_key(b"wrong", key)) is None


async def test_revoke_and_refusal_reasons(store):
    key, rec = await _new(store)
    now = time.time()
    assert rec.refusal(now) is None
    assert await store.revoke(rec.id) is True
    assert await store.revoke(rec.id) is False  # idempotent
    again = await store.find_by_hash(rec.key_hash)
    assert again.refusal(now) == "revoked"

    _, other = await _new(store, "o")
    await store.set_enabled(other.id, False)
    assert (await store.find_by_hash(other.key_hash)).refusal(now) == "disabled"


async def test_expiry(store):
    now = time.time()
    _, past = await _new(store, "past", expires_at=now - 1)
    _, future = await _new(store, "future", expires_at=now + 3600)
    assert past.refusal(now) == "expired"
    assert future.refusal(now) is None
    assert future.refusal(now + 3601) == "expired"


def test_allow_list_globs():
    assert model_allowed((), "anything")
    pats = ("gemini-2.5-*", "gemini-3-pro-preview")
    assert model_allowed(pats, "gemini-2.5-pro")
    assert model_allowed(pats, "gemini-2.5-flash-lite")
    assert model_allowed(pats, "gemini-3-pro-preview")
    assert not model_allowed(pats, "gemini-3-flash-preview")
    assert not model_allowed(pats, "GEMINI-2.5-PRO")  # case-sensitive, like model ids
    assert model_allowed(("gemini-?.5-flash",), "gemini-2.5-flash")


async def test_models_round_trip(store):
    _, rec = await _new(store, models=("gemini-2.5-*", "gemma-*"), rpm=5, tpm=100, quota=1000)
    got = await store.find_by_hash(rec.key_hash)
    assert got.models == ("gemini-2.5-*", "gemma-*")
    assert (got.rpm, got.tpm, got.quota) == (5, 100, 1000)
    assert got.allows_model("gemini-2.5-pro") and not got.allows_model("gemini-3-pro-preview")


async def test_lookup_by_reference(store):
    key, rec = await _new(store, "team-a")
    assert [r.id for r in await store.get_key(str(rec.id))] == [rec.id]
    assert [r.id for r in await store.get_key("team-a")] == [rec.id]
    assert [r.id for r in await store.get_key(rec.prefix)] == [rec.id]
    assert [r.id for r in await store.get_key(key)] == [rec.id]
    assert await store.get_key("nobody") == []


async def test_revision_moves_on_key_changes_only(store):
    r0 = await store.revision()
    _, rec = await _new(store)
    r1 = await store.revision()
    assert r1 > r0
    await store.record_usage([UsageRow(key_id=rec.id, api="gemini", op="generate", model="m", status=200,
                                       latency_ms=1.0, total_tokens=10)])
    assert await store.revision() == r1  # ledger writes must not flush the edge's key cache
    await store.revoke(rec.id)
    assert await store.revision() > r1


async def test_ledger_rows_and_running_total(store):
    _, a = await _new(store, "a")
    _, b = await _new(store, "b")
    rows = [UsageRow(key_id=a.id, api="gemini", op="generate", model="gemini-2.5-pro", status=200, latency_ms=5,
                     prompt_tokens=3, completion_tokens=4, thought_tokens=2, total_tokens=9),
            UsageRow(key_id=a.id, api="openai", op="stream", model="gemini-2.5-pro", status=429, latency_ms=1),
            UsageRow(key_id=b.id, api="gemini", op="stream", model="gemini-2.5-flash", status=200, latency_ms=7,
                     prompt_tokens=1, completion_tokens=1, total_tokens=2)]
    await store.record_usage(rows)
    assert (await store.find_by_hash(a.key_hash)).tokens_used == 9
    assert (await store.find_by_hash(b.key_hash)).tokens_used == 2
    summary = {(s.key_id, s.model): s for s in await store.usage_summary()}
    sa = summary[(a.id, "gemini-2.5-pro")]
    assert (sa.requests, sa.errors, sa.prompt_tokens, sa.completion_tokens, sa.thought_tokens, sa.total_tokens) == \
        (2, 1, 3, 4, 2, 9)
    recent = await store.recent_usage(a.id, 10)
    assert [r.status for r in recent] == [429, 200]
    assert await store.count_usage() == 3


async def test_concurrent_ledger_writes_lose_nothing(store):
    _, rec = await _new(store)
    batches = [[UsageRow(key_id=rec.id, api="gemini", op="generate", model="m", status=200, latency_ms=1,
                         total_tokens=1)] * 5 for _ in range(40)]
    await asyncio.gather(*(store.record_usage(b) for b in batches))
    assert await store.count_usage(rec.id) == 200
    assert (await store.find_by_hash(rec.key_hash)).tokens_used == 200


async def test_second_process_sees_writes(store, license_db: str):
    """The admin CLI writes through its own connection; the edge sees it at once (WAL on SQLite)."""
    _, rec = await _new(store)
    r0 = await store.revision()
    await stores.execute(license_db, "UPDATE keys SET revoked_at = ? WHERE id = ?", time.time(), rec.id)
    assert (await store.find_by_hash(rec.key_hash)).refusal(time.time()) == "revoked"
    assert await store.revision() > r0  # the schema's trigger, not the store's code, moved it


async def test_another_store_on_the_same_database(store, license_db: str):
    """Two edges (or an edge and the keys CLI) on one database see each other's keys and revokes."""
    other = open_store(license_db)
    try:
        key, rec = await _new(other, "from-other")
        assert (await store.find_by_hash(hash_key(SECRET, key))).name == "from-other"
        r0 = await store.revision()
        assert await other.revoke(rec.id)
        assert await store.revision() > r0
        assert (await store.find_by_hash(rec.key_hash)).refusal(time.time()) == "revoked"
    finally:
        await other.close()


async def test_name_required(store):
    with pytest.raises(StoreError):
        await store.create_key("h", "p", NewKey(name="  "))


def test_license_db_picks_the_engine(tmp_path: Path):
    assert isinstance(open_store("postgresql://u@127.0.0.1:1/db"), PostgresLicenseStore)
    assert isinstance(open_store("postgres://u@127.0.0.1:1/db"), PostgresLicenseStore)


def test_sqlite_url_form(tmp_path: Path):
    store = open_store(f"sqlite:///{tmp_path}/l.db")
    assert isinstance(store, SQLiteLicenseStore) and store.path == f"{tmp_path}/l.db"
    asyncio.run(store.close())


def test_dsn_password_is_never_shown():
    assert describe_location("postgresql://gw:s3cr3t@db.internal:5432/gw") == "postgresql://gw:***@db.internal:5432/gw"
    assert describe_location("postgresql://gw@db/gw") == "postgresql://gw@db/gw"
    assert describe_location("/data/licenses.db") == "/data/licenses.db"


@pytest.mark.parametrize("dsn", ["postgresql://gw:pw-not-shown@127.0.0.1:1/db?sslmode=bogus",
                                 "postgresql://gw:pw-not-shown@127.0.0.1:notaport/db"])
async def test_a_bad_dsn_is_a_store_error_without_the_password(dsn: str):
    store = open_store(dsn)
    try:
        with pytest.raises(StoreError) as err:
            await store.list_keys()
        assert "pw-not-shown" not in str(err.value)
    finally:
        await store.close()


async def test_unreachable_postgres_is_a_store_error():
    from tests.harness import free_port

    store = open_store(f"postgresql://gw:pw-not-shown@127.0.0.1:{free_port()}/nothing")
    try:
        with pytest.raises(StoreError) as err:
            await store.revision()
        assert "pw-not-shown" not in str(err.value) and "***" in str(err.value)
    finally:
        await store.close()


async def test_schema_is_migrated_and_reopening_is_a_no_op(store, license_db: str):
    assert await store.migrate() == SCHEMA_VERSION
    _, rec = await _new(store)
    again = open_store(license_db)
    try:
        assert await again.migrate() == SCHEMA_VERSION
        assert [r.id for r in await again.list_keys()] == [rec.id]
    finally:
        await again.close()
    (row,) = await stores.fetch(license_db, "SELECT value FROM meta WHERE name = 'schema_version'")
    assert row == (SCHEMA_VERSION,)


async def test_stores_starting_together_migrate_once(license_db: str):
    """Three edges starting at once on a new database: one migrates, the others find it done
    (PostgreSQL: an advisory lock; SQLite: an IMMEDIATE transaction)."""
    many = [open_store(license_db) for _ in range(3)]
    try:
        versions = await asyncio.gather(*(s.migrate() for s in many))
        assert versions == [SCHEMA_VERSION] * 3
        keys = await asyncio.gather(*(_new(s, f"k{i}") for i, s in enumerate(many)))
        assert sorted(r.id for _, r in keys) == [1, 2, 3]
        assert await many[0].revision() == 3  # one trigger bumps once per key, not once per migration
    finally:
        for s in many:
            await s.close()


async def test_old_database_gains_max_concurrent(tmp_path: Path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the keys table as the first release created it
        conn.execute("CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, prefix TEXT NOT NULL,"
                     " key_hash TEXT NOT NULL UNIQUE, enabled INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,"
                     " expires_at REAL, revoked_at REAL, models TEXT NOT NULL DEFAULT '[]', rpm INTEGER, tpm INTEGER,"
                     " quota INTEGER, tokens_used INTEGER NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO keys (name, prefix, key_hash, created_at) VALUES ('old', 'gcli-old', 'h', 0)")
    store = SQLiteLicenseStore(path)
    try:
        (old,) = await store.get_key("old")
        assert old.max_concurrent is None
        _key, rec = await _new(store, "capped", max_concurrent=3)
        assert rec.max_concurrent == 3 and (await store.find_by_hash(rec.key_hash)).max_concurrent == 3
    finally:
        await store.close()


async def test_update_key_changes_limits_and_bumps_revision(store):
    key, rec = await _new(store, "edit-me", rpm=5, models=("gemini-2.5-*",))
    rev = await store.revision()
    out = await store.update_key(rec.id, {"rpm": None, "tpm": 1000, "quota": 50, "models": ["gemini-2.5-pro"],
                                          "name": "edited", "expires_at": 2_000_000_000.0, "max_concurrent": 2})
    assert out is not None and out.id == rec.id
    assert (out.name, out.rpm, out.tpm, out.quota, out.models, out.expires_at, out.max_concurrent) == (
        "edited", None, 1000, 50, ("gemini-2.5-pro",), 2_000_000_000.0, 2)
    assert out.key_hash == rec.key_hash and out.prefix == rec.prefix  # the secret never changes
    assert await store.revision() > rev
    # Only max_concurrent (not in the old update trigger) still moves the revision.
    rev = await store.revision()
    await store.update_key(rec.id, {"max_concurrent": 3})
    assert await store.revision() > rev
    assert (await store.find_by_hash(hash_key(SECRET, key))).max_concurrent == 3


async def test_update_key_refuses_bad_changes(store):
    _, rec = await _new(store)
    assert await store.update_key(rec.id + 100, {"rpm": 1}) is None
    for bad in ({"key_hash": "x"}, {"enabled": False}, {"rpm": -1}, {"tpm": "10"}, {"quota": True},
                {"name": "  "}, {"models": "gemini-*"}, {"models": [""]}, {"expires_at": "tomorrow"}):
        with pytest.raises(StoreError):
            await store.update_key(rec.id, bad)
    assert (await store.get_key(str(rec.id)))[0] == rec  # nothing changed


async def test_usage_by_day(store):
    _, a = await _new(store, "a")
    _, b = await _new(store, "b")
    day1 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    rows = [UsageRow(a.id, "openai", "generate", "m1", 200, 1.0, 10, 5, 0, 0, 15, created_at=day1 + 10),
            UsageRow(a.id, "openai", "stream", "m1", 429, 1.0, 0, 0, 0, 0, 0, created_at=day1 + 86_399),
            UsageRow(a.id, "gemini", "generate", "m1", 200, 1.0, 1, 2, 3, 0, 6, created_at=day1 + 86_400),
            UsageRow(b.id, "gemini", "generate", "m2", 200, 1.0, 7, 1, 0, 0, 8, created_at=day1 + 100)]
    await store.record_usage(rows)
    days = await store.usage_by_day()
    assert [(d.day, d.key_id, d.model, d.requests, d.errors, d.prompt_tokens, d.completion_tokens,
             d.thought_tokens, d.total_tokens) for d in days] == [
        ("2026-01-01", a.id, "m1", 2, 1, 10, 5, 0, 15),
        ("2026-01-01", b.id, "m2", 1, 0, 7, 1, 0, 8),
        ("2026-01-02", a.id, "m1", 1, 0, 1, 2, 3, 6)]
    assert [d.day for d in await store.usage_by_day(key_id=a.id)] == ["2026-01-01", "2026-01-02"]
    assert [d.day for d in await store.usage_by_day(since=day1 + 86_400)] == ["2026-01-02"]


async def test_old_update_trigger_is_replaced(tmp_path: Path):
    """A file from before max_concurrent has an update trigger that ignores it; after the
    migration, editing max_concurrent moves the revision the edges poll."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO meta (name, value) VALUES ('keys_revision', 0), ('schema_version', 2);
            CREATE TABLE keys (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, prefix TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE, enabled INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,
                expires_at REAL, revoked_at REAL, models TEXT NOT NULL DEFAULT '[]', rpm INTEGER, tpm INTEGER,
                quota INTEGER, tokens_used INTEGER NOT NULL DEFAULT 0, max_concurrent INTEGER);
            CREATE TRIGGER keys_rev_update AFTER UPDATE OF name, key_hash, enabled, expires_at, revoked_at, models,
                rpm, tpm, quota ON keys BEGIN UPDATE meta SET value = value + 1 WHERE name = 'keys_revision'; END;
            INSERT INTO keys (name, prefix, key_hash, created_at) VALUES ('old', 'gcli-old', 'h', 0);
        """)
    store = SQLiteLicenseStore(path)
    try:
        rev = await store.revision()
        await store.update_key(1, {"max_concurrent": 2})
        assert await store.revision() > rev
    finally:
        await store.close()
