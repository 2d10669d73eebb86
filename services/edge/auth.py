"""License-key authentication: a FastAPI dependency plus a short-lived cache of key records.

The key is taken from, in this order: `Authorization: Bearer K`, a bare `Authorization: K`,
`X-Goog-Api-Key: K`, `X-Api-Key: K` (Anthropic clients), the query parameter `?key=K`. It is
never logged; the store sees only its hash.

Cached records are trusted until the store's change counter moves (polled every
`auth_refresh_seconds`; every write to the keys table bumps it, including the admin CLI's from
another process), or at most `auth_cache_ttl` seconds. Revocation therefore reaches a running
edge within one poll interval without a database read on the request path; with REDIS_URL set,
within a Redis round trip (services/edge/key_events.py), the poll staying as the fallback.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import time
from hashlib import blake2b
from dataclasses import dataclass
from typing import Mapping

from fastapi import Request

from services.edge.errors import ApiError
from services.edge.limits import Limits
from services.edge.store import KeyRecord, LicenseStore, hash_key

log = logging.getLogger("edge.auth")

_NEGATIVE_TTL = 1.0
_NO_QUERY: Mapping[str, str] = {}
_MAX_ENTRIES = 50_000


def extract_key(headers: Mapping[str, str], query: Mapping[str, str]) -> tuple[str | None, str]:
    """(key, where it came from); (None, "") when the request carries none."""
    auth = (headers.get("authorization") or "").strip()
    if auth:
        scheme, _, rest = auth.partition(" ")
        if scheme.lower() == "bearer":
            token = rest.strip()
            if token:
                return token, "bearer"
        else:
            return auth, "authorization"
    goog = (headers.get("x-goog-api-key") or "").strip()
    if goog:
        return goog, "x-goog-api-key"
    anthropic = (headers.get("x-api-key") or "").strip()
    if anthropic:
        return anthropic, "x-api-key"
    q = (query.get("key") or "").strip()
    if q:
        return q, "query"
    return None, ""


@dataclass(slots=True)
class _Entry:
    record: KeyRecord | None
    at: float


class KeyCache:
    def __init__(self, store: LicenseStore, secret: bytes, *, limiter: Limits | None = None,
                 pending_tokens=None, refresh: float = 0.25, ttl: float = 30.0) -> None:
        self._store = store
        self._secret = secret
        self._limiter = limiter
        self._pending_tokens = pending_tokens or (lambda key_id: 0)
        self._refresh = refresh
        self._ttl = ttl
        self._cache_key = hmac.digest(secret, b"edge key cache", "sha256")
        self._entries: dict[bytes, _Entry] = {}
        # Key id → name of every key looked up (metric labels and log lines name keys).
        self.names: dict[int, str] = {}
        # Key id → total token quota, of the keys looked up that have one (metrics.py's gauge).
        self.quotas: dict[int, int] = {}
        self._inflight: dict[bytes, asyncio.Future] = {}
        self._revision: int | None = None
        self._generation = 0  # bumped by every invalidation
        self._task: asyncio.Task | None = None

    def _cache_id(self, key: str) -> bytes:
        # What the cache is indexed by: a keyed BLAKE2b of the key, a third of HMAC-SHA256's
        # cost (no key is kept, nor compared as text); the store is asked by the HMAC.
        return blake2b(key.encode("utf-8", "surrogatepass"), key=self._cache_key, digest_size=32).digest()

    async def lookup(self, key: str) -> KeyRecord | None:
        cid = self._cache_id(key)
        entry = self._entries.get(cid)
        if entry is not None and time.monotonic() - entry.at < (self._ttl if entry.record else _NEGATIVE_TTL):
            return entry.record
        fut = self._inflight.get(cid)
        if fut is None:
            # One database read per key however many requests arrive with it at once.
            fut = self._inflight[cid] = asyncio.ensure_future(self._load(cid, key))
            fut.add_done_callback(lambda _f, cid=cid: self._inflight.pop(cid, None))
        return await asyncio.shield(fut)

    async def _load(self, cid: bytes, key: str) -> KeyRecord | None:
        rev_before, gen_before = self._revision, self._generation
        rec = await self._store.find_by_hash(hash_key(self._secret, key))
        if rec is not None:
            self.names[rec.id] = rec.name
            if rec.quota is not None:
                self.quotas[rec.id] = rec.quota
            else:
                self.quotas.pop(rec.id, None)
        if rec is not None and self._limiter is not None:
            self._limiter.sync_quota(rec, self._pending_tokens(rec.id))
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        # A change signalled while we read may not be in what we read: do not cache it then.
        if self._revision == rev_before and self._generation == gen_before:
            self._entries[cid] = _Entry(rec, time.monotonic())
        return rec

    def invalidate(self) -> None:
        """Forget every record (a key changed: services/edge/key_events.py, or the revision moved)."""
        self._generation += 1
        self._entries.clear()

    async def poll_once(self) -> None:
        rev = await self._store.revision()
        if rev != self._revision:
            self._revision = rev
            self.invalidate()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="key-revision-poll")

    async def _poll(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not read the key store's revision")
            await asyncio.sleep(self._refresh)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


async def authenticate(request: Request) -> KeyRecord:
    """FastAPI dependency: the caller's valid key record, or a 401 in the route's error format."""
    # The query string is parsed only when it could hold a key (its name, maybe %-encoded).
    qs = request.scope.get("query_string", b"")
    # (find(), not `in`: a bytes needle is first tried as an int, at the cost of a formatted TypeError.)
    query = request.query_params if qs.find(b"key") >= 0 or qs.find(b"%") >= 0 else _NO_QUERY
    key, _source = extract_key(request.headers, query)
    if not key:
        raise ApiError(401, "missing license key: send 'Authorization: Bearer <key>', "
                            "'x-goog-api-key: <key>', 'x-api-key: <key>' or '?key=<key>'", code="missing_api_key")
    try:
        record = await request.app.state.ctx.keys.lookup(key)
    except Exception:
        log.exception("license store lookup failed")
        raise ApiError(503, "the license store is unavailable; try again shortly", code="store_unavailable",
                       retry_after=1.0) from None
    if record is None:
        raise ApiError(401, "invalid license key", code="invalid_api_key")
    why = record.refusal(time.time())
    if why is not None:
        raise ApiError(401, f"license key {record.prefix}… is {why}", code=f"key_{why}")
    return record
