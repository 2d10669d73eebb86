"""The ledger writer: batches off the request path, keeps rows when the store fails, spills at
shutdown rather than losing them; and the admin CLI's argument parsing."""
from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from services.edge.keys import CliError, parse_expiry, parse_models, parse_since
from services.edge.limits import Limiter
from services.edge.store import NewKey, UsageRow, open_store
from services.edge.upstream_stream import Usage
from services.edge.usage import Meter, UsageRecorder


def row(key_id=1, tokens=3) -> UsageRow:
    return UsageRow(key_id=key_id, api="gemini", op="generate", model="m", status=200, latency_ms=1.0,
                    total_tokens=tokens)


async def test_rows_are_written_in_batches(license_db: str):
    store = open_store(license_db)
    rec = await store.create_key("h", "p", NewKey(name="n"))
    rec_limiter = Limiter()
    recorder = UsageRecorder(store, rec_limiter, flush_interval=0.02)
    recorder.start()
    try:
        for _ in range(250):
            recorder.record(row(rec.id, 2))
        assert recorder.pending_tokens(rec.id) == 500
        # The rows commit a moment before the recorder hears so (PostgreSQL especially): wait
        # for both, on a loaded machine too.
        for _ in range(3000):
            if await store.count_usage() == 250 and recorder.pending_tokens(rec.id) == 0:
                break
            await asyncio.sleep(0.01)
        assert await store.count_usage() == 250
        assert recorder.pending_tokens(rec.id) == 0
        assert (await store.find_by_hash("h")).tokens_used == 500
    finally:
        await recorder.stop()
        await store.close()


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.rows: list[UsageRow] = []

    async def record_usage(self, rows):
        if self.failures:
            self.failures -= 1
            raise RuntimeError("disk full")
        self.rows.extend(rows)


async def test_failed_write_keeps_rows():
    store = FlakyStore(failures=2)
    recorder = UsageRecorder(store)
    for i in range(5):
        recorder.record(row(tokens=i))
    assert not await recorder.flush()
    assert not await recorder.flush()
    assert recorder.queued == 5 and recorder.pending_tokens(1) == 10
    assert await recorder.flush()
    assert [r.total_tokens for r in store.rows] == [0, 1, 2, 3, 4] and recorder.pending_tokens(1) == 0


async def test_unwritable_rows_are_spilled_at_shutdown(tmp_path: Path):
    store = FlakyStore(failures=100)
    recorder = UsageRecorder(store, spill_dir=tmp_path)
    recorder.record(row(7, 11))
    await recorder.stop()
    files = list(tmp_path.glob("usage-unwritten-*.jsonl"))
    assert len(files) == 1
    saved = [orjson.loads(line) for line in files[0].read_bytes().splitlines()]
    assert saved[0]["key_id"] == 7 and saved[0]["total_tokens"] == 11


async def test_meter_records_once_with_usage():
    store = FlakyStore(0)
    recorder = UsageRecorder(store)
    m = Meter(recorder, 3, "openai", "stream", "gemini-2.5-pro", "rid")
    m.finish(200, Usage(prompt=5, completion=7, thoughts=2, total=14, cached=1))
    m.finish(499)  # ignored: the first outcome wins
    await recorder.flush()
    (r,) = store.rows
    assert (r.key_id, r.api, r.op, r.model, r.status, r.request_id) == (3, "openai", "stream", "gemini-2.5-pro", 200, "rid")
    assert (r.prompt_tokens, r.completion_tokens, r.thought_tokens, r.cached_tokens, r.total_tokens) == (5, 7, 2, 1, 14)
    assert r.latency_ms >= 0


def test_parse_expiry():
    now = 1_000_000.0
    assert parse_expiry("30d", now) == now + 30 * 86400
    assert parse_expiry("12h", now) == now + 12 * 3600
    assert parse_expiry("never", now) is None and parse_expiry(None, now) is None
    # a date means "valid through that day", UTC
    assert parse_expiry("2026-12-31", now) == parse_expiry("2027-01-01T00:00:00Z", now)
    assert parse_expiry("2026-12-31T12:00:00+02:00", now) == parse_expiry("2026-12-31T10:00:00Z", now)
    with pytest.raises(CliError):
        parse_expiry("soon", now)


def test_parse_since_and_models():
    assert parse_since("7d", 1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert parse_models(" gemini-2.5-*, ,gemini-3-pro-preview ") == ("gemini-2.5-*", "gemini-3-pro-preview")
    assert parse_models(None) == ()
