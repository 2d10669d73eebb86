"""Which members the pool has: the pool file (POOL_CONFIG) and the plain shortcuts.

A member is one credential with what the pool needs to route to it. The pool file is TOML:

    allow_inline_secrets = false       # `key = "..."` in a member only when true

    [[members]]
    name = "seat-1"                    # id in ListModels and logs (default: from the file/key)
    kind = "code-assist"               # code-assist | ai-studio | vertex | vertex-express
    file = "~/.gemini/oauth_creds.json"  # a file (or, for code-assist/vertex, a directory)
    # env = "AI_STUDIO_KEY_1"          # API keys: the environment variable holding the key
    models = ["gemini-2.5-*"]          # glob patterns; default: any model
    priority = 0                       # lower tiers are tried first
    weight = 1                         # share within its tier
    proxy = "http://proxy:3128"        # HTTP proxy for this member's backend calls
    project = "my-project"             # Vertex project (default: the key file's project_id)
    location = "global"                # Vertex location (default VERTEX_LOCATION)

Shortcuts, added after the file's members: GEMINI_CREDENTIALS (Code Assist files, priority
0), GEMINI_API_KEYS and VERTEX_API_KEYS (comma-separated keys, priority 1), VERTEX_CREDENTIALS
(service-account or ADC files, priority 1). With none of these and no pool file, the Gemini
CLI's own ~/.gemini/oauth_creds.json is used.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import Settings

KINDS = {"code-assist": "code-assist", "gemini-cli-oauth": "code-assist", "ai-studio": "ai-studio",
         "ai-studio-key": "ai-studio", "vertex": "vertex", "vertex-ai": "vertex", "vertex-express": "vertex-express"}
DEFAULT_PRIORITY = {"code-assist": 0, "ai-studio": 1, "vertex": 1, "vertex-express": 1}
_FIELDS = {"name", "kind", "file", "env", "key", "models", "priority", "weight", "proxy", "project", "location",
           "adc"}


class PoolConfigError(ValueError):
    """The pool file cannot be used as written."""


@dataclass(frozen=True)
class MemberSpec:
    kind: str                       # code-assist | ai-studio | vertex | vertex-express
    name: str = ""
    file: Path | None = None        # a file, or a directory to scan
    secret: str | None = field(default=None, repr=False)  # a key read from env or inline
    secret_source: str = ""         # "env:NAME" or "inline:N", for identity and notes
    models: tuple[str, ...] = ()
    priority: int = 0
    weight: int = 1
    proxy: str | None = None
    project: str | None = None
    location: str = "global"

    @property
    def identity(self) -> str:
        """What stays the same across reloads for the same member."""
        return f"{self.kind}|{self.file or self.secret_source}|{self.name}"


def _expand(path: str, base: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base is None else base / p


def _member(raw: Any, index: int, *, base: Path | None, allow_inline: bool, settings: Settings) -> MemberSpec:
    where = f"member #{index + 1}"
    if not isinstance(raw, dict):
        raise PoolConfigError(f"{where}: a member is a table")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise PoolConfigError(f"{where}: unknown fields {sorted(unknown)}")
    kind = KINDS.get(str(raw.get("kind", "")).lower())
    if kind is None:
        raise PoolConfigError(f"{where}: kind must be one of {sorted(set(KINDS.values()))}")
    name = str(raw.get("name") or "")
    where = f"member {name!r}" if name else where
    sources = [k for k in ("file", "env", "key", "adc") if raw.get(k)]
    if len(sources) != 1:
        raise PoolConfigError(f"{where}: give exactly one of file, env, key (or adc = true for vertex)")
    file = secret = None
    source = ""
    if raw.get("file"):
        file = _expand(str(raw["file"]), base)
    elif raw.get("env"):
        env = str(raw["env"])
        secret = os.environ.get(env, "").strip()
        if not secret:
            raise PoolConfigError(f"{where}: environment variable {env} is empty or not set")
        source = f"env:{env}"
    elif raw.get("key"):
        if not allow_inline:
            raise PoolConfigError(f"{where}: a secret written in the pool file needs allow_inline_secrets = true "
                                  "(prefer file = or env =)")
        secret = str(raw["key"]).strip()
        source = f"inline:{index}"
    else:
        if kind != "vertex":
            raise PoolConfigError(f"{where}: adc applies to kind vertex")
        file = adc_path()
        if file is None:
            raise PoolConfigError(f"{where}: no Application Default Credentials file found "
                                  "(GOOGLE_APPLICATION_CREDENTIALS or gcloud's well-known file)")
    if secret is not None and kind not in ("ai-studio", "vertex-express"):
        raise PoolConfigError(f"{where}: env/key give an API key: kind must be ai-studio or vertex-express")
    models = raw.get("models", [])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise PoolConfigError(f"{where}: models is a list of model ids or glob patterns")
    priority, weight = raw.get("priority", DEFAULT_PRIORITY[kind]), raw.get("weight", 1)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise PoolConfigError(f"{where}: priority must be an integer")
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
        raise PoolConfigError(f"{where}: weight must be an integer >= 1")
    return MemberSpec(kind=kind, name=name, file=file, secret=secret, secret_source=source,
                      models=tuple(m.removeprefix("models/") for m in models), priority=priority, weight=weight,
                      proxy=str(raw["proxy"]) if raw.get("proxy") else None,
                      project=str(raw["project"]) if raw.get("project") else None,
                      location=str(raw.get("location") or settings.vertex_location))


def adc_path() -> Path | None:
    """Where Application Default Credentials live (google-auth's order, metadata server aside)."""
    env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
    if env:
        return Path(env).expanduser()
    config = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "gcloud")
    path = Path(config) / "application_default_credentials.json"
    return path if path.is_file() else None


def load_pool_file(path: Path, settings: Settings) -> list[MemberSpec]:
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PoolConfigError(f"POOL_CONFIG names a missing file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PoolConfigError(f"POOL_CONFIG {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PoolConfigError(f"POOL_CONFIG {path} is not valid TOML: {exc}") from None
    members = raw.get("members", raw.get("member", []))
    if not isinstance(members, list):
        raise PoolConfigError("POOL_CONFIG: [[members]] is a list of tables")
    allow = raw.get("allow_inline_secrets") is True
    return [_member(m, i, base=path.parent, allow_inline=allow, settings=settings) for i, m in enumerate(members)]


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def shortcut_members(settings: Settings) -> list[MemberSpec]:
    s = settings
    out: list[MemberSpec] = []
    if s.gemini_credentials or s.only_default_credentials:
        out.append(MemberSpec(kind="code-assist", file=s.credentials_path, priority=0))
    for i, key in enumerate(_keys(s.gemini_api_keys)):
        out.append(MemberSpec(kind="ai-studio", secret=key, secret_source=f"GEMINI_API_KEYS:{i}", priority=1))
    if s.vertex_credentials:
        out.append(MemberSpec(kind="vertex", file=Path(s.vertex_credentials).expanduser(), priority=1,
                              location=s.vertex_location))
    for i, key in enumerate(_keys(s.vertex_api_keys)):
        out.append(MemberSpec(kind="vertex-express", secret=key, secret_source=f"VERTEX_API_KEYS:{i}", priority=1,
                              location=s.vertex_location))
    return out


def configured_members(settings: Settings) -> list[MemberSpec]:
    """Every member spec; raises PoolConfigError for a broken pool file."""
    members: list[MemberSpec] = []
    if settings.pool_config:
        members += load_pool_file(Path(settings.pool_config).expanduser(), settings)
    return members + shortcut_members(settings)
