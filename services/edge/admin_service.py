"""What an administrator can do, once: the keys CLI and the admin console's JSON API both call
this, so creating, revoking, editing and reporting exist in one implementation.

Everything raises `AdminError` (status, message, code) for what the caller got wrong; the CLI
prints the message, the HTTP API answers with the status.
"""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from services.edge.store import (EDITABLE_FIELDS, DailyUsage, KeyRecord, LicenseStore, NewKey, StoreError, UsageRow,
                                 UsageSummary, check_changes, generate_key, hash_key, key_prefix)
from services.edge.upstream_client import UpstreamClient
from services.edge.upstream_errors import UpstreamError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LIMIT_FIELDS = ("rpm", "tpm", "quota", "max_concurrent")
MAX_RECENT = 1000


class AdminError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


# --- parsing shared by the CLI and the API ---------------------------------------------------

def parse_expiry(text: str | None, now: float | None = None) -> float | None:
    """'30d' / '12h' / '90m' / '45s' / '2w' from now; '2026-12-31' = valid through that day (UTC);
    an ISO date-time (UTC unless it says otherwise); 'never' or empty = no expiry."""
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    text = text.strip()
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.lower())
    if m:
        return now + float(m.group(1)) * _UNITS[m.group(2)]
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
        return (day + timedelta(days=1)).timestamp()
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AdminError(400, f"cannot read expiry {text!r}: use 30d, 12h, 2026-12-31 or an ISO date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_since(text: str, now: float) -> float:
    """'7d' / '24h' = that long ago; a date or date-time = from then on."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise AdminError(400, f"cannot read since {text!r}: use 7d, 24h or a date") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def parse_models(text: str | Sequence[str] | None) -> tuple[str, ...]:
    if not text:
        return ()
    items = text.split(",") if isinstance(text, str) else text
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise AdminError(400, "models must be model ids or glob patterns")
    return tuple(p.strip() for p in items if p.strip())


def _check_limits(values: Mapping[str, Any]) -> None:
    for name in LIMIT_FIELDS:
        v = values.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise AdminError(400, f"{name} must be a whole number >= 0 (or empty for no limit)")


# --- views -------------------------------------------------------------------------------------

def key_state(rec: KeyRecord, now: float) -> str:
    return rec.refusal(now) or "active"


def key_view(rec: KeyRecord, now: float | None = None) -> dict[str, Any]:
    """A key as the API shows it: everything but its hash."""
    now = time.time() if now is None else now
    return {"id": rec.id, "name": rec.name, "prefix": rec.prefix, "state": key_state(rec, now),
            "enabled": rec.enabled, "models": list(rec.models), "rpm": rec.rpm, "tpm": rec.tpm,
            "quota": rec.quota, "max_concurrent": rec.max_concurrent, "tokens_used": rec.tokens_used,
            "quota_remaining": None if rec.quota is None else max(0, rec.quota - rec.tokens_used),
            "created_at": rec.created_at, "expires_at": rec.expires_at, "revoked_at": rec.revoked_at}


def credential_view(status: Any) -> dict[str, Any]:
    """A CredentialStatus as JSON (it carries no secret by contract)."""
    # Imported here, by the admin console's credential views: loaded at start it would cost
    # every edge ~0.3 MiB that a deployment never using the console pays for nothing (#15).
    from google.protobuf.json_format import MessageToDict

    out = MessageToDict(status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    out["state"] = status.State.Name(status.state)
    return out


def usage_row_view(r: UsageRow, names: Mapping[int, str]) -> dict[str, Any]:
    return {"created_at": r.created_at, "key_id": r.key_id, "key": names.get(r.key_id, str(r.key_id)),
            "api": r.api, "op": r.op, "model": r.model, "status": r.status, "latency_ms": round(r.latency_ms, 1),
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "thought_tokens": r.thought_tokens, "total_tokens": r.total_tokens, "request_id": r.request_id,
            "credential_kind": r.credential_kind, "credential_id": r.credential_id}


# --- the service ---------------------------------------------------------------------------------

class AdminService:
    def __init__(self, store: LicenseStore, secret: bytes, upstream: UpstreamClient | None = None) -> None:
        self.store = store
        self._secret = secret
        self._upstream = upstream

    # keys

    async def create_key(self, name: str, *, models: Sequence[str] = (), rpm: int | None = None,
                         tpm: int | None = None, quota: int | None = None, max_concurrent: int | None = None,
                         expires_at: float | None = None) -> tuple[str, KeyRecord]:
        """(the new key, shown this once; its record)."""
        if not isinstance(name, str) or not name.strip():
            raise AdminError(400, "a key needs a name")
        _check_limits({"rpm": rpm, "tpm": tpm, "quota": quota, "max_concurrent": max_concurrent})
        spec = NewKey(name=name.strip(), models=parse_models(models), rpm=rpm, tpm=tpm, quota=quota,
                      expires_at=expires_at, max_concurrent=max_concurrent)
        key = generate_key()
        try:
            rec = await self.store.create_key(hash_key(self._secret, key), key_prefix(key), spec)
        except StoreError as exc:
            raise AdminError(400, str(exc)) from None
        return key, rec

    async def list_keys(self) -> list[KeyRecord]:
        return await self.store.list_keys()

    async def find(self, ref: str) -> KeyRecord:
        """The one key an id, name, visible prefix or the key itself names."""
        found = await self.store.get_key(ref)
        if not found:
            raise AdminError(404, f"no key matches {ref!r}", "key_not_found")
        if len(found) > 1:
            ids = ", ".join(f"{r.id} ({r.name}, {r.prefix}…)" for r in found)
            raise AdminError(409, f"{ref!r} matches several keys: {ids}; use the id", "ambiguous_key")
        return found[0]

    async def key(self, key_id: int) -> KeyRecord:
        found = [r for r in await self.store.get_key(str(int(key_id))) if r.id == key_id]
        if not found:
            raise AdminError(404, f"no key has id {key_id}", "key_not_found")
        return found[0]

    async def revoke(self, key_id: int) -> tuple[KeyRecord, bool]:
        """(the record after, whether this call revoked it)."""
        await self.key(key_id)
        changed = await self.store.revoke(key_id)
        return await self.key(key_id), changed

    async def set_enabled(self, key_id: int, enabled: bool) -> KeyRecord:
        await self.key(key_id)
        await self.store.set_enabled(key_id, enabled)
        return await self.key(key_id)

    async def update_key(self, key_id: int, changes: Mapping[str, Any]) -> KeyRecord:
        """Edit name, models and limits; None (or "") clears a limit."""
        changes = dict(changes)
        if "models" in changes:
            changes["models"] = parse_models(changes["models"])
        for name in LIMIT_FIELDS:
            if changes.get(name, None) == "":
                changes[name] = None
        _check_limits(changes)
        try:
            out = await self.store.update_key(key_id, check_changes(changes))
        except StoreError as exc:
            raise AdminError(400, str(exc)) from None
        if out is None:
            raise AdminError(404, f"no key has id {key_id}", "key_not_found")
        return out

    # usage

    async def usage_summary(self, key_id: int | None = None, since: float | None = None) -> list[UsageSummary]:
        return await self.store.usage_summary(key_id, since)

    async def usage_by_day(self, key_id: int | None = None, since: float | None = None) -> list[DailyUsage]:
        return await self.store.usage_by_day(key_id, since)

    async def usage_by_credential(self, key_id: int | None = None,
                                  since: float | None = None) -> list[tuple[str, int, int, int]]:
        return await self.store.usage_by_credential(key_id, since)

    async def recent(self, key_id: int | None = None, limit: int = 50) -> list[UsageRow]:
        if limit < 1 or limit > MAX_RECENT:
            raise AdminError(400, f"limit must be between 1 and {MAX_RECENT}")
        return await self.store.recent_usage(key_id, limit)

    async def key_names(self) -> dict[int, str]:
        return {r.id: r.name for r in await self.store.list_keys()}

    # credentials (they live in the upstream)

    def _need_upstream(self) -> UpstreamClient:
        if self._upstream is None:
            raise AdminError(503, "the upstream is not connected", "upstream_unavailable")
        return self._upstream

    @staticmethod
    def _upstream_failed(err: UpstreamError, what: str) -> AdminError:
        code = err.grpc_code.name if err.grpc_code is not None else ""
        status = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
                  "FAILED_PRECONDITION": 409}.get(code, 503)
        message = err.detail if status < 500 else f"the upstream could not {what}; try again shortly"
        return AdminError(status, message, code.lower() or "upstream_unavailable")

    async def credentials(self) -> list[Any]:
        try:
            return [c for c in await self._need_upstream().credentials() if c.id != "(none)" or c.detail]
        except UpstreamError as err:
            raise self._upstream_failed(err, "report its credentials") from None

    async def set_credential_enabled(self, credential_id: str, enabled: bool) -> Any:
        try:
            return await self._need_upstream().set_credential_enabled(credential_id, enabled)
        except UpstreamError as err:
            raise self._upstream_failed(err, "change the credential") from None

    async def add_credential(self, content: bytes) -> Any:
        try:
            return await self._need_upstream().add_credential(content)
        except UpstreamError as err:
            raise self._upstream_failed(err, "add the credential") from None


EDITABLE = sorted(EDITABLE_FIELDS)
