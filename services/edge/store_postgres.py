"""The license store on PostgreSQL (LICENSE_DB=postgresql://user:password@host:port/db), shared by
any number of edges and keys CLIs.

One asyncpg connection pool per process, opened on first use; the schema is migrated then,
under a transaction-scoped advisory lock, so edges starting together migrate once and the
others wait and find it done. Retention takes another advisory lock: one process prunes at a
time and the others skip that run. The SQL is the SQLite store's (store_schema.py), rendered for
PostgreSQL.
"""
from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import asyncpg
import orjson

from services.edge import store_schema as sql
from services.edge.store import (DailyUsage, KeyRecord, NewKey, RollupResult, StoreError, UsageRow, UsageSummary,
                                 daily_usage, describe_location, hashes_equal, key_from_row, key_ref_queries,
                                 tokens_per_key, update_columns, usage_params)

# Advisory lock ids (any 64-bit numbers, the same in every process of the gateway).
MIGRATION_LOCK = 0x6763_6C69_0001
ROLLUP_LOCK = 0x6763_6C69_0002

POOL_MIN = 1
POOL_MAX = 10


def _redacted(text: str, dsn: str) -> str:
    password = urlsplit(dsn).password if "@" in dsn else None
    return text.replace(password, "***") if password else text


@functools.lru_cache(maxsize=256)
def _pg(query: str) -> str:
    # A bounded set of query texts (filters only vary by which clauses are present).
    return sql.dialect_sql(query, "postgres")


async def migrate_connection(conn: asyncpg.Connection) -> int:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        for stmt in sql.step_sql(sql.CreateTable(sql.META), "postgres"):
            await conn.execute(stmt)
        version = await conn.fetchval(sql.VERSION_GET) or 0
        for number, _what, steps in sql.pending(version):
            for step in steps:
                for stmt in sql.step_sql(step, "postgres"):
                    await conn.execute(stmt)
            await conn.execute(_pg(sql.VERSION_SET), number)
            version = number
    return version


