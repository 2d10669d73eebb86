"""The embedded license store: one SQLite file in WAL mode.

Every database call runs on a worker thread (one connection per thread), so the event loop
never waits on disk. Writes go through a single writer thread, because SQLite serialises
writers anyway; each write is one IMMEDIATE transaction, which also makes migrations and
retention safe when the edge and the keys CLI open the same file at once.
"""
from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import orjson

from services.edge import store_schema as sql
from services.edge.store import (DailyUsage, KeyRecord, NewKey, RollupResult, StoreError, UsageRow, UsageSummary,
                                 daily_usage, hashes_equal, key_from_row, key_ref_queries, tokens_per_key,
                                 update_columns, usage_params)

T = TypeVar("T")


def migrate_connection(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in one IMMEDIATE transaction; returns the schema version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in sql.step_sql(sql.CreateTable(sql.META), "sqlite"):
            conn.execute(stmt)
        row = conn.execute(sql.VERSION_GET).fetchone()
        version = row[0] if row else 0
        for number, _what, steps in sql.pending(version):
            for step in steps:
                have = None
                if isinstance(step, sql.AddMissingColumns):
                    have = {r[1] for r in conn.execute(f"PRAGMA table_info({step.table.name})")}
                for stmt in sql.step_sql(step, "sqlite", have):
                    conn.execute(stmt)
            conn.execute(sql.VERSION_SET, (number,))
            version = number
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return version


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
        # The schema is brought up to date once, synchronously, before any worker uses the file.
        is_new = self.path != ":memory:" and not Path(self.path).exists()
        conn = self._connect()
        try:
            self.schema_version = migrate_connection(conn)
        finally:
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

    async def migrate(self) -> int:
        # The constructor migrated already; another process may have opened an older file since.
        if self._closed:
            raise StoreError("store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._writer,
                                                                lambda: migrate_connection(self._conn()))

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
        args = (spec.name, prefix, key_hash, time.time(), spec.expires_at, orjson.dumps(list(spec.models)).decode(),
                spec.rpm, spec.tpm, spec.quota, spec.max_concurrent)
        return await self._write(lambda c: key_from_row(c.execute(sql.INSERT_KEY, args).fetchone()))

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = await self._read(lambda c: c.execute(sql.KEY_BY_HASH, (key_hash,)).fetchone())
        rec = key_from_row(row) if row else None
        # The index found the row by equality; compare again in constant time so that no code
        # path ever accepts a key through a non-constant-time comparison of secret material.
        if rec is not None and not hashes_equal(rec.key_hash, key_hash):
            return None
        return rec

    async def get_key(self, ref: str) -> list[KeyRecord]:
        """Keys matching an id, a visible prefix (or its start) or a name."""
        def op(c: sqlite3.Connection) -> list[KeyRecord]:
            for query, args in key_ref_queries(ref):
                rows = c.execute(query, args).fetchall()
                if rows:
                    return [key_from_row(r) for r in rows]
            return []

        return await self._read(op)

    async def list_keys(self) -> list[KeyRecord]:
        return await self._read(lambda c: [key_from_row(r) for r in c.execute(sql.KEYS_ALL)])

    async def revoke(self, key_id: int) -> bool:
        return await self._write(lambda c: c.execute(sql.REVOKE, (time.time(), key_id)).rowcount > 0)

    async def set_enabled(self, key_id: int, enabled: bool) -> bool:
        return await self._write(lambda c: c.execute(sql.SET_ENABLED, (int(enabled), key_id)).rowcount > 0)

    async def revision(self) -> int:
        return await self._read(lambda c: c.execute(sql.REVISION).fetchone()[0])

    # -- ledger ----------------------------------------------------------------------------

    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        params = [usage_params(r) for r in rows]
        per_key = tokens_per_key(rows)

        def op(c: sqlite3.Connection) -> None:
            # Rows and the per-key running total commit together, so quota never drifts.
            c.executemany(sql.INSERT_USAGE, params)
            c.executemany(sql.ADD_TOKENS_USED, per_key)

        await self._write(op)

    async def usage_summary(self, key_id: int | None = None, since: float | None = None) -> list[UsageSummary]:
        query, args = sql.totals_query(sql.USAGE_SUMMARY, key_id, since)
        return await self._read(lambda c: [UsageSummary(*r) for r in c.execute(query, args)])

    async def recent_usage(self, key_id: int | None = None, limit: int = 20) -> list[UsageRow]:
        where, args = sql.usage_filter(key_id, None)
        query = sql.RECENT_USAGE.format(where=where)
        return await self._read(lambda c: [UsageRow(*r) for r in c.execute(query, (*args, limit))])

    async def count_usage(self, key_id: int | None = None) -> int:
        where, args = sql.usage_filter(key_id, None)
        return await self._read(lambda c: c.execute(sql.COUNT_USAGE.format(where=where), args).fetchone()[0])

    async def usage_by_credential(self, key_id: int | None = None,
                                  since: float | None = None) -> list[tuple[str, int, int, int]]:
        query, args = sql.totals_query(sql.USAGE_BY_CREDENTIAL, key_id, since)
        return await self._read(lambda c: [tuple(r) for r in c.execute(query, args)])

    async def update_key(self, key_id: int, changes: Mapping[str, Any]) -> KeyRecord | None:
        fields = update_columns(changes)

        def op(c: sqlite3.Connection) -> KeyRecord | None:
            if fields:
                row = c.execute(sql.update_key_sql(list(fields)), (*fields.values(), key_id)).fetchone()
            else:
                row = c.execute(sql.KEY_BY_ID, (key_id,)).fetchone()
            return key_from_row(row) if row else None

        return await self._write(op)

    async def usage_by_day(self, key_id: int | None = None, since: float | None = None) -> list[DailyUsage]:
        query, args = sql.totals_query(sql.USAGE_BY_DAY, key_id, since)
        query = sql.dialect_sql(query, "sqlite")
        return await self._read(lambda c: [daily_usage(r) for r in c.execute(query, args)])

    # -- retention -------------------------------------------------------------------------

    async def roll_up(self, before: float, batch: int = sql.ROLLUP_BATCH) -> RollupResult:
        insert = sql.dialect_sql(sql.ROLLUP_INSERT, "sqlite")

        def op(c: sqlite3.Connection) -> int:
            (bound,) = c.execute(sql.ROLLUP_BOUND, (before, batch)).fetchone()
            if bound is None:
                return 0
            c.execute(insert, (before, bound))
            return c.execute(sql.ROLLUP_DELETE, (before, bound)).rowcount

        rows = batches = 0
        while True:
            # One transaction per batch: the edge's ledger writes interleave with a long prune.
            n = await self._write(op)
            rows += n
            batches += 1 if n else 0
            if n < batch:
                return RollupResult(rows=rows, batches=batches)
