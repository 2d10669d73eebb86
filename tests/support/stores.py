"""The same license-store tests on both engines: `license_db` is a LICENSE_DB value, a SQLite file
path or the DSN of a fresh PostgreSQL database (tests/support/servers.py). The helpers read and
write the database behind the store's back (raw SQL through the engine's own driver), as another
process or an operator would.
"""
from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

ENGINES = ("sqlite", "postgres")


@pytest.fixture(params=ENGINES)
def license_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "licenses.db")
    return request.getfixturevalue("pg_dsn")


def is_pg(location: str) -> bool:
    return location.startswith(("postgres://", "postgresql://"))


def _numbered(query: str) -> str:
    out, n = [], 0
    for part in query.split("?"):
        out.append(part)
        n += 1
        out.append(f"${n}")
    return "".join(out[:-1])


async def fetch(location: str, query: str, *args: Any) -> list[tuple]:
    """Rows of a raw query (`?` placeholders) on its own connection."""
    if not is_pg(location):
        with sqlite3.connect(location, timeout=30) as conn:
            return [tuple(r) for r in conn.execute(query, args).fetchall()]
    conn = await asyncpg.connect(location)
    try:
        return [tuple(r) for r in await conn.fetch(_numbered(query), *args)]
    finally:
        await conn.close()


async def execute(location: str, query: str, *args: Any) -> None:
    if not is_pg(location):
        with sqlite3.connect(location, timeout=30) as conn:
            conn.execute(query, args)
        return
    conn = await asyncpg.connect(location)
    try:
        await conn.execute(_numbered(query), *args)
    finally:
        await conn.close()


def fetch_sync(location: str, query: str, *args: Any) -> list[tuple]:
    """`fetch` for synchronous tests (integration tests drive processes, not an event loop)."""
    return asyncio.run(fetch(location, query, *args))


async def everything_stored(location: str) -> bytes:
    """Every byte the database holds for the gateway: the SQLite files, or every row of every
    table of the PostgreSQL database as text."""
    if not is_pg(location):
        path = Path(location)
        return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
    conn = await asyncpg.connect(location)
    try:
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        assert tables, "no tables in the database"
        chunks = []
        for t in tables:
            chunks += [r[0] for r in await conn.fetch(f'SELECT t::text FROM "{t}" AS t')]
        return "\n".join(chunks).encode()
    finally:
        await conn.close()


def fetch_dicts_sync(location: str, query: str, *args: Any) -> list[dict]:
    """Rows of a raw query as {column: value}, for synchronous tests."""
    if not is_pg(location):
        with sqlite3.connect(location, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(query, args)]

    async def run() -> list[dict]:
        conn = await asyncpg.connect(location)
        try:
            return [dict(r) for r in await conn.fetch(_numbered(query), *args)]
        finally:
            await conn.close()

    return asyncio.run(run())
