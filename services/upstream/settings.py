"""Settings of the upstream service: environment variables, optionally a TOML file.

Every field is read from the environment variable of the same name in upper case
(`CODE_ASSIST_ENDPOINT`, ...). `GATEWAY_CONFIG` may name a TOML file holding the same keys
(lower or upper case, at top level or in an `[upstream]` table); the environment wins over
the file, the file over the defaults. The file is shared with the other services, so keys
this service does not know are ignored.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import orjson
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.config_file import GatewaySettings

# The Gemini CLI's published installed-app OAuth client (protocol notes §4). Installed-app
# secrets are not confidential by design; they identify the app, not the user.
GEMINI_CLI_CLIENT_ID = "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com"
GEMINI_CLI_CLIENT_SECRET = "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"

# Used only when nothing else names a credential (no POOL_CONFIG, GEMINI_API_KEYS, VERTEX_*).
DEFAULT_CREDENTIALS = "~/.gemini/oauth_creds.json"
AI_STUDIO_ENDPOINT = "https://generativelanguage.googleapis.com"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"


DEFAULT_MODEL_ALIASES = {
    "gemini-2.0-pro": "gemini-2.5-pro",
    "gemini-2.0-flash": "gemini-2.5-flash",
    "gemini-2.0-flash-lite": "gemini-2.5-flash-lite",
}


class Settings(GatewaySettings):
    config_table: ClassVar[str] = "upstream"
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_prefix="", populate_by_name=True)

    # --- backend ---------------------------------------------------------------------
    code_assist_endpoint: str = "https://cloudcode-pa.googleapis.com"
    code_assist_api_version: str = "v1internal"
    oauth_token_url: str = "https://oauth2.googleapis.com/token"
    oauth_client_id: str = GEMINI_CLI_CLIENT_ID
    oauth_client_secret: str = GEMINI_CLI_CLIENT_SECRET
    # Version put in the User-Agent, which mimics the Gemini CLI's.
    cli_version: str = "0.56.0"

    # --- AI Studio and Vertex AI ------------------------------------------------------------
    ai_studio_endpoint: str = AI_STUDIO_ENDPOINT
    # Base URL used as-is for every Vertex location when set (else Google's regional/global hosts).
    vertex_endpoint: str = ""
    vertex_token_url: str = GOOGLE_TOKEN_URL
    vertex_location: str = "global"

    # --- credentials and projects --------------------------------------------------------
    # Code Assist oauth_creds.json file or directory ("" = the Gemini CLI's own file, but only
    # when no other credential is configured).
    gemini_credentials: str = ""
    # AI Studio API keys, comma-separated.
    gemini_api_keys: str = ""
    # Vertex AI service-account (or ADC) JSON file, or a directory of them.
    vertex_credentials: str = ""
    # Vertex AI express-mode API keys, comma-separated.
    vertex_api_keys: str = ""
    # TOML file listing pool members (kinds, secrets' locations, models, priority, weight, proxy).
    pool_config: str = ""
    # How often credential and pool files are checked for changes (seconds).
    pool_reload_seconds: float = Field(2.0, gt=0)
    # A credential the backend refused for its account (SUBSCRIPTION_REQUIRED, tier gone, ...)
    # is tried again after this long, or at once when its file changes.
    ineligible_recheck_seconds: float = Field(1800.0, gt=0)
    # A model a member answered 404/403 for is not asked of it again for this long.
    unsupported_model_seconds: float = Field(3600.0, gt=0)
    # retrieveUserQuota is polled this often per Code Assist credential (0 = never).
    quota_poll_seconds: float = Field(300.0, ge=0)
    # The Gemini CLI honours both names.
    google_cloud_project: str = Field("", validation_alias=AliasChoices("google_cloud_project",
                                                                        "google_cloud_project_id"))
    onboard_poll_interval: float = Field(5.0, ge=0)
    onboard_max_polls: int = Field(24, ge=1)
    # Load credentials, refresh tokens and discover projects right after start, in the
    # background, so the first request does not pay for it.
    startup_warmup: bool = True

    # --- pool ----------------------------------------------------------------------------
    default_cooldown_seconds: float = Field(30.0, ge=0)
    max_cooldown_seconds: float = Field(1800.0, ge=0)
    # How long a credential is left aside when its token endpoint or project discovery
    # fails for a reason that may pass (5xx, network).
    transient_cooldown_seconds: float = Field(10.0, ge=0)
    # Attempts per call on backend 5xx / network errors (each on another credential if any).
    max_attempts: int = Field(3, ge=1)
    # Longest a call waits for its credential's token refresh (and the token endpoint's HTTP
    # timeout). A hung token endpoint then sets the credential aside and the call moves on to
    # another credential, instead of waiting out the backend read timeout.
    refresh_timeout: float = Field(15.0, gt=0)

    # --- several replicas ---------------------------------------------------------------
    # Redis shared by the upstream replicas (redis://, rediss://): one refresh per credential
    # (a lease), refreshed tokens, cool-downs and DEAD marks. "" = one process, state local.
    redis_url: SecretStr | None = None

    @property
    def redis_url_value(self) -> str:
        return self.redis_url.get_secret_value().strip() if self.redis_url else ""

    # --- HTTP ------------------------------------------------------------------------------
    connect_timeout: float = Field(10.0, gt=0)
    # Idle time allowed between two chunks of a response (and before the response head).
    read_timeout: float = Field(120.0, gt=0)
    # Whole-call deadline for unary backend calls.
    request_timeout: float = Field(600.0, gt=0)
    # Open backend connections at most. A streamed answer holds one for its whole length
    # (HTTP/1.1), so this caps the concurrent streams of the process; calls beyond it wait
    # up to CONNECT_TIMEOUT for a free one.
    http_max_connections: int = Field(4096, ge=1)
    # Extra CA bundle (PEM) trusted for backend TLS besides the system and certifi roots: a
    # TLS-inspecting proxy's CA, or a test backend's. Verification itself is never off.
    backend_ca_file: str = ""
    # Largest backend answer accepted: a unary body after decompression, or one streamed
    # event. Past it the call fails (not retried on another credential).
    backend_max_response_bytes: int = Field(64 * 1024 * 1024, ge=1024)

    # --- server ----------------------------------------------------------------------------
    upstream_listen: str = "127.0.0.1:50051"
    # Internal callers (the edge, operators' services): `name:{SHA}hash` lines, see
    # internal_auth.py. Required unless UPSTREAM_LISTEN is a loopback address.
    internal_tokens_file: str = ""
    drain_seconds: float = Field(10.0, ge=0)
    log_level: str = "INFO"
    # "text" (readable) or "json" (one object per line).
    log_format: Literal["text", "json"] = "text"
    # Prometheus /metrics on its own port (-1: not served), on METRICS_LISTEN.
    metrics_listen: str = "127.0.0.1"
    upstream_metrics_port: int = Field(9465, ge=-1, le=65535)

    # Extra model ids for the catalog: "a,b" or a JSON list of ids / objects
    # ({"id", "display_name", "input_token_limit", "output_token_limit", "thinking": {...}}).
    models: Annotated[list[Any], NoDecode] = Field(default_factory=list)

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            if text.startswith("["):
                return orjson.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    # Retired or renamed model ids and what to send instead ("old=new,old2=new2" or a TOML
    # table). The defaults keep documents written for older models working (the seed's video
    # example asks for gemini-2.0-pro) and apply the CLI's own renames.
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=lambda: dict(DEFAULT_MODEL_ALIASES))

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _parse_aliases(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError("MODEL_ALIASES must look like old=new,old2=new2")
            return {old.strip(): new.strip() for old, new in pairs}
        return value

    @field_validator("code_assist_endpoint", "oauth_token_url", "ai_studio_endpoint", "vertex_endpoint",
                     "vertex_token_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @property
    def base_url(self) -> str:
        return f"{self.code_assist_endpoint}/{self.code_assist_api_version}"

    @property
    def credentials_path(self) -> Path:
        return Path(self.gemini_credentials or DEFAULT_CREDENTIALS).expanduser()

    @property
    def only_default_credentials(self) -> bool:
        """Nothing configured at all: look for the Gemini CLI's own login file."""
        return not any((self.gemini_credentials, self.gemini_api_keys, self.vertex_credentials,
                        self.vertex_api_keys, self.pool_config))



@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
