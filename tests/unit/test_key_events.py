"""Revocation fan-out: a change made through the store (the keys CLI, the admin API) is announced
on Redis, and a subscribed edge empties its key cache on the message, with no revision poll in
between. Real redis-server and SQLite store."""
from __future__ import annotations

import asyncio
import io
from pathlib import Path

from services.edge import keys as keys_cli
from services.edge.auth import KeyCache
from services.edge.key_events import KeyChangeListener, KeyChangePublisher, NotifyingStore
from services.edge.store import NewKey, SQLiteLicenseStore, generate_key, hash_key, key_prefix
from tests.harness import LOOPBACK, free_port

SECRET = b"s" * 32


async def _listening(redis_url: str) -> tuple[KeyChangeListener, list[int]]:
    seen: list[int] = []
    listener = KeyChangeListener(redis_url, 2.0)
    listener.start(lambda: seen.append(1))
    await asyncio.wait_for(listener.subscribed.wait(), 30)
    return listener, seen


async def _until(cond, what: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_revoke_through_the_store_reaches_a_cache_without_polling(tmp_path: Path, redis_url: str):
    raw = SQLiteLicenseStore(tmp_path / "k.db")
    store = NotifyingStore(raw, KeyChangePublisher.from_url(redis_url, 2.0))
    key = generate_key()
    rec = await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name="n"))
    # Revision polling never runs here (no start()); with a 1 h TTL only the message can refresh.
    cache = KeyCache(raw, SECRET, ttl=3600.0)
    listener, seen = await _listening(redis_url)
    try:
        assert (await cache.lookup(key)).refusal(0) is None
        before = len(seen)
        assert await store.revoke(rec.id) and store.announced is True
        await _until(lambda: len(seen) > before, "the announcement")
        cache.invalidate()  # what the edge wires as on_change
        assert (await cache.lookup(key)).refusal(0) == "revoked"
    finally:
        await listener.stop()
        await store.close()


async def test_cache_wired_to_the_listener_refuses_the_revoked_key(tmp_path: Path, redis_url: str):
    raw = SQLiteLicenseStore(tmp_path / "k.db")
    store = NotifyingStore(raw, KeyChangePublisher.from_url(redis_url, 2.0))
    key = generate_key()
    rec = await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name="n"))
    cache = KeyCache(raw, SECRET, ttl=3600.0)
    listener = KeyChangeListener(redis_url, 2.0)
    listener.start(cache.invalidate)
    try:
        await asyncio.wait_for(listener.subscribed.wait(), 30)
        assert (await cache.lookup(key)).enabled
        await store.set_enabled(rec.id, False)

        async def disabled() -> bool:
            return not (await cache.lookup(key)).enabled

        async with asyncio.timeout(30):
            while not await disabled():
                await asyncio.sleep(0.01)
    finally:
        await listener.stop()
        await store.close()


async def test_keys_cli_announces_changes(tmp_path: Path, redis_url: str, monkeypatch):
    monkeypatch.setenv("LICENSE_DB", str(tmp_path / "cli.db"))
    monkeypatch.setenv("LICENSE_SECRET", "cli-secret-0123456789")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", redis_url)
    listener, seen = await _listening(redis_url)
    try:
        out, err = io.StringIO(), io.StringIO()
        assert await keys_cli.run(keys_cli.build_parser().parse_args(["create", "--name", "cli"]), out, err) == 0
        await _until(lambda: len(seen) >= 2, "the create announcement")  # subscribe + create
        before = len(seen)
        assert await keys_cli.run(keys_cli.build_parser().parse_args(["revoke", "cli"]), io.StringIO(), err) == 0
        await _until(lambda: len(seen) > before, "the revoke announcement")
        assert "warning" not in err.getvalue()
    finally:
        await listener.stop()


async def test_keys_cli_with_redis_down_still_changes_the_key(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LICENSE_DB", str(tmp_path / "cli.db"))
    monkeypatch.setenv("LICENSE_SECRET", "cli-secret-0123456789")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", f"redis://{LOOPBACK}:{free_port()}/0")
    monkeypatch.setenv("REDIS_TIMEOUT", "0.3")
    err = io.StringIO()
    assert await keys_cli.run(keys_cli.build_parser().parse_args(["create", "--name", "cli"]), io.StringIO(), err) == 0
    assert "Redis could not be told" in err.getvalue()
    out = io.StringIO()
    assert await keys_cli.run(keys_cli.build_parser().parse_args(["revoke", "cli"]), out, io.StringIO()) == 0
    assert out.getvalue().startswith("revoked")


async def test_admin_service_changes_are_announced(tmp_path: Path, redis_url: str):
    """The admin API's path: AdminService over the store the edge wraps when REDIS_URL is set."""
    from services.edge.admin_service import AdminService

    store = NotifyingStore(SQLiteLicenseStore(tmp_path / "a.db"), KeyChangePublisher.from_url(redis_url, 2.0))
    admin = AdminService(store, SECRET)
    listener, seen = await _listening(redis_url)
    try:
        _key, rec = await admin.create_key("admin-made", rpm=10)
        for change in (lambda: admin.update_key(rec.id, {"rpm": 5}), lambda: admin.set_enabled(rec.id, False),
                       lambda: admin.revoke(rec.id)):
            before = len(seen)
            await change()
            assert store.announced is True
            await _until(lambda: len(seen) > before, "the announcement")
    finally:
        await listener.stop()
        await store.close()
