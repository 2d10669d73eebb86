"""Which credential kind served each call: the ledger's credential columns, their migration on
databases created before them, the Meter, and `keys usage`."""
from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from services.edge import keys
from services.edge.store import NewKey, SQLiteLicenseStore, UsageRow, open_store
from services.edge.usage import Meter, UsageRecorder

# The usage table as the first release created it (before the credential columns).
OLD_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (name, value) VALUES ('keys_revision', 0);
CREATE TABLE keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE, enabled INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL,
    expires_at REAL, revoked_at REAL, models TEXT NOT NULL DEFAULT '[]', rpm INTEGER, tpm INTEGER,
    quota INTEGER, tokens_used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE usage (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key_id INTEGER NOT NULL, created_at REAL NOT NULL,
    api TEXT NOT NULL, op TEXT NOT NULL, model TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, thought_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL,
    total_tokens INTEGER NOT NULL, status INTEGER NOT NULL, latency_ms REAL NOT NULL,
    request_id TEXT NOT NULL DEFAULT '');
INSERT INTO keys (name, prefix, key_hash, created_at) VALUES ('old', 'gcli-abcdef', 'h-old', 1.0);
INSERT INTO usage (key_id, created_at, api, op, model, prompt_tokens, completion_tokens, thought_tokens,
                   cached_tokens, total_tokens, status, latency_ms, request_id)
VALUES (1, 2.0, 'gemini', 'generate', 'gemini-2.5-pro', 1, 2, 0, 0, 3, 200, 5.0, 'r-old');
"""


def _row(kind: str = "", cred: str = "", status: int = 200, tokens: int = 3, op: str = "generate") -> UsageRow:
    return UsageRow(key_id=1, api="openai", op=op, model="m", status=status, latency_ms=1.0, total_tokens=tokens,
                    credential_kind=kind, credential_id=cred)


async def test_an_old_database_gets_the_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    store = SQLiteLicenseStore(path)
    try:
        (old,) = await store.recent_usage(1)
        assert (old.request_id, old.credential_kind, old.credential_id) == ("r-old", "", "")
        await store.record_usage([_row("ai-studio-key", "studio-1", op="embed")])
        new, old = await store.recent_usage(1)
        assert (new.op, new.credential_kind, new.credential_id) == ("embed", "ai-studio-key", "studio-1")
        assert old.total_tokens == 3
    finally:
        await store.close()
    # Opening again (the edge and the keys CLI both open the file) is a no-op.
    await SQLiteLicenseStore(path).close()
    with sqlite3.connect(path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(usage)")]
    assert cols[-2:] == ["credential_kind", "credential_id"] and cols.count("credential_kind") == 1


async def test_usage_by_credential_kind(license_db: str) -> None:
    store = open_store(license_db)
    try:
        await store.create_key("h", "p", NewKey(name="n"))
        await store.record_usage([_row("gemini-cli-oauth", "a.json", tokens=5), _row("ai-studio-key", "k1", tokens=7),
                                  _row("ai-studio-key", "k2", tokens=1), _row(status=429, tokens=0)])
        assert await store.usage_by_credential(1) == [("", 1, 1, 0), ("ai-studio-key", 2, 0, 8),
                                                      ("gemini-cli-oauth", 1, 0, 5)]
        assert await store.usage_by_credential(2) == []
    finally:
        await store.close()


class _Store:
    def __init__(self) -> None:
        self.rows: list[UsageRow] = []

    async def record_usage(self, rows) -> None:
        self.rows.extend(rows)


async def test_meter_carries_the_credential() -> None:
    store = _Store()
    recorder = UsageRecorder(store)  # type: ignore[arg-type]
    served = Meter(recorder, 1, "gemini", "stream", "gemini-2.5-pro")
    served.served_by("vertex-ai", "vx-1")
    served.served_by("", "")  # later messages carry no kind: the first one stays
    served.finish(200)
    refused = Meter(recorder, 1, "openai", "embed", "gemini-embedding-001")
    refused.finish(403)
    await recorder.flush()
    assert [(r.credential_kind, r.credential_id) for r in store.rows] == [("vertex-ai", "vx-1"), ("", "")]


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, license_db: str) -> str:
    """The keys CLI's settings, on a SQLite file or a PostgreSQL database."""
    monkeypatch.setenv("LICENSE_DB", license_db)
    monkeypatch.setenv("LICENSE_SECRET", "unit-test-secret-123")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    return license_db


async def test_keys_usage_shows_who_served(cli_env: str) -> None:
    store = open_store(cli_env)
    await store.create_key("h", "gcli-xyzxyz", NewKey(name="team"))
    await store.record_usage([_row("ai-studio-key", "studio-1", tokens=4), _row("gemini-cli-oauth", "", tokens=2),
                              _row(status=404, tokens=0)])
    await store.close()

    out = io.StringIO()
    assert await keys.run(keys.build_parser().parse_args(["usage", "--recent", "5"]), out=out) == 0
    text = out.getvalue()
    assert "SERVED BY" in text.splitlines()[0]
    assert "ai-studio-key/studio-1" in text and "gemini-cli-oauth" in text

    out = io.StringIO()
    assert await keys.run(keys.build_parser().parse_args(["usage", "team"]), out=out) == 0
    lines = out.getvalue().splitlines()
    served = lines[lines.index(next(x for x in lines if x.startswith("SERVED BY"))):]
    assert [x.split() for x in served[2:]] == [["(none)", "1", "1", "0"], ["ai-studio-key", "1", "0", "4"],
                                              ["gemini-cli-oauth", "1", "0", "2"]]
