"""The edge with its license store and ledger on PostgreSQL (LICENSE_DB=postgresql://…), as real
processes: keys made by the keys CLI against the same DSN work through Envoy and the edge, ledger
rows land in PostgreSQL, two edges sharing the database see each other's key changes, and usage
retention in the edge keeps every total and each key's spent quota."""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from services.edge.store import UsageRow, open_store
from tests import harness
from tests.faults.rig import MODEL, gemini_body, wait_for
from tests.support.servers import PostgresServer
from tests.support.stores import fetch_sync

pytestmark = pytest.mark.timeout(180)

PASSWORD = "pw-never-shown"  # trust auth ignores it; it must not appear in any output
EDGE_ENV = {"AUTH_REFRESH_SECONDS": "0.1", "LEDGER_FLUSH_SECONDS": "0.05", "SSE_KEEPALIVE_SECONDS": "0"}
DAY = 86400


def with_password(dsn: str) -> str:
    return dsn.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@dataclass
class PgStack:
    dsn: str
    base: Path
    upstream: harness.Proc
    edges: list[harness.Proc]
    envoy: harness.Proc

    def cli(self, edge: harness.Proc, *args: str):
        import subprocess

        env = harness._base_env()
        env.update(edge.extra["env"])
        return subprocess.run([harness.PY, "-m", "services.edge.keys", *args], cwd=harness.ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    def key(self, edge: harness.Proc, *args: str) -> str:
        return harness.create_key(edge, "--name", f"pg-{uuid.uuid4().hex[:8]}", *args)


@pytest.fixture(scope="module")
def pg_stack(simulator: harness.Proc, postgres_server: PostgresServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgStack]:
    base = tmp_path_factory.mktemp("pgstack")
    dsn = with_password(postgres_server.create_database())
    harness.write_credential(base / "creds" / "a.json", f"1//pg-{uuid.uuid4().hex[:12]}")
    procs: list[harness.Proc] = []
    try:
        up = harness.start_upstream(base / "logs", simulator.url, base / "creds")
        procs.append(up)
        edges = []
        for i in range(2):
            edges.append(harness.start_edge(base / "logs", up.addr, base / f"data{i}",
                                            {**EDGE_ENV, "LICENSE_DB": dsn}, name=f"edge{i}"))
            procs.append(edges[-1])
        envoy = harness.start_envoy(base / "logs", edges[0].port, up.port)
        procs.append(envoy)
        yield PgStack(dsn, base, up, edges, envoy)
    finally:
        for p in reversed(procs):
            p.stop(timeout=10)


def generate(url: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}/gemini_cli/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key},
                      json=gemini_body("hello postgres"), timeout=30, trust_env=False)


def test_cli_key_works_through_envoy_and_both_edges_and_the_ledger_is_in_postgres(pg_stack: PgStack):
    key = pg_stack.key(pg_stack.edges[0])
    seen = []
    for url in (pg_stack.envoy.url, pg_stack.edges[0].url, pg_stack.edges[1].url):
        r = generate(url, key)
        assert r.status_code == 200, r.text
        seen.append(r.json()["usageMetadata"]["totalTokenCount"])

    ((kid,),) = fetch_sync(pg_stack.dsn, "SELECT id FROM keys WHERE prefix = substr(?, 1, length(prefix))", key)
    rows = harness.usage_rows(pg_stack.dsn, kid, expect=3, timeout=15)
    assert sorted(r["total_tokens"] for r in rows) == sorted(seen)
    assert all(r["status"] == 200 and r["credential_kind"] == "gemini-cli-oauth" for r in rows)
    ((used,),) = fetch_sync(pg_stack.dsn, "SELECT tokens_used FROM keys WHERE id = ?", kid)
    assert used == sum(seen)

    out = pg_stack.cli(pg_stack.edges[1], "usage", str(kid))
    assert out.returncode == 0, out.stderr
    (line,) = [ln for ln in out.stdout.splitlines() if MODEL in ln.split()]
    assert line.split()[2] == "3" and line.split()[-1] == str(sum(seen))
    # The DSN's password is in no output: not the CLI's, not the edges' logs.
    assert "database: postgresql://postgres:***@" in out.stderr
    for text in (out.stdout, out.stderr, *(e.log() for e in pg_stack.edges)):
        assert PASSWORD not in text


def test_two_edges_see_keys_created_and_revoked_through_either(pg_stack: PgStack):
    a, b = pg_stack.edges
    # Both edges have looked this key up (and cached its absence) before it exists.
    key = f"gcli-{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"
    for edge in (a, b):
        assert generate(edge.url, key).status_code == 401

    made = pg_stack.key(b)  # the CLI with edge B's settings
    for edge in (a, b):
        assert wait_for(lambda e=edge: generate(e.url, made).status_code == 200, 15, f"{edge.name} to accept")

    out = pg_stack.cli(a, "revoke", made)  # ... and revoked with edge A's
    assert out.returncode == 0 and "revoked" in out.stdout, out.stderr
    for edge in (a, b):
        r = wait_for(lambda e=edge: (lambda resp: resp if resp.status_code != 200 else None)(generate(e.url, made)),
                     15, f"{edge.name} to refuse")
        assert r.status_code == 401 and "revoked" in r.text


def test_retention_in_the_edge_keeps_totals_and_spent_quota(pg_stack: PgStack, tmp_path: Path):
    """Old ledger rows exist before an edge with USAGE_RETENTION_DAYS=7 starts: it rolls them up
    at start-up; `keys usage` reports the same, and the key whose quota those rows spent stays
    refused (quota follows the key's running total, not the rows left)."""
    key = pg_stack.key(pg_stack.edges[0], "--quota", "1000")
    ((kid,),) = fetch_sync(pg_stack.dsn, "SELECT id FROM keys WHERE prefix = substr(?, 1, length(prefix))", key)
    now = time.time()
    old = [UsageRow(key_id=kid, api="openai", op="generate", model=MODEL, status=200, latency_ms=5.0,
                    prompt_tokens=60, completion_tokens=40, total_tokens=100, created_at=now - (20 + i) * DAY,
                    credential_kind="gemini-cli-oauth", credential_id="a.json") for i in range(10)]

    async def record() -> None:
        store = open_store(pg_stack.dsn)
        try:
            await store.record_usage(old)
        finally:
            await store.close()

    asyncio.run(record())
    before = pg_stack.cli(pg_stack.edges[0], "usage", str(kid))
    assert before.returncode == 0 and "1000" in before.stdout, before.stderr

    edge = harness.start_edge(tmp_path / "logs", pg_stack.upstream.addr, tmp_path / "data",
                              {**EDGE_ENV, "LICENSE_DB": pg_stack.dsn, "USAGE_RETENTION_DAYS": "7",
                               "USAGE_ROLLUP_SECONDS": "0.5"}, name="edge-retention")
    try:
        wait_for(lambda: not fetch_sync(pg_stack.dsn, "SELECT id FROM usage WHERE key_id = ?", kid), 30,
                 "the edge to prune the old rows")
        daily = fetch_sync(pg_stack.dsn, "SELECT SUM(requests), SUM(total_tokens) FROM usage_daily WHERE key_id = ?",
                           kid)
        assert daily == [(10, 1000)]
        after = pg_stack.cli(pg_stack.edges[0], "usage", str(kid))
        assert after.stdout == before.stdout
        r = generate(edge.url, key)
        assert r.status_code == 403 and "quota" in r.text
        assert "ledger rows older than 7 days rolled up" in edge.log()
    finally:
        edge.stop(timeout=10)
