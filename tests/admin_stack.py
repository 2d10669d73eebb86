"""A whole stack for the admin console's tests: simulator → upstream → edge → Envoy, with
credential directories the console can add to (Code Assist files in creds/, AI Studio keys in
keys/ through a pool-file member) and no ADMIN_TOKEN, so the edge generates one and prints it
once in its log, as a new operator would see it.
"""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests import harness
from tests.stack_fixtures import start_gateway

ROOT = "/gemini_cli"
TOKEN_LINE = re.compile(r"admin token \(shown once, keep it\): (gwadmin-\S+)")


@dataclass
class AdminStack:
    upstream: harness.Proc
    edge: harness.Proc
    envoy: harness.Proc
    creds: Path
    keys_dir: Path
    token: str

    @property
    def public(self) -> str:
        return f"{self.envoy.url}{ROOT}"

    def api(self, via_envoy: bool = True) -> httpx.Client:
        base = self.public if via_envoy else f"{self.edge.url}{ROOT}"
        return httpx.Client(base_url=f"{base}/admin/api", trust_env=False, timeout=60,
                            headers={"Authorization": f"Bearer {self.token}"})

    def stop(self) -> None:
        for proc in (self.envoy, self.edge, self.upstream):
            proc.stop()


def printed_token(edge: harness.Proc, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = TOKEN_LINE.findall(edge.log())
        if found:
            assert len(found) == 1, "the admin token must be printed exactly once"
            return found[0]
        assert time.monotonic() < deadline, f"the edge printed no admin token:\n{edge.log()[-3000:]}"
        time.sleep(0.1)


def start_admin_stack(simulator: harness.Proc, base: Path) -> AdminStack:
    creds, keys_dir = base / "creds", base / "keys"
    keys_dir.mkdir(parents=True)
    harness.write_credential(creds / "seat.json", f"rt-admin-{uuid.uuid4().hex[:8]}")
    pool = base / "pool.toml"
    pool.write_text(f'[[members]]\nname = "studio"\nkind = "ai-studio"\nfile = "{keys_dir}"\npriority = 1\n')
    up, edge, envoy = start_gateway(simulator, base, creds, {"POOL_CONFIG": str(pool), "POOL_RELOAD_SECONDS": "0.5"},
                                    {"AUTH_REFRESH_SECONDS": "0.1", "LEDGER_FLUSH_SECONDS": "0.05",
                                     "MODELS_CACHE_SECONDS": "0"})
    return AdminStack(up, edge, envoy, creds, keys_dir, printed_token(edge))
