"""License keys and the usage ledger, behind a small repository interface.

Keys are never stored: only HMAC-SHA256(server secret, key) plus a short visible prefix that
humans can recognise. Two engines implement `LicenseStore` with the same schema and SQL
(store_schema.py): SQLite, the embedded default (store_sqlite.py), and PostgreSQL when
LICENSE_DB is a postgresql:// URL (store_postgres.py), which several edges can share.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Mapping, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

import orjson

from services.edge import store_schema as sql
from services.edge.store_schema import ROLLUP_BATCH

KEY_SCHEME = "gcli-"
PREFIX_LEN = len(KEY_SCHEME) + 6


# --- keys ----------------------------------------------------------------------------------

def generate_key() -> str:
    return KEY_SCHEME + secrets.token_urlsafe(30)


def hash_key(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LEN]


def hashes_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def model_allowed(patterns: Sequence[str], model: str) -> bool:
    """An empty allow-list allows every model; otherwise a case-sensitive glob must match."""
    return not patterns or any(fnmatchcase(model, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class NewKey:
    name: str
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    quota: int | None = None
    expires_at: float | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: int
    name: str
    prefix: str
    key_hash: str
    enabled: bool
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    models: tuple[str, ...]
    rpm: int | None
    tpm: int | None
    quota: int | None
    # Ledger sum committed when this record was read.
    tokens_used: int = 0
    # Requests of this key that may run at once (None: no cap).
    max_concurrent: int | None = None

    def refusal(self, now: float) -> str | None:
        """Why this key may not be used at all right now (None when it may)."""
        if self.revoked_at is not None:
            return "revoked"
        if not self.enabled:
            return "disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return None

    def allows_model(self, model: str) -> bool:
        return model_allowed(self.models, model)


@dataclass(frozen=True, slots=True)
class UsageRow:
    key_id: int
    api: str            # "gemini" | "openai"
    op: str             # "generate" | "stream" | "count"
    model: str
    status: int         # HTTP status the client saw (499: client went away)
    latency_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    thought_tokens: int = 0
    cached_tokens: int = 0
    total_tokens: int = 0
    created_at: float = field(default_factory=time.time)
    request_id: str = ""
    # Which credential served the call: its kind ("gemini-cli-oauth", "ai-studio-key",
    # "vertex-ai") and the upstream's id for it; empty when none did (refused, failed early).
    credential_kind: str = ""
    credential_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageSummary:
    key_id: int
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    thought_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class RollupResult:
    """What one retention run did: raw rows summed into daily rows and deleted."""
    rows: int = 0
    batches: int = 0
    # Another process held the retention lock (PostgreSQL): it does the work.
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class DailyUsage(UsageSummary):
    """A UsageSummary of one UTC day ("YYYY-MM-DD")."""
    day: str


# KeyRecord fields an admin may change after creation (update_key); None clears a limit.
EDITABLE_FIELDS = frozenset({"name", "models", "rpm", "tpm", "quota", "expires_at", "max_concurrent"})


class StoreError(Exception):
    pass


def check_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` for update_key, checked the same way by every store implementation."""
    unknown = set(changes) - EDITABLE_FIELDS
    if unknown:
        raise StoreError(f"cannot change {', '.join(sorted(unknown))} of a key")
    out = dict(changes)
    if "name" in out and (not isinstance(out["name"], str) or not out["name"].strip()):
        raise StoreError("a key needs a name")
    for name in ("rpm", "tpm", "quota", "max_concurrent"):
        v = out.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise StoreError(f"{name} must be a whole number >= 0 (or none)")
    v = out.get("expires_at")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise StoreError("expires_at must be unix seconds (or none)")
    if "models" in out:
        models = out["models"] or ()
        if isinstance(models, str) or not all(isinstance(m, str) and m for m in models):
            raise StoreError("models must be a list of model patterns")
        out["models"] = tuple(models)
    return out


def update_columns(changes: Mapping[str, Any]) -> dict[str, Any]:
    """update_key's changes as column values, the same for every engine."""
    fields = check_changes(changes)
    if "models" in fields:
        fields["models"] = orjson.dumps(list(fields["models"])).decode()
    return fields


def daily_usage(row: Sequence[Any]) -> DailyUsage:
    """A store_schema.USAGE_BY_DAY row (its day as the epoch seconds of midnight UTC)."""
    return DailyUsage(int(row[1]), row[2], *(int(v or 0) for v in row[3:]),
                      day=time.strftime("%Y-%m-%d", time.gmtime(int(row[0]))))


