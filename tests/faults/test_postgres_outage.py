"""PostgreSQL goes away under a running edge (LICENSE_DB=postgresql://…) and comes back.

The outage is real: the database stops accepting connections and every open one is cut, as in a
failover. While it lasts, keys the edge already knows keep working and their ledger rows wait in
the edge; an unknown key gets a clear 503, never a 500. Once the database is back, the waiting
rows are written (none lost, none twice) and new keys work again without restarting the edge.
"""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from tests.faults.rig import MODEL, Rig, gemini_body, wait_for
from tests.support.servers import PostgresServer
from tests.support.stores import fetch_sync

pytestmark = pytest.mark.timeout(180)


def _db_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


def set_connections(server: PostgresServer, dsn: str, allowed: bool) -> None:
    """Let the database take connections, or refuse new ones and cut every open one."""
    async def run() -> None:
        conn = await asyncpg.connect(server.dsn("postgres"))
        try:
            name = _db_name(dsn)
            await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allowed else "false"}')
            if not allowed:
                await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def pg_rig(rigs, postgres_server: PostgresServer) -> Rig:
    dsn = postgres_server.create_database()
    rig = rigs(credentials=1, label="pg-outage", edge_env={"LICENSE_DB": dsn})
    return rig


def generate(rig: Rig, key: str) -> httpx.Response:
    return httpx.post(f"{rig.api}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key},
                      json=gemini_body(f"outage {uuid.uuid4().hex[:6]}"), timeout=30, trust_env=False)


def test_edge_rides_out_a_database_outage(pg_rig: Rig, postgres_server: PostgresServer, sim):
    dsn = pg_rig.db_path
    known = pg_rig.key()
    kid = pg_rig.key_id(known)
    assert generate(pg_rig, known).status_code == 200
    pg_rig.usage_rows(kid, expect=1, timeout=15)

    set_connections(postgres_server, dsn, False)
    try:
        with pytest.raises(asyncpg.PostgresError):  # the outage is real
            fetch_sync(dsn, "SELECT 1")
        during = [generate(pg_rig, known) for _ in range(5)]
        assert [r.status_code for r in during] == [200] * 5
        stranger = generate(pg_rig, f"gcli-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}")
        assert stranger.status_code == 503, stranger.text
        assert "license store" in stranger.text and "127.0.0.1" not in stranger.text and "t_" not in stranger.text
        assert stranger.headers.get("retry-after")
    finally:
        set_connections(postgres_server, dsn, True)

    rows = pg_rig.usage_rows(kid, expect=6, timeout=60)
    assert len(rows) == 6 and all(r["status"] == 200 for r in rows)
    assert len({r["request_id"] for r in rows}) == 6
    ((used,),) = fetch_sync(dsn, "SELECT tokens_used FROM keys WHERE id = ?", kid)
    assert used == sum(r["total_tokens"] for r in rows)

    fresh = pg_rig.key()  # made after the outage: the edge's pool reconnected by itself
    assert wait_for(lambda: generate(pg_rig, fresh).status_code == 200, 30, "a new key to work")
    assert pg_rig.edge.alive()
