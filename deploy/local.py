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
import sys
import tempfile
from pathlib import Path
from typing import Mapping

from deploy import internal_tokens
from deploy.envoy_config import DEFAULT_DESCRIPTOR, ConfigError, envoy_flags, render_file
from deploy.healthcheck import grpc_serving, http_ok
from deploy.local_banner import banner
from deploy.local_checks import (LOOPBACK, PY, ROOT_PATH, Ports, SetupError, check_credentials, check_ports_free,
                                 envoy_binary)
from services.edge.data_dir import DEMO_KEY_FILE, resolve_data_dir
from deploy.supervisor import ChildExited, StopRequested, Supervisor

ROOT = Path(__file__).resolve().parents[1]
DEMO_REFRESH_TOKEN = "demo-refresh-token"


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