class LicenseStore(Protocol):
    """What the edge and the admin CLI need from a key store."""

    async def create_key(self, key_hash: str, prefix: str, spec: NewKey) -> KeyRecord: ...
    async def find_by_hash(self, key_hash: str) -> KeyRecord | None: ...
    async def get_key(self, ref: str) -> list[KeyRecord]: ...
    async def list_keys(self) -> list[KeyRecord]: ...
    async def revoke(self, key_id: int) -> bool: ...
    async def set_enabled(self, key_id: int, enabled: bool) -> bool: ...
    # Changes the EDITABLE_FIELDS given (checked by check_changes); the updated record, or None
    # when no key has that id. Bumps the revision, so running edges apply the new limits.
    async def update_key(self, key_id: int, changes: Mapping[str, Any]) -> KeyRecord | None: ...
    async def revision(self) -> int: ...
    async def record_usage(self, rows: Sequence[UsageRow]) -> None: ...
    # Totals per key and model, rolled-up days included (a rolled-up day counts whole when
    # `since` falls inside it).
    async def usage_summary(self, key_id: int | None = None, since: float | None = None) -> list[UsageSummary]: ...
    # The newest raw ledger rows.
    async def recent_usage(self, key_id: int | None = None, limit: int = 20) -> list[UsageRow]: ...
    # Raw ledger rows held (what retention bounds); totals come from usage_summary.
    async def count_usage(self, key_id: int | None = None) -> int: ...
    # (credential kind, requests, errors, total tokens) per kind that served calls ('' = none).
    async def usage_by_credential(self, key_id: int | None = None,
                                  since: float | None = None) -> list[tuple[str, int, int, int]]: ...
    # Brings the schema to store_schema.SCHEMA_VERSION (idempotent; returns it).
    async def migrate(self) -> int: ...
    # Sums raw rows created before `before` into daily rows and deletes them (retention).
    async def roll_up(self, before: float, batch: int = ROLLUP_BATCH) -> RollupResult: ...
    # Per UTC day, key and model (day, key id, model order), from `since` on; rolled-up days included.
    async def usage_by_day(self, key_id: int | None = None, since: float | None = None) -> list[DailyUsage]: ...
    async def close(self) -> None: ...


def key_from_row(row: Sequence[Any]) -> KeyRecord:
    """A KeyRecord from a row in store_schema.KEY_COLS order (either engine)."""
    (id_, name, prefix, key_hash, enabled, created, expires, revoked, models, rpm, tpm, quota,
     used, max_concurrent) = row
    return KeyRecord(id=id_, name=name, prefix=prefix, key_hash=key_hash, enabled=bool(enabled),
                     created_at=created, expires_at=expires, revoked_at=revoked,
                     models=tuple(orjson.loads(models or "[]")), rpm=rpm, tpm=tpm, quota=quota,
                     tokens_used=used, max_concurrent=max_concurrent)


def usage_params(r: UsageRow) -> tuple:
    """A ledger row's values in store_schema.USAGE_ROW_COLS order."""
    return (r.key_id, r.api, r.op, r.model, r.status, r.latency_ms, r.prompt_tokens, r.completion_tokens,
            r.thought_tokens, r.cached_tokens, r.total_tokens, r.created_at, r.request_id, r.credential_kind,
            r.credential_id)


def tokens_per_key(rows: Sequence[UsageRow]) -> list[tuple[int, int]]:
    """(tokens, key id) to add to each key's running total, in key order (so two writers that
    lock several key rows always lock them in the same order)."""
    per_key: dict[int, int] = {}
    for r in rows:
        per_key[r.key_id] = per_key.get(r.key_id, 0) + r.total_tokens
    return [(n, k) for k, n in sorted(per_key.items()) if n]


def key_ref_queries(ref: str) -> list[tuple[str, tuple]]:
    """What `get_key(ref)` tries, in order, until one finds keys: an id, a name, then the visible
    prefix (or its start, or the full key pasted by an admin)."""
    plan: list[tuple[str, tuple]] = []
    if ref.isdigit():
        plan.append((sql.KEY_BY_ID, (int(ref),)))
    plan.append((sql.KEYS_BY_NAME, (ref,)))
    if len(ref) >= len(KEY_SCHEME) + 2:
        plan.append((sql.KEYS_BY_PREFIX, (ref,)))
    return plan


def is_postgres(location: str) -> bool:
    return location.startswith(("postgres://", "postgresql://"))


def describe_location(location: str) -> str:
    """LICENSE_DB as it may be logged or printed: a PostgreSQL URL loses its password."""
    if not is_postgres(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def open_store(location: str) -> LicenseStore:
    """A store for a LICENSE_DB value: a SQLite file path (or sqlite:/// URL), or a
    postgresql:// URL. Either migrates its schema before its first use."""
    if is_postgres(location):
        from services.edge.store_postgres import PostgresLicenseStore

        return PostgresLicenseStore(location)
    from services.edge.store_sqlite import SQLiteLicenseStore

    if location.startswith("sqlite:///"):
        location = location[len("sqlite:///"):]
    return SQLiteLicenseStore(location)


def __getattr__(name: str) -> Any:
    # `from services.edge.store import SQLiteLicenseStore` keeps working; imported lazily
    # because store_sqlite imports this module.
    if name == "SQLiteLicenseStore":
        from services.edge.store_sqlite import SQLiteLicenseStore

        return SQLiteLicenseStore
    raise AttributeError(name)
