"""Usage retention on both engines: old ledger rows are rolled up per key, model, credential kind
and UTC day, then deleted; every total, each key's used quota and the CLI's report stay what they
were, and the number of raw rows stays bounded however long the ledger runs."""
from __future__ import annotations

import asyncio
import io
import time

import pytest

from services.edge import keys as keys_cli
from services.edge import retention
from services.edge.auth import KeyCache
from services.edge.errors import ApiError
from services.edge.limits import Limiter
from services.edge.store import NewKey, UsageRow, generate_key, hash_key, key_prefix, open_store
from tests.support import stores

SECRET = b"retention-secret"
DAY = 86400
NOW = 1_780_000_000.0 + 13 * 3600  # an afternoon (UTC), fixed so day boundaries are known


@pytest.fixture
async def store(license_db: str):
    s = open_store(license_db)
    yield s
    await s.close()


async def _key(store, name: str, **kw):
    key = generate_key()
    rec = await store.create_key(hash_key(SECRET, key), key_prefix(key), NewKey(name=name, **kw))
    return key, rec


def _row(key_id: int, age_days: float, *, model: str = "gemini-2.5-pro", kind: str = "gemini-cli-oauth",
         status: int = 200, tokens: int = 10, now: float = NOW) -> UsageRow:
    return UsageRow(key_id=key_id, api="openai", op="generate", model=model, status=status, latency_ms=3.0,
                    prompt_tokens=tokens // 2, completion_tokens=tokens - tokens // 2 - 1, thought_tokens=1,
                    cached_tokens=tokens // 5, total_tokens=tokens, created_at=now - age_days * DAY,
                    credential_kind=kind, credential_id="c1")


def _history(a: int, b: int) -> list[UsageRow]:
    """Forty days of mixed traffic for two keys: models, credential kinds, errors, several rows a day."""
    rows = []
    for day in range(40):
        for i in range(3):
            age = day + i * 0.1
            rows.append(_row(a, age, tokens=10 + i + day))
            rows.append(_row(a, age, model="gemini-2.5-flash", kind="ai-studio-key", tokens=7))
            rows.append(_row(b, age, kind="vertex-ai", status=429 if i == 0 else 200, tokens=0 if i == 0 else 4))
        rows.append(_row(b, day + 0.5, kind="", status=404, tokens=0))  # refused before any credential
    return rows


async def _totals(store, key_id=None, since=None):
    return (await store.usage_summary(key_id, since), await store.usage_by_credential(key_id, since))


async def test_old_rows_are_rolled_up_and_totals_stay(store):
    _, a = await _key(store, "a")
    _, b = await _key(store, "b")
    rows = _history(a.id, b.id)
    await store.record_usage(rows)
    before = await _totals(store)
    before_a = await _totals(store, a.id)
    used = {r.id: r.tokens_used for r in await store.list_keys()}
    assert await store.count_usage() == len(rows)

    done = await retention.run_once(store, 7, now=NOW)

    keep = [r for r in rows if r.created_at >= retention.cutoff(7, NOW)]
    assert done.rows == len(rows) - len(keep) > 0
    assert await store.count_usage() == len(keep)  # raw rows left: the last 7 days and today
    assert await _totals(store) == before
    assert await _totals(store, a.id) == before_a
    assert {r.id: r.tokens_used for r in await store.list_keys()} == used
    recent = await store.recent_usage(None, 10_000)
    assert min(r.created_at for r in recent) >= retention.cutoff(7, NOW)

    again = await retention.run_once(store, 7, now=NOW)  # idempotent: nothing left to do
    assert again.rows == 0 and await _totals(store) == before


async def test_rolled_up_days_in_since_queries(store):
    _, a = await _key(store, "a")
    rows = _history(a.id, a.id)
    await store.record_usage(rows)
    since = retention.cutoff(20, NOW)  # a UTC midnight, older than the retention age
    window = await _totals(store, a.id, since)
    await retention.run_once(store, 7, now=NOW)
    assert await _totals(store, a.id, since) == window


async def test_used_quota_does_not_drop_when_rows_are_pruned(store):
    key, rec = await _key(store, "capped", quota=300)
    await store.record_usage([_row(rec.id, age, tokens=30) for age in range(30, 40)])  # 300 tokens, long ago
    cache = KeyCache(store, SECRET, limiter=(limiter := Limiter()))
    spent = await cache.lookup(key)
    with pytest.raises(ApiError) as refused:
        await limiter.reserve(spent, "gemini-2.5-pro")
    assert refused.value.status == 403

    assert (await retention.run_once(store, 7, now=NOW)).rows == 10
    assert await store.count_usage(rec.id) == 0
    cache.invalidate()
    again = await cache.lookup(key)
    assert again.tokens_used == 300 and limiter.used(again) == 300
    with pytest.raises(ApiError) as still:
        await limiter.reserve(again, "gemini-2.5-pro")
    assert still.value.status == 403


async def test_row_count_stays_bounded_over_months(store):
    """A hundred days of traffic with retention running daily: raw rows never exceed the
    retention window's, and rolled-up rows grow by one per key, model and kind a day."""
    _, a = await _key(store, "a")
    per_day, days, keep = 12, 100, 5
    peak = 0
    for day in range(days):
        now = NOW + day * DAY
        await store.record_usage([_row(a.id, i / per_day, now=now, tokens=5) for i in range(per_day)])
        await retention.run_once(store, keep, now=now)
        peak = max(peak, await store.count_usage())
    assert peak <= (keep + 2) * per_day
    (summary,) = await store.usage_summary()
    assert (summary.requests, summary.total_tokens) == (days * per_day, days * per_day * 5)
    assert (await store.list_keys())[0].tokens_used == days * per_day * 5