class PostgresLicenseStore:
    def __init__(self, dsn: str, *, min_size: int = POOL_MIN, max_size: int = POOL_MAX) -> None:
        self.dsn = dsn
        self._min, self._max = min_size, max_size
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False
        self.schema_version = 0

    # -- plumbing -------------------------------------------------------------------------

    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreError("store is closed")
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                try:
                    pool = await asyncpg.create_pool(self.dsn, min_size=self._min, max_size=self._max,
                                                     command_timeout=60)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError,
                        ValueError) as exc:
                    raise StoreError(f"cannot open the license database {describe_location(self.dsn)}: "
                                     f"{type(exc).__name__}: {_redacted(str(exc), self.dsn)}") from None
                try:
                    async with pool.acquire() as conn:
                        self.schema_version = await migrate_connection(conn)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await (await self._get_pool()).fetch(_pg(query), *args)

    async def _fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await (await self._get_pool()).fetchrow(_pg(query), *args)

    async def _fetchval(self, query: str, *args: Any) -> Any:
        return await (await self._get_pool()).fetchval(_pg(query), *args)

    async def _execute(self, query: str, *args: Any) -> int:
        status = await (await self._get_pool()).execute(_pg(query), *args)
        return int(status.rsplit(" ", 1)[-1])  # "UPDATE 1" → rows affected

    async def migrate(self) -> int:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            self.schema_version = await migrate_connection(conn)
        return self.schema_version

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- keys ------------------------------------------------------------------------------

    async def create_key(self, key_hash: str, prefix: str, spec: NewKey) -> KeyRecord:
        if not spec.name.strip():
            raise StoreError("a key needs a name")
        row = await self._fetchrow(sql.INSERT_KEY, spec.name, prefix, key_hash, time.time(), spec.expires_at,
                                   orjson.dumps(list(spec.models)).decode(), spec.rpm, spec.tpm, spec.quota,
                                   spec.max_concurrent)
        assert row is not None
        return key_from_row(row)

    async def find_by_hash(self, key_hash: str) -> KeyRecord | None:
        row = await self._fetchrow(sql.KEY_BY_HASH, key_hash)
        rec = key_from_row(row) if row else None
        # As on SQLite: the index matched by equality, the final comparison is constant-time.
        if rec is not None and not hashes_equal(rec.key_hash, key_hash):
            return None
        return rec

    async def get_key(self, ref: str) -> list[KeyRecord]:
        """Keys matching an id, a visible prefix (or its start) or a name."""
        for query, args in key_ref_queries(ref):
            rows = await self._fetch(query, *args)
            if rows:
                return [key_from_row(r) for r in rows]
        return []

    async def list_keys(self) -> list[KeyRecord]:
        return [key_from_row(r) for r in await self._fetch(sql.KEYS_ALL)]

    async def revoke(self, key_id: int) -> bool:
        return await self._execute(sql.REVOKE, time.time(), key_id) > 0

    async def set_enabled(self, key_id: int, enabled: bool) -> bool:
        return await self._execute(sql.SET_ENABLED, int(enabled), key_id) > 0

    async def revision(self) -> int:
        # One row of `meta`, bumped by a trigger on every key change: cheap enough to poll.
        return await self._fetchval(sql.REVISION)

    # -- ledger ----------------------------------------------------------------------------

    async def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        params = [usage_params(r) for r in rows]
        per_key = tokens_per_key(rows)
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            # Rows and the per-key running total commit together, so quota never drifts.
            await conn.executemany(_pg(sql.INSERT_USAGE), params)
            if per_key:
                await conn.executemany(_pg(sql.ADD_TOKENS_USED), per_key)

    async def usage_summary(self, key_id: int | None = None, since: float | None = None) -> list[UsageSummary]:
        query, args = sql.totals_query(sql.USAGE_SUMMARY, key_id, since)
        return [UsageSummary(*r) for r in await self._fetch(query, *args)]

    async def recent_usage(self, key_id: int | None = None, limit: int = 20) -> list[UsageRow]:
        where, args = sql.usage_filter(key_id, None)
        rows = await self._fetch(sql.RECENT_USAGE.format(where=where), *args, limit)
        return [UsageRow(*r) for r in rows]

    async def count_usage(self, key_id: int | None = None) -> int:
        where, args = sql.usage_filter(key_id, None)
        return await self._fetchval(sql.COUNT_USAGE.format(where=where), *args)

    async def usage_by_credential(self, key_id: int | None = None,
                                  since: float | None = None) -> list[tuple[str, int, int, int]]:
        query, args = sql.totals_query(sql.USAGE_BY_CREDENTIAL, key_id, since)
        return [tuple(r) for r in await self._fetch(query, *args)]

    async def update_key(self, key_id: int, changes: Mapping[str, Any]) -> KeyRecord | None:
        fields = update_columns(changes)
        if fields:
            row = await self._fetchrow(sql.update_key_sql(list(fields)), *fields.values(), key_id)
        else:
            row = await self._fetchrow(sql.KEY_BY_ID, key_id)
        return key_from_row(row) if row else None

    async def usage_by_day(self, key_id: int | None = None, since: float | None = None) -> list[DailyUsage]:
        query, args = sql.totals_query(sql.USAGE_BY_DAY, key_id, since)
        return [daily_usage(r) for r in await self._fetch(query, *args)]

    # -- retention -------------------------------------------------------------------------

    async def roll_up(self, before: float, batch: int = sql.ROLLUP_BATCH) -> RollupResult:
        pool = await self._get_pool()
        rows = batches = 0
        async with pool.acquire() as conn:
            # A session lock, taken before any batch's snapshot: a batch then sees every batch
            # another process committed before, so the daily sums never race.
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ROLLUP_LOCK):
                return RollupResult(skipped=True)
            try:
                while True:
                    # REPEATABLE READ: the sum and the delete see the same rows, even if a ledger
                    # row with an old timestamp commits in between.
                    async with conn.transaction(isolation="repeatable_read"):
                        bound = await conn.fetchval(_pg(sql.ROLLUP_BOUND), before, batch)
                        n = 0
                        if bound is not None:
                            await conn.execute(_pg(sql.ROLLUP_INSERT), before, bound)
                            status = await conn.execute(_pg(sql.ROLLUP_DELETE), before, bound)
                            n = int(status.rsplit(" ", 1)[-1])
                    rows += n
                    batches += 1 if n else 0
                    if n < batch:
                        return RollupResult(rows=rows, batches=batches)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", ROLLUP_LOCK)
