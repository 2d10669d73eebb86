"""Several edges and several upstreams behind one Envoy, against one simulator: the scaled-out
topology of deploy/k8s as real processes on loopback.

    client ─▶ Envoy ─▶ edge × M ─(round_robin over every upstream)─▶ upstream × N ─▶ simulator

Every process is started by tests/harness.py's start_* functions. What the replicas share is
what production shares: one license database (LICENSE_DB: a SQLite file every edge opens, or a
postgresql:// DSN) and, when given, one Redis (REDIS_URL, to edges and upstreams alike). Each
upstream gets its own copy of the same credential files, as each pod seeds its own copy from
the Secret.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tests import harness

# Quick enough for tests; the defaults elsewhere are production's.
EDGE_ENV = {
    "LEDGER_FLUSH_SECONDS": "0.05",
    "SSE_KEEPALIVE_SECONDS": "0.5",
}


def grpc_target(upstreams: Sequence[harness.Proc]) -> str:
    """The edge's UPSTREAM_ADDR for several upstreams: one gRPC target listing every address."""
    return "ipv4:" + ",".join(u.addr for u in upstreams)


@dataclass
class Cluster:
    simulator: harness.Proc
    upstreams: list[harness.Proc]
    edges: list[harness.Proc]
    envoy: harness.Proc
    base: Path
    refresh_tokens: list[str]
    shared_env: dict[str, str] = field(default_factory=dict)

    @property
    def public_base(self) -> str:
        """The API as users reach it: Envoy in front of every edge."""
        return f"{self.envoy.url}/gemini_cli"

    def edge_base(self, i: int) -> str:
        return f"{self.edges[i].url}/gemini_cli"

    @property
    def license_db(self) -> str:
        return self.edges[0].extra["env"]["LICENSE_DB"]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """The admin CLI against the shared license database (as any edge's environment)."""
        env = harness._base_env()
        env.update(self.edges[0].extra["env"])
        return subprocess.run([harness.PY, "-m", "services.edge.keys", *args], cwd=harness.ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    def key(self, *args: str, name: str | None = None) -> str:
        """A new license key; extra args go to `keys create` (e.g. "--rpm", "2")."""
        return harness.create_key(self.edges[0], "--name", name or f"c-{uuid.uuid4().hex[:8]}", *args)

    def key_id(self, key: str) -> int:
        out = self.cli("show", key)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split("\n", 1)[0].split()[-1])

    def ledger(self, key_id: int, *, expect: int | None = None, timeout: float = harness.SETTLE_TIMEOUT) -> list[dict]:
        """The key's ledger rows (every edge's), oldest first; with `expect`, waits until that
        many are written."""
        db = self.license_db
        if db.startswith(("postgres://", "postgresql://")):
            return _pg_usage_rows(db, key_id, expect=expect, timeout=timeout)
        return harness.usage_rows(db, key_id, expect=expect, timeout=timeout)

    def metrics_text(self, proc: harness.Proc) -> str:
        import httpx

        return httpx.get(f"http://{harness.LOOPBACK}:{proc.extra['metrics_port']}/metrics", timeout=5,
                         trust_env=False).text

    def stop(self) -> None:
        for proc in (self.envoy, *self.edges, *self.upstreams):
            proc.stop()


def _pg_usage_rows(dsn: str, key_id: int, *, expect: int | None, timeout: float) -> list[dict]:
    """The ledger rows of a PostgreSQL license store, through psql (the server's own client, which
    tests/support/servers.py's PostgreSQL comes with)."""
    import csv
    import io
    import time

    psql = shutil.which("psql") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))), None)
    assert psql, "psql not found: tests/system_deps.sh installs postgresql"
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([str(psql), dsn, "--csv", "-c",
                              f"SELECT * FROM usage WHERE key_id = {int(key_id)} ORDER BY id"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        rows = list(csv.DictReader(io.StringIO(out.stdout)))
        for row in rows:
            for k in ("status", "total_tokens", "key_id"):
                if k in row:
                    row[k] = int(row[k])
        if expect is None or len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def start_cluster(simulator: harness.Proc, base: Path, *, edges: int = 3, upstreams: int = 2,
                  credentials: int = 1, license_db: str | None = None, redis_url: str | None = None,
                  edge_env: dict[str, str] | None = None, upstream_env: dict[str, str] | None = None) -> Cluster:
    """Start `upstreams` upstreams, `edges` edges over all of them, and Envoy over every edge.
    `license_db`: the shared store (default: one SQLite file in `base`); `redis_url`: REDIS_URL
    for every edge and upstream."""
    logs = base / "logs"
    suffix = uuid.uuid4().hex[:8]
    tokens = [f"rt-cluster-{chr(97 + i)}-{suffix}" for i in range(credentials)]
    shared: dict[str, str] = {}
    if redis_url:
        shared["REDIS_URL"] = redis_url
    started: list[harness.Proc] = []
    harness.internal_auth()  # created once, before the threads below would race to create it
    try:
        def upstream(i: int) -> harness.Proc:
            creds = base / f"upstream-{i}" / "creds"
            for t in tokens:
                harness.write_credential(creds / f"{t}.json", t)
            return harness.start_upstream(logs, simulator.url, creds, {**shared, **(upstream_env or {})},
                                          name=f"upstream-{i}")

        with ThreadPoolExecutor(max(upstreams, edges)) as pool:
            ups = _start_all(pool, [lambda i=i: upstream(i) for i in range(upstreams)], started)
            env = {**EDGE_ENV, **shared, "LICENSE_DB": license_db or str(base / "licenses.db"),
                   **(edge_env or {})}

            def edge(i: int) -> harness.Proc:
                return harness.start_edge(logs, grpc_target(ups), base / f"edge-{i}", env, name=f"edge-{i}")

            # The first edge creates the database's schema; the others open it.
            eds = _start_all(pool, [lambda: edge(0)], started)
            eds += _start_all(pool, [lambda i=i: edge(i) for i in range(1, edges)], started)
        envoy = harness.start_envoy(logs, [e.port for e in eds], [u.port for u in ups])
        started.append(envoy)
    except BaseException:
        for proc in started:
            proc.stop()
        raise
    return Cluster(simulator, ups, eds, envoy, base, tokens, shared)


def _start_all(pool: ThreadPoolExecutor, starters: list, started: list[harness.Proc]) -> list[harness.Proc]:
    """Run the starters at once; every process that came up is recorded in `started` (to stop
    on failure) before the first failure is raised."""
    futures = [pool.submit(s) for s in starters]
    out, error = [], None
    for f in futures:
        try:
            proc = f.result()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others ended
            error = error or exc
            continue
        out.append(proc)
        started.append(proc)
    if error is not None:
        raise error
    return out


def kill(proc: harness.Proc) -> None:
    """SIGKILL, as a node that dies: no drain, no goodbye to the peers."""
    proc.stop(signal.SIGKILL, 5)
