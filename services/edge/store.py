"""License keys and the usage ledger, behind a small repository interface.

Keys are never stored: only HMAC-SHA256(server secret, key) plus a short visible prefix that
humans can recognise. `SQLiteLicenseStore` is the embedded default (WAL mode); every database
call runs on a worker thread (one connection per thread), so the event loop never waits on disk.
Writes go through a single writer thread, because SQLite serialises writers anyway.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar

import orjson

KEY_SCHEME = "gcli-"
PREFIX_LEN = len(KEY_SCHEME) + 6

T = TypeVar("T")


# --- keys ----------------------------------------------------------------------------------

def generate_key() -> str:
    return KEY_SCHEME + secrets.token_urlsafe(30)


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LEN]


def hashes_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def model_allowed(patterns: Sequence[str], model: str) -> bool:
    """An empty allow-list allows every model; otherwise a case-sensitive glob must match."""
    return not patterns or any(fnmatchcase(model, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class NewKey:
    name: str
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    quota: int | None = None
    expires_at: float | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    name: str
    prefix: str
    key_hash: str
    enabled: bool
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    quota: int | None
    # Ledger sum committed when this record was read.
    tokens_used: int = 0
    # Requests of this key that may run at once (None: no cap).
    max_concurrent: int | None = None

    def refusal(self, now: float) -> str | None:
        """Why this key may not be used at all right now (None when it may)."""
        if self.revoked_at is not None:
            return "revoked"
        if not self.enabled:
            return "disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None

    def allows_model(self, model: str) -> bool:
        return model_allowed(self.models, model)


@dataclass(frozen=True, slots=True)
class UsageRow:
    key_id: int
    api: str            # "gemini" | "openai"
    op: str             # "generate" | "stream" | "count"
    model: str
    status: int         # HTTP status the client saw (499: client went away)
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thought_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    created_at: float = field(default_factory=time.time)
    request_id: str = ""
    # Which credential served the call: its kind ("gemini-cli-oauth", "ai-studio-key",
    # "vertex-ai") and the upstream's id for it; empty when none did (refused, failed early).
    credential_kind: str = ""
    credential_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageSummary:
    key_id: int
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    thought_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """Ledger totals of one key and model on one UTC day ("YYYY-MM-DD")."""
    day: str
    key_id: int
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    thought_tokens: int
    total_tokens: int


# KeyRecord fields an admin may change after creation (update_key); None clears a limit.
EDITABLE_FIELDS = frozenset({"name", "models", "rpm", "tpm", "quota", "expires_at", "max_concurrent"})


class StoreError(Exception):
    pass


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` for update_key, checked the same way by every store implementation."""
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise StoreError(f"cannot change {', '.join(sorted(unknown))} of a key")
    out = dict(changes)
    if "name" in out and (not isinstance(out["name"], str) or not out["name"].strip()):
        raise StoreError("a key needs a name")
    for name in ("rpm", "tpm", "quota", "max_concurrent"):
        v = out.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise StoreError(f"{name} must be a whole number >= 0 (or none)")
    v = out.get("expires_at")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise StoreError("expires_at must be unix seconds (or none)")
    if "models" in out:
        models = out["models"] or ()
        if isinstance(models, str) or not all(isinstance(m, str) and m for m in models):
            raise StoreError("models must be a list of model patterns")
        out["models"] = tuple(models)
    return out


class LicenseStore(Protocol):
    """What the edge and the admin CLI need from a key store."""

    async def create_key(self, key_hash: str, prefix: str, spec: NewKey) -> KeyRecord: ...
    async def find_by_hash(self, key_hash: str) -> KeyRecord | None: ...
    async def get_key(self, ref: str) -> list[KeyRecord]: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def revoke(self, key_id: int) -> bool: ...
    async def set_enabled(self, key_id: int, enabled: bool) -> bool: ...
    # Changes the EDITABLE_FIELDS given (checked by check_changes); the updated record, or None
    # when no key has that id. Bumps the revision, so running edges apply the new limits.
    async def update_key(self, key_id: int, changes: Mapping[str, Any]) -> KeyRecord | None: ...
    async def revision(self) -> int: ...
    async def record_usage(self, rows: Sequence[UsageRow]) -> None: ...
    async def usage_summary(self, key_id: int | None = None, since: float | None = None) -> list[UsageSummary]: ...
    async def recent_usage(self, key_id: int | None = None, limit: int = 20) -> list[UsageRow]: ...
    async def count_usage(self, key_id: int | None = None) -> int: ...
    async def usage_by_credential(self, key_id: int | None = None,
                                  since: float | None = None) -> list[tuple[str, int, int, int]]: ...
    # Per UTC day, key and model (day, key id, model order), from `since` on.
    async def usage_by_day(self, key_id: int | None = None, since: float | None = None) -> list[DailyUsage]: ...
    async def close(self) -> None: ...


