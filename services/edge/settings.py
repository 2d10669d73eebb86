"""Edge settings: environment variables first, then the optional TOML file named by
`GATEWAY_CONFIG` (its top level, refined by its `[edge]` table), then defaults.

The admin CLI (`python -m services.edge.keys`) reads the same settings, so both always agree on
the license database and the HMAC secret.
"""
from __future__ import annotations

import base64
import json
import os
import secrets
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.config_file import GatewaySettings

MIB = 1024 * 1024
DEFAULT_ANTHROPIC_MODEL_MAP = {"opus": "gemini-2.5-pro", "sonnet": "gemini-2.5-pro", "haiku": "gemini-2.5-flash",
                               "claude": "gemini-2.5-pro"}


class EdgeSettings(GatewaySettings):
    config_table: ClassVar[str] = "edge"
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    data_dir: Path = Path("./data")
    # SQLite file path (default: $DATA_DIR/licenses.db), or postgresql://user:password@host:port/db
    # to keep keys and the ledger in PostgreSQL (shared by several edges).
    license_db: str = ""
    # Ledger rows older than this many days are summed into daily totals (per key, model, UTC
    # day) and deleted; 0 keeps every row forever.
    usage_retention_days: int = Field(90, ge=0)
    # How often the edge runs that retention job.
    usage_rollup_seconds: float = Field(3600.0, gt=0)
    # HMAC key for stored license hashes; generated into $DATA_DIR/license_secret when unset.
    license_secret: SecretStr | None = None
    # redis://host:port/db shared by the edge replicas: rate windows, reservations, concurrency
    # caps and key-change fan-out (services/edge/redis_limits.py). Unset: limits per process.
    redis_url: SecretStr | None = None
    # Connect/read timeout of each Redis call; past it a limited key's request gets a 503.
    redis_timeout: float = Field(0.5, gt=0)

    # The admin console's token (sent as `Authorization: Bearer`). Unset: one is generated at
    # first start, printed once, and only its hash kept in $DATA_DIR/admin_token_hash.
    admin_token: SecretStr | None = None

    root_path: str = "/gemini_cli"
    edge_host: str = "127.0.0.1"
    edge_port: int = 8081
    # host:port of one upstream, or a gRPC target naming several (`ipv4:a:p,b:p`,
    # `dns:///name:port`): calls then go round-robin over the healthy ones.
    upstream_addr: str = "127.0.0.1:50051"
    # Deadline for a whole Generate call (streams included) and for the small unary calls.
    upstream_timeout: float = 600.0
    upstream_small_timeout: float = 30.0
    # The edge's credentials as an internal caller of the upstream (INTERNAL_TOKEN, or the
    # file INTERNAL_TOKEN_FILE holding it), under the name INTERNAL_CALLER; see the README.
    internal_caller: str = "edge"
    internal_token: SecretStr | None = None
    internal_token_file: Path | None = None

    max_body_bytes: int = Field(32 * MIB, gt=0)
    # Bytes of large (> 1 MiB) request bodies one edge process holds at once (503 + Retry-After
    # past it): what its memory limit is derived from. Unset: 3 × MAX_BODY_BYTES.
    max_inflight_body_bytes: int | None = Field(None, gt=0)

    media_max_bytes: int = Field(20 * MIB, gt=0)
    media_fetch_timeout: float = Field(15.0, gt=0)
    media_max_redirects: int = Field(3, ge=0)
    media_allow_private: bool = False
    # Remote media URLs fetched for one OpenAI request (each up to MEDIA_MAX_BYTES).
    media_max_urls: int = Field(16, ge=0)
    # Bytes fetched from media URLs for one request, all URLs together (413 once exceeded).
    media_max_total_bytes: int = Field(24 * MIB, gt=0)
    # Bytes of fetched media held by all requests of one edge process at once (503 + Retry-After
    # once exceeded): bounds the edge's memory for media, whatever the concurrency.
    media_max_inflight_bytes: int = Field(64 * MIB, gt=0)

    # Claude model names (matched by the key they contain, longest key first; "claude" catches
    # the rest) → Gemini models, for the Anthropic Messages API. JSON or "key=model,key=model".
    anthropic_model_map: Annotated[dict[str, str], NoDecode] = Field(default_factory=lambda: dict(DEFAULT_ANTHROPIC_MODEL_MAP))

    # Comment lines sent on OpenAI streams during silences (long thinking); 0 disables them.
    sse_keepalive_seconds: float = Field(15.0, ge=0)
    # Streamed events that reach the upstream together cross gRPC as one message and leave in
    # one write (each still its own event for the client). false only to measure what it saves.
    stream_coalesce: bool = True

    # How often the key cache polls the store's change counter; a revoked key is refused
    # within this interval (the CLI writes to the same database).
    auth_refresh_seconds: float = Field(0.25, gt=0)
    # Upper bound on how long a cached key record is trusted even without a change signal.
    auth_cache_ttl: float = Field(30.0, gt=0)
    # ListModels answers are cached this long.
    models_cache_seconds: float = Field(30.0, ge=0)
    # Ledger rows are written in batches at this interval (and on shutdown).
    ledger_flush_seconds: float = Field(0.1, gt=0)

    # In-flight requests (streams included) get this long to finish after SIGTERM.
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    log_level: str = "INFO"
    # "text" (readable) or "json" (one object per line) for every log line of the service.
    log_format: Literal["text", "json"] = "text"
    # Prometheus /metrics on its own port, never the public one (-1: not served).
    metrics_listen: str = "127.0.0.1"
    edge_metrics_port: int = Field(9464, ge=-1, le=65535)

    @field_validator("anthropic_model_map", mode="before")
    @classmethod
    def _parse_model_map(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().startswith("{"):
            v = json.loads(v)
        elif isinstance(v, str):
            pairs = [item.partition("=") for item in v.split(",") if item.strip()]
            if any(not sep or not k.strip() or not m.strip() for k, sep, m in pairs):
                raise ValueError("ANTHROPIC_MODEL_MAP must be JSON or 'name=model,name=model'")
            v = {k.strip(): m.strip() for k, _, m in pairs}
        if isinstance(v, dict):
            return {str(k).strip().lower(): str(m).strip() for k, m in v.items()}
        return v

    @field_validator("root_path")
    @classmethod
    def _normalise_root(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v and not v.startswith("/"):
            v = "/" + v
        return v


    # --- derived values -----------------------------------------------------------------

    @property
    def redis_url_value(self) -> str:
        return self.redis_url.get_secret_value().strip() if self.redis_url else ""

    @property
    def inflight_body_limit(self) -> int:
        return self.max_inflight_body_bytes or 3 * self.max_body_bytes

    @property
    def license_db_location(self) -> str:
        return self.license_db or str(self.data_dir / "licenses.db")

    def internal_token_value(self) -> str:
        token = self.internal_token.get_secret_value().strip() if self.internal_token else ""
        if not token and self.internal_token_file is not None:
            token = self.internal_token_file.expanduser().read_text().strip()
        return token

    def internal_authorization(self) -> str:
        """The `authorization` metadata for calls to the upstream ('' when no token is set)."""
        token = self.internal_token_value()
        if not token:
            return ""
        return "Basic " + base64.b64encode(f"{self.internal_caller}:{token}".encode()).decode()

    def resolve_secret(self) -> bytes:
        """The HMAC secret; on first run without LICENSE_SECRET one is generated and kept 0600."""
        if self.license_secret is not None and self.license_secret.get_secret_value():
            return self.license_secret.get_secret_value().encode()
        path = self.data_dir / "license_secret"
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            pass
        self.data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(48).encode()
        # O_EXCL: if two processes race on first run, exactly one secret wins and both use it.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(value)
        return value


def load_settings(**overrides: Any) -> EdgeSettings:
    return EdgeSettings(**overrides)
