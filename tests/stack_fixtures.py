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

    def ledger(self, key_id: int, *, expect: int | None = None, timeout: float = 5.0) -> list[dict]:
        """The key's ledger rows, oldest first; with `expect`, waits until that many are written."""
        return harness.usage_rows(self.db_path, key_id, expect=expect, timeout=timeout)

    def stop(self) -> None:
        for proc in (self.envoy, self.edge, self.upstream):
            proc.stop()


def start_stack(simulator: harness.Proc, base: Path, edge_env: dict[str, str] | None = None) -> Stack:
    refresh_token = f"rt-edge-{uuid.uuid4().hex[:8]}"
    creds = base / "creds"
    harness.write_credential(creds / "a.json", refresh_token)
    logs = base / "logs"
    up = harness.start_upstream(logs, simulator.url, creds)
    try:
        edge = harness.start_edge(logs, up.addr, base / "data", {**EDGE_ENV, **(edge_env or {})})
    except Exception:
        up.stop()
        raise
    try:
        envoy = harness.start_envoy(logs, edge.port, up.port)
    except Exception:
        edge.stop()
        up.stop()
        raise
    return Stack(simulator, up, edge, envoy, refresh_token)


@pytest.fixture(scope="session")
def stack(simulator: harness.Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(simulator, tmp_path_factory.mktemp("edge-stack"))
    try:
        yield s
    finally:
        s.stop()
        if os.environ.get("EDGE_TEST_SHOW_LOGS"):
            print(s.edge.log()[-5000:])
