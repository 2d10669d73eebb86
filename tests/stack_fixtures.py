"""The whole stack (simulator → upstream → edge) as a fixture, for conformance and integration tests.

Import the fixture into a conftest or test module (`from tests.stack_fixtures import stack`);
it needs the session `simulator` fixture of tests/conftest.py. Each importing location gets its
own stack (own upstream, own edge, own license database); the simulator is shared.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests import harness

EDGE_ENV = {
    # Small enough that the oversize tests stay cheap.
    "MAX_BODY_BYTES": str(2 * 1024 * 1024),
    "SSE_KEEPALIVE_SECONDS": "0.5",
    "AUTH_REFRESH_SECONDS": "0.1",
    "LEDGER_FLUSH_SECONDS": "0.05",
}


@dataclass
class Stack:
    simulator: harness.Proc
    upstream: harness.Proc
    edge: harness.Proc
    envoy: harness.Proc
    refresh_token: str
    pool: str = "code-assist"  # which members the upstream's pool has (POOLS)

    @property
    def base(self) -> str:
        """The edge's public base URL, root path included."""
        return f"{self.edge.url}/gemini_cli"

    @property
    def public_base(self) -> str:
        """The same API as users reach it: through Envoy in front of the edge."""
        return f"{self.envoy.url}/gemini_cli"

    @property
    def db_path(self) -> str:
        return self.edge.extra["env"]["LICENSE_DB"]

    def key(self, *args: str, name: str | None = None) -> str:
        """A new license key; extra args go to `keys create` (e.g. "--rpm", "2")."""
        return harness.create_key(self.edge, "--name", name or f"t-{uuid.uuid4().hex[:8]}", *args)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = harness._base_env()
        env.update(self.edge.extra["env"])
        return subprocess.run([harness.PY, "-m", "services.edge.keys", *args], cwd=harness.ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    def key_id(self, key: str) -> int:
        out = self.cli("show", key)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split("\n", 1)[0].split()[-1])

    def ledger(self, key_id: int, *, expect: int | None = None, timeout: float = harness.SETTLE_TIMEOUT) -> list[dict]:
        """The key's ledger rows, oldest first; with `expect`, waits until that many are written."""
        return harness.usage_rows(self.db_path, key_id, expect=expect, timeout=timeout)

    def stop(self) -> None:
        for proc in (self.envoy, self.edge, self.upstream):
            proc.stop()


# Which members the upstream's pool has: Code Assist seats only (the historical stack), AI
# Studio keys only, Vertex AI only (a service account and an express key), or all three with
# the Code Assist seat first and the others as the overflow tier.
POOLS = ("code-assist", "ai-studio", "vertex", "mixed")


def pool_members(pool: str, simulator: harness.Proc, base: Path, tag: str,
                 code_assist_accounts: int = 1) -> tuple[Path | None, dict[str, str]]:
    """(Code Assist credential directory or None, upstream environment) for a pool kind.
    Service accounts are registered with the simulator, which checks their signatures."""
    from tests.cloud_keys import write_service_account
    from tests.simulator.control import SimControl

    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}")
    suffix = uuid.uuid4().hex[:8]
    creds: Path | None = None
    env: dict[str, str] = {}
    if pool in ("code-assist", "mixed"):
        creds = base / "creds"
        for i in range(code_assist_accounts):
            harness.write_credential(creds / f"{chr(97 + i)}.json", f"rt-{tag}-{chr(97 + i)}-{suffix}")
    if pool in ("ai-studio", "mixed"):
        env["GEMINI_API_KEYS"] = f"AIza-{tag}-1-{suffix},AIza-{tag}-2-{suffix}"
    if pool in ("vertex", "mixed"):
        email = f"{tag}-{suffix}@proj-{tag}.iam.gserviceaccount.com"
        public = write_service_account(base / "vertex" / "sa.json", email, f"proj-{tag}", f"{simulator.url}/token")
        with SimControl(simulator.url) as ctl:
            ctl.add_service_account(email, public, project=f"proj-{tag}")
        env.update(VERTEX_CREDENTIALS=str(base / "vertex"), VERTEX_LOCATION="us-central1",
                   VERTEX_API_KEYS=f"express-{tag}-{suffix}")
    return creds, env


def start_gateway(simulator: harness.Proc, base: Path, creds: Path | None, up_env: dict[str, str],
                  edge_env: dict[str, str]) -> tuple[harness.Proc, harness.Proc, harness.Proc]:
    """upstream → edge → Envoy in front of the simulator, logs in base/logs and the edge's data
    in base/data; if a part fails to start, those already up are stopped."""
    logs = base / "logs"
    started: list[harness.Proc] = []
    try:
        up = harness.start_upstream(logs, simulator.url, creds, up_env)
        started.append(up)
        edge = harness.start_edge(logs, up.addr, base / "data", edge_env)
        started.append(edge)
        envoy = harness.start_envoy(logs, edge.port, up.port)
    except Exception:
        for proc in reversed(started):
            proc.stop()
        raise
    return up, edge, envoy


def start_stack(simulator: harness.Proc, base: Path, edge_env: dict[str, str] | None = None,
                pool: str = "code-assist") -> Stack:
    refresh_token = f"rt-edge-{uuid.uuid4().hex[:8]}"
    creds, up_env = pool_members(pool, simulator, base, "edge")
    if creds is not None:
        harness.write_credential(creds / "a.json", refresh_token)
    up, edge, envoy = start_gateway(simulator, base, creds, up_env, {**EDGE_ENV, **(edge_env or {})})
    return Stack(simulator, up, edge, envoy, refresh_token, pool)


@pytest.fixture(scope="session")
def stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(simulator, tmp_path_factory.mktemp("edge-stack"))
    try:
        yield s
    finally:
        s.stop()
        if os.environ.get("EDGE_TEST_SHOW_LOGS"):
            print(s.edge.log()[-5000:])


@pytest.fixture(scope="session", params=POOLS)
def pool_stack(request: pytest.FixtureRequest, simulator: harness.Proc,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The full stack once per pool kind (POOLS): suites that must hold whatever serves them."""
    s = start_stack(simulator, tmp_path_factory.mktemp(f"stack-{request.param}"), pool=request.param)
    try:
        yield s
    finally:
        s.stop()
        if os.environ.get("EDGE_TEST_SHOW_LOGS"):
            print(s.edge.log()[-5000:])
