"""Stacks for the fault and hostile-input suites: simulator → upstream → edge (→ Envoy), each a
real process started through tests/harness.py, with as many credentials as a test needs.

`Rig.close()` stops whatever is still running (SIGTERM, then SIGKILL), so a failing test never
leaves processes behind.
"""
from __future__ import annotations

import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import grpc
import httpx
import orjson
from google.protobuf.json_format import MessageToDict

from gemini_cli.upstream.v1 import upstream_pb2, upstream_pb2_grpc
from tests import harness
from tests.simulator.control import SimControl
from tests.support.stores import fetch_sync

MODEL = "gemini-2.5-pro"

# Fast ledger flushes and key-cache polls keep the tests short; nothing else differs from the
# defaults (in particular MEDIA_ALLOW_PRIVATE stays false).
EDGE_ENV = {
    "AUTH_REFRESH_SECONDS": "0.1",
    "LEDGER_FLUSH_SECONDS": "0.05",
    "SSE_KEEPALIVE_SECONDS": "0",
}


def new_token(label: str) -> str:
    """A refresh token no other test uses (the simulator makes a fresh account for it)."""
    return f"1//{label}-{uuid.uuid4().hex[:12]}"


def gemini_body(text: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def chat_body(text: str, *, stream: bool = False, model: str = MODEL) -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


def sse_data(raw: bytes) -> list[bytes]:
    """The data fields of an SSE body, in order."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    return [line[len(b"data: "):] for line in lines if line.startswith(b"data: ")]


def start_upstream_on(log_dir: Path, sim_url: str, credentials: Path, port: int,
                      env: Mapping[str, str] | None = None, name: str = "upstream") -> harness.Proc:
    """Like harness.start_upstream, but on a port the caller chose (to restart in place)."""
    full = {
        "UPSTREAM_LISTEN": f"{harness.LOOPBACK}:{port}",
        "CODE_ASSIST_ENDPOINT": sim_url,
        "OAUTH_TOKEN_URL": f"{sim_url}/token",
        "GEMINI_CREDENTIALS": str(credentials),
        "ONBOARD_POLL_INTERVAL": "0.05",
        "LOG_LEVEL": "INFO",
        "INTERNAL_TOKENS_FILE": str(harness.internal_auth().tokens_file),
        **(env or {}),
    }
    proc = harness.spawn(name, [harness.PY, "-m", "services.upstream"], port, log_dir, full)
    harness.wait_until(lambda: harness.grpc_serving(proc.addr), proc)
    return proc


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Rig:
    base: Path
    simulator: harness.Proc
    sim: SimControl
    tokens: list[str]
    upstream: harness.Proc | None = None
    edge: harness.Proc | None = None
    envoy: harness.Proc | None = None

    @property
    def creds(self) -> Path:
        return self.base / "creds"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def api(self) -> str:
        """The edge's API root (direct, not through Envoy)."""
        assert self.edge is not None
        return f"{self.edge.url}/gemini_cli"

    @property
    def public(self) -> str:
        """The API root through Envoy."""
        assert self.envoy is not None
        return f"{self.envoy.url}/gemini_cli"

    @property
    def db_path(self) -> str:
        """LICENSE_DB of the edge: a SQLite path or a PostgreSQL DSN."""
        assert self.edge is not None
        return self.edge.extra["env"]["LICENSE_DB"]

    def key(self, *args: str) -> str:
        assert self.edge is not None
        return harness.create_key(self.edge, "--name", f"k-{uuid.uuid4().hex[:8]}", *args)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run the admin CLI (`python -m services.edge.keys ...`) against this edge's database."""
        assert self.edge is not None
        env = harness._base_env()
        env.update(self.edge.extra["env"])
        return subprocess.run([harness.PY, "-m", "services.edge.keys", *args], cwd=harness.ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    def key_id(self, key: str) -> int:
        """The key's row id: looked up by its visible prefix, never by the full key."""
        ((kid,),) = fetch_sync(self.db_path, "SELECT id FROM keys WHERE prefix = substr(?, 1, length(prefix))", key)
        return kid

    def usage_rows(self, key_id: int, *, expect: int | None = None, timeout: float = harness.SETTLE_TIMEOUT) -> list[dict]:
        return harness.usage_rows(self.db_path, key_id, expect=expect, timeout=timeout)

    def upstream_models(self) -> dict:
        """ListModels straight from the upstream (credential states included), as a dict."""
        assert self.upstream is not None
        with grpc.insecure_channel(self.upstream.addr) as ch:
            resp = upstream_pb2_grpc.UpstreamStub(ch).ListModels(upstream_pb2.ListModelsRequest(), timeout=10,
                                                                 metadata=harness.internal_metadata())
        return MessageToDict(resp)

    def close(self) -> None:
        for proc in (self.envoy, self.edge, self.upstream):
            if proc is not None:
                proc.stop(timeout=10)
        self.sim.close()


def start_rig(simulator: harness.Proc, base: Path, *, credentials: int = 1, label: str = "rig",
              upstream_env: Mapping[str, str] | None = None, edge_env: Mapping[str, str] | None = None,
              edge: bool = True, envoy: bool = False, tokens: list[str] | None = None,
              creds_extra: Mapping[str, object] | None = None) -> Rig:
    """Start an upstream with `credentials` credential files (expired access tokens, so each
    first use refreshes) and, unless edge=False, an edge (and optionally Envoy) in front.
    `tokens` gives the refresh tokens (to script faults for them before anything starts);
    `creds_extra` adds fields to every credential file."""
    sim = SimControl(simulator.url)
    tokens = tokens or [new_token(f"{label}{i}") for i in range(credentials)]
    rig = Rig(base, simulator, sim, tokens)
    for i, token in enumerate(tokens):
        path = harness.write_credential(rig.creds / f"cred{i}.json", token)
        if creds_extra:
            path.write_bytes(orjson.dumps({**orjson.loads(path.read_bytes()), **creds_extra},
                                          option=orjson.OPT_INDENT_2))
    try:
        rig.upstream = harness.start_upstream(rig.logs, simulator.url, rig.creds,
                                              {"STARTUP_WARMUP": "true", **(upstream_env or {})})
        if edge:
            rig.edge = harness.start_edge(rig.logs, rig.upstream.addr, base / "data", {**EDGE_ENV, **(edge_env or {})})
        if envoy:
            assert rig.edge is not None
            rig.envoy = harness.start_envoy(rig.logs, rig.edge.port, rig.upstream.port)
    except BaseException:
        rig.close()
        raise
    return rig


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    """Poll `check()` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def client(timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(timeout=timeout, trust_env=False)


def burst(n: int, call: Callable[[httpx.Client, int], httpx.Response]) -> list[httpx.Response]:
    """`n` calls at once, call(client, i) each from a client of its own (a barrier releases them
    together)."""
    gate = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        with client(timeout=60) as c:
            gate.wait()
            return call(c, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def assert_refusal(r: httpx.Response) -> None:
    """A limit's refusal: 403 (quota, revoked) or 429 with a sane Retry-After."""
    assert r.status_code in (403, 429), (r.status_code, r.text[:300])
    if r.status_code == 429:
        assert 1 <= int(r.headers["retry-after"]) <= 60


@contextmanager
def slow_generations(rig: "Rig", delay: float) -> Iterator[None]:
    """Every generation of the rig's first account waits `delay` seconds before answering."""
    ids = [rig.sim.add_fault(account=rig.tokens[0], op=op, kind="slow", delay=delay, times=-1)
           for op in ("generate", "stream")]
    try:
        yield
    finally:
        for fid in ids:
            rig.sim.remove_fault(fid)