# --- SQLite ----------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('keys_revision', 0);
CREATE TABLE IF NOT EXISTS keys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    expires_at  REAL,
    revoked_at  REAL,
    models      TEXT NOT NULL DEFAULT '[]',
    rpm         INTEGER,
    tpm         INTEGER,
    quota       INTEGER,
    tokens_used INTEGER NOT NULL DEFAULT 0,
    max_concurrent INTEGER
);
-- Every change that matters for authorisation bumps the revision the edge polls, so a revoke
-- from the CLI (another process) reaches a running edge at once. tokens_used is left out:
-- ledger writes must not flush the edge's key cache.
CREATE TRIGGER IF NOT EXISTS keys_rev_insert AFTER INSERT ON keys
BEGIN UPDATE meta SET value = value + 1 WHERE name = 'keys_revision'; END;
CREATE TRIGGER IF NOT EXISTS keys_rev_update
AFTER UPDATE OF name, key_hash, enabled, expires_at, revoked_at, models, rpm, tpm, quota ON keys
BEGIN UPDATE meta SET value = value + 1 WHERE name = 'keys_revision'; END;
CREATE TRIGGER IF NOT EXISTS keys_rev_delete AFTER DELETE ON keys
BEGIN UPDATE meta SET value = value + 1 WHERE name = 'keys_revision'; END;
CREATE TABLE IF NOT EXISTS usage (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id            INTEGER NOT NULL,
    created_at        REAL NOT NULL,
    api               TEXT NOT NULL,
    op                TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    thought_tokens    INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    total_tokens      INTEGER NOT NULL,
    status            INTEGER NOT NULL,
    latency_ms        REAL NOT NULL,
    request_id        TEXT NOT NULL DEFAULT '',
    credential_kind   TEXT NOT NULL DEFAULT '',
    credential_id     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS usage_key_time ON usage (key_id, created_at);
"""

# Columns added after the first release: (table, column, definition). Databases created before
# get them on open; old rows read as ''.
_ADDED_COLUMNS = (
    ("usage", "credential_kind", "TEXT NOT NULL DEFAULT ''"),
    ("usage", "credential_id", "TEXT NOT NULL DEFAULT ''"),
    ("keys", "max_concurrent", "INTEGER"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    for table, column, definition in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            except sqlite3.OperationalError as exc:
                # Another process (the edge, the keys CLI) migrated the same file just now.
                if "duplicate column" not in str(exc):
                    raise


_KEY_COLS = ("id, name, prefix, key_hash, enabled, created_at, expires_at, revoked_at, models, "
             "rpm, tpm, quota, tokens_used, max_concurrent")
_USAGE_COLS = ("key_id, api, op, model, status, latency_ms, prompt_tokens, completion_tokens, "
               "thought_tokens, cached_tokens, total_tokens, created_at, request_id, credential_kind, credential_id")


def _key_from_row(row: tuple) -> KeyRecord:
    (id_, name, prefix, key_hash, enabled, created, expires, revoked, models, rpm, tpm, quota,
     used, max_concurrent) = row
    return KeyRecord(id=id_, name=name, prefix=prefix, key_hash=key_hash, enabled=bool(enabled),
                     created_at=created, expires_at=expires, revoked_at=revoked,
                     models=tuple(orjson.loads(models or "[]")), rpm=rpm, tpm=tpm, quota=quota,
                     tokens_used=used, max_concurrent=max_concurrent)


class SQLiteLicenseStore:
    def __init__(self, path: str | Path, *, readers: int = 2) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._reader = ThreadPoolExecutor(readers, thread_name_prefix="license-read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="license-write")
        self._closed = False
        # The schema is created once, synchronously, before any worker uses the database.
        is_new = self.path != ":memory:" and not Path(self.path).exists()
        conn = self._connect()
        conn.executescript(_SCHEMA)
        _migrate(conn)
        conn.close()
        if is_new:
            # Hashes only, but usage and key names are nobody else's business either.
            Path(self.path).chmod(0o600)

    # -- plumbing -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._reader, lambda: fn(self._conn()))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")

        def run() -> T:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

        return await asyncio.get_running_loop().run_in_executor(self._writer, run)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for ex in (self._reader, self._writer):
            ex.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns.clear()

    # -- keys ------------------------------------------------------------------------------

    async def create_key(self, key_hash: str, prefix: str, spec: NewKey) -> KeyRecord:
        if not spec.name.strip():
            raise StoreError("a key needs a name")

        def op(c: sqlite3.Connection) -> KeyRecord:
            cur = c.execute(
                "INSERT INTO keys (name, prefix, key_hash, enabled, created_at, expires_at, models, rpm, tpm, quota,"
                " max_concurrent) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                (spec.name, prefix, key_hash, time.time(), spec.expires_at,
                 orjson.dumps(list(spec.models)).decode(), spec.rpm, spec.tpm, spec.quota, spec.max_concurrent))
            row = c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE id = ?", (cur.lastrowid,)).fetchone()
            return _key_from_row(row)

        return await self._write(op)

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        def op(c: sqlite3.Connection) -> KeyRecord | None:
            row = c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE key_hash = ?", (key_hash,)).fetchone()
            return _key_from_row(row) if row else None

        rec = await self._read(op)
        # The index found the row by equality; compare again in constant time so that no code
        # path ever accepts a key through a non-constant-time comparison of secret material.
        if rec is not None and not hashes_equal(rec.key_hash, key_hash):
            return None
        return rec

    async def get_key(self, ref: str) -> list[KeyRecord]:
        """Keys matching an id, a visible prefix (or its start) or a name."""
        def op(c: sqlite3.Connection) -> list[KeyRecord]:
            if ref.isdigit():
                rows = c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE id = ?", (int(ref),)).fetchall()
                if rows:
                    return [_key_from_row(r) for r in rows]
            rows = c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE name = ? ORDER BY id", (ref,)).fetchall()
            if not rows and len(ref) >= len(KEY_SCHEME) + 2:
                # Accept the visible prefix or the full key pasted by an admin.
                rows = c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE prefix = substr(?, 1, length(prefix))"
                                 " ORDER BY id", (ref,)).fetchall()
            return [_key_from_row(r) for r in rows]

        return await self._read(op)

    async def list_keys(self) -> list[KeyRecord]:
        return await self._read(
            lambda c: [_key_from_row(r) for r in c.execute(f"SELECT {_KEY_COLS} FROM keys ORDER BY id")])

    async def revoke(self, key_id: int) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                            (time.time(), key_id))
            return cur.rowcount > 0

        return await self._write(op)

    async def set_enabled(self, key_id: int, enabled: bool) -> bool:
        return await self._write(
            lambda c: c.execute("UPDATE keys SET enabled = ? WHERE id = ?", (int(enabled), key_id)).rowcount > 0)

    async def update_key(self, key_id: int, changes: Mapping[str, Any]) -> KeyRecord | None:
        fields = check_changes(changes)
        if "models" in fields:
            fields["models"] = orjson.dumps(list(fields["models"])).decode()

        def op(c: sqlite3.Connection) -> KeyRecord | None:
            if fields:
                sets = ", ".join(f"{name} = ?" for name in fields)  # names from EDITABLE_FIELDS only
                if c.execute(f"UPDATE keys SET {sets} WHERE id = ?", (*fields.values(), key_id)).rowcount == 0:
                    return None
                # The update trigger predates max_concurrent: bump the revision here for every field.
                c.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_revision'")
            row = c.execute(f"SELECT {_KEY_COLS} FROM keys WHERE id = ?", (key_id,)).fetchone()
            return _key_from_row(row) if row else None

        return await self._write(op)

    async def revision(self) -> int:
        return await self._read(
            lambda c: c.execute("SELECT value FROM meta WHERE name = 'keys_revision'").fetchone()[0])

    # -- ledger ----------------------------------------------------------------------------

    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        per_key: dict[int, int] = {}
        for r in rows:
            per_key[r.key_id] = per_key.get(r.key_id, 0) + r.total_tokens
        params = [(r.key_id, r.api, r.op, r.model, r.status, r.latency_ms, r.prompt_tokens,
                   r.completion_tokens, r.thought_tokens, r.cached_tokens, r.total_tokens,
                   r.created_at, r.request_id, r.credential_kind, r.credential_id) for r in rows]

        def op(c: sqlite3.Connection) -> None:
            # Rows and the per-key running total commit together, so quota never drifts.
            c.executemany(f"INSERT INTO usage ({_USAGE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", params)
            c.executemany("UPDATE keys SET tokens_used = tokens_used + ? WHERE id = ?",
                          [(n, k) for k, n in per_key.items() if n])

        await self._write(op)

    async def usage_summary(self, key_id: int | None = None, since: float | None = None) -> list[UsageSummary]:
        where, args = _usage_filter(key_id, since)

        def op(c: sqlite3.Connection) -> list[UsageSummary]:
            rows = c.execute(
                "SELECT key_id, model, COUNT(*), SUM(status >= 400), SUM(prompt_tokens),"
                " SUM(completion_tokens), SUM(thought_tokens), SUM(total_tokens)"
                f" FROM usage {where} GROUP BY key_id, model ORDER BY key_id, model", args).fetchall()
            return [UsageSummary(*r) for r in rows]

        return await self._read(op)

    async def recent_usage(self, key_id: int | None = None, limit: int = 20) -> list[UsageRow]:
        where, args = _usage_filter(key_id, None)

        def op(c: sqlite3.Connection) -> list[UsageRow]:
            rows = c.execute(f"SELECT {_USAGE_COLS} FROM usage {where} ORDER BY id DESC LIMIT ?",
                             (*args, limit)).fetchall()
            return [UsageRow(*r) for r in rows]

        return await self._read(op)

    async def count_usage(self, key_id: int | None = None) -> int:
        where, args = _usage_filter(key_id, None)
        return await self._read(lambda c: c.execute(f"SELECT COUNT(*) FROM usage {where}", args).fetchone()[0])

    async def usage_by_credential(self, key_id: int | None = None,
                                  since: float | None = None) -> list[tuple[str, int, int, int]]:
        """(credential kind, requests, errors, total tokens) per kind that served calls ('' = none)."""
        where, args = _usage_filter(key_id, since)
        return await self._read(lambda c: [tuple(r) for r in c.execute(
            "SELECT credential_kind, COUNT(*), SUM(status >= 400), SUM(total_tokens)"
            f" FROM usage {where} GROUP BY credential_kind ORDER BY credential_kind", args)])


    async def usage_by_day(self, key_id: int | None = None, since: float | None = None) -> list[DailyUsage]:
        where, args = _usage_filter(key_id, since)
        return await self._read(lambda c: [DailyUsage(*r) for r in c.execute(
            "SELECT date(created_at, 'unixepoch') AS day, key_id, model, COUNT(*), SUM(status >= 400),"
            " SUM(prompt_tokens), SUM(completion_tokens), SUM(thought_tokens), SUM(total_tokens)"
            f" FROM usage {where} GROUP BY day, key_id, model ORDER BY day, key_id, model", args)])


def _usage_filter(key_id: int | None, since: float | None) -> tuple[str, tuple[Any, ...]]:
    clauses, args = [], []
    if key_id is not None:
        clauses.append("key_id = ?")
        args.append(key_id)
    if since is not None:
        clauses.append("created_at >= ?")
        args.append(since)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def open_store(location: str) -> LicenseStore:
    """A store for a LICENSE_DB value: a SQLite file path (or sqlite:/// URL) today."""
    if location.startswith(("postgres://", "postgresql://")):
        raise StoreError("PostgreSQL license stores are not implemented yet; use a SQLite file path")
    if location.startswith("sqlite:///"):
        location = location[len("sqlite:///"):]
    return SQLiteLicenseStore(location)