async def test_batches_cover_every_row_once(store):
    _, a = await _key(store, "a")
    _, b = await _key(store, "b")
    await store.record_usage(_history(a.id, b.id))
    before = await _totals(store)
    done = await store.roll_up(retention.cutoff(3, NOW), batch=7)
    assert done.batches > 10 and done.rows > 70
    assert await _totals(store) == before


async def test_edges_pruning_at_once_count_each_row_once(license_db: str):
    """Three stores (three edges) run retention together while the ledger keeps writing."""
    many = [open_store(license_db) for _ in range(3)]
    try:
        _, a = await _key(many[0], "a")
        _, b = await _key(many[0], "b")
        await many[0].record_usage(_history(a.id, b.id))
        before = await _totals(many[0])
        fresh = [_row(a.id, 0.01, tokens=1) for _ in range(50)]
        results = await asyncio.gather(*(s.roll_up(retention.cutoff(7, NOW), batch=13) for s in many),
                                       *(many[1].record_usage([r]) for r in fresh))
        assert sum(r.rows for r in results[:3]) == len(_history(a.id, b.id)) - sum(
            1 for r in _history(a.id, b.id) if r.created_at >= retention.cutoff(7, NOW))
        after = await _totals(many[2])
        (pro_before,) = [s for s in before[0] if (s.key_id, s.model) == (a.id, "gemini-2.5-pro")]
        (pro_after,) = [s for s in after[0] if (s.key_id, s.model) == (a.id, "gemini-2.5-pro")]
        assert pro_after.requests == pro_before.requests + 50
        assert pro_after.total_tokens == pro_before.total_tokens + 50
        assert [s for s in after[0] if s.model != "gemini-2.5-pro"] == \
            [s for s in before[0] if s.model != "gemini-2.5-pro"]
    finally:
        for s in many:
            await s.close()


async def test_daily_rows_hold_the_sums(store, license_db: str):
    _, a = await _key(store, "a")
    day0 = retention.cutoff(10, NOW)  # a UTC midnight
    rows = [_row(a.id, 0, now=day0 + 60, tokens=10), _row(a.id, 0, now=day0 + DAY - 1, tokens=20, status=500),
            _row(a.id, 0, now=day0 + DAY, tokens=5)]
    await store.record_usage(rows)
    await retention.run_once(store, 3, now=NOW)
    got = await stores.fetch(license_db, "SELECT day, model, credential_kind, requests, errors, prompt_tokens,"
                             " completion_tokens, thought_tokens, cached_tokens, total_tokens FROM usage_daily"
                             " WHERE key_id = ? ORDER BY day", a.id)
    assert got == [(int(day0), "gemini-2.5-pro", "gemini-cli-oauth", 2, 1, 15, 13, 2, 6, 30),
                   (int(day0) + DAY, "gemini-2.5-pro", "gemini-cli-oauth", 1, 0, 2, 2, 1, 1, 5)]


@pytest.fixture
def cli_env(tmp_path, monkeypatch: pytest.MonkeyPatch, license_db: str) -> str:
    monkeypatch.setenv("LICENSE_DB", license_db)
    monkeypatch.setenv("LICENSE_SECRET", "retention-cli-secret")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("USAGE_RETENTION_DAYS", "7")
    return license_db


async def _cli(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert await keys_cli.run(keys_cli.build_parser().parse_args(list(argv)), out=out, err=err) == 0, err.getvalue()
    return out.getvalue()


async def test_cli_prune_and_usage_report(cli_env: str):
    store = open_store(cli_env)
    try:
        _, a = await _key(store, "team")
        now = time.time()
        await store.record_usage([_row(a.id, age, tokens=9, now=now) for age in (0, 2, 30, 31, 32)])
    finally:
        await store.close()
    report = await _cli("usage", "team")
    assert "schema version" in await _cli("migrate")
    assert "rolled up and deleted 3 ledger rows" in await _cli("prune")
    assert await _cli("usage", "team") == report
    line = next(ln for ln in report.splitlines() if ln.startswith("team"))
    assert line.split()[2:] == ["5", "0", "20", "20", "5", "45"]
    assert "deleted 0 ledger rows" in await _cli("prune")
    assert "retention is off" in await _cli("prune", "--days", "0")
    assert "deleted 1 ledger rows" in await _cli("prune", "--days", "1")
    assert await _cli("usage", "team") == report


async def test_usage_by_day_includes_rolled_up_days(store):
    _, a = await _key(store, "a")
    _, b = await _key(store, "b")
    await store.record_usage(_history(a.id, b.id))
    before = await store.usage_by_day()
    since = retention.cutoff(15, NOW)
    before_since = await store.usage_by_day(a.id, since)
    assert len({d.day for d in before}) == 41  # forty days back, each spread over two UTC dates
    await retention.run_once(store, 7, now=NOW)
    assert await store.usage_by_day() == before
    assert await store.usage_by_day(a.id, since) == before_since
