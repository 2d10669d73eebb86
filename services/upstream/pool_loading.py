"""The pool's members, loaded and kept: reloads of the files, re-checks of refused credentials,
quota polls, and the shared state of several replicas.

Credentials come back: see roster.py (file rewritten → revived) and `recheck()` (a DEAD
credential refused for its account is probed again after INELIGIBLE_RECHECK_SECONDS).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, TypeVar

from .ai_studio import AIStudioBackend
from .backends import Backend, Http
from .code_assist import CodeAssistClient
from .code_assist_backend import CodeAssistBackend
from .credentials import CredentialState
from .errors import RefreshError, UpstreamError
from .members import PoolConfigError
from .pool_entry import Entry, apply_quota
from .project import ProjectResolver
from .roster import Roster, plan
from .settings import Settings
from .shared_state import SharedState, SharingStatus
from .token_endpoint import TokenHttp
from .vertex import VertexBackend

log = logging.getLogger(__name__)

T = TypeVar("T")


class PoolLoading:
    """The member list of a Pool (pool.py), which adds choosing a member and the failure policy."""

    def __init__(self, settings: Settings, http: TokenHttp, client: CodeAssistClient,
                 resolver: ProjectResolver, transport: Any = None) -> None:
        self._settings = settings
        self._http = http  # token endpoints
        self._resolver = resolver
        # Every backend shares the Code Assist client's transport unless told otherwise.
        shared = Http(settings, transport if transport is not None else client._transport)
        self.backends: dict[str, Backend] = {
            "gemini-cli-oauth": CodeAssistBackend(client),
            "ai-studio-key": AIStudioBackend(shared, settings.ai_studio_endpoint),
            "vertex-ai": VertexBackend(shared, settings.vertex_endpoint),
        }
        self.shared = SharedState(settings.redis_url_value, refresh_timeout=settings.refresh_timeout) \
            if settings.redis_url_value else None
        self._roster = Roster(settings, http, self.backends, self._new_entry)
        self._entries: list[Entry] = []
        self._routes: dict[tuple[str, bool], list[list[Entry]]] = {}
        self._load_lock = asyncio.Lock()
        self._loaded_at: float | None = None
        self._next_check = 0.0
        self._reloading: asyncio.Task[None] | None = None
        self._polls: set[asyncio.Task[None]] = set()
        self._scan_notes: list[str] = []

    def _new_entry(self, cred: Any, spec: Any, backend: Backend) -> Entry:
        if self.shared is not None:
            cred.shared = self.shared
            cred.on_change = self.shared.credential_changed
        return Entry(cred, spec, backend)

    async def start(self) -> None:
        """Join the other replicas' shared state, when REDIS_URL is set."""
        if self.shared is not None:
            await self.shared.start(lambda: self._entries)

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    def sharing(self) -> SharingStatus | None:
        return self.shared.status() if self.shared is not None else None

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def entries(self) -> list[Entry]:
        return self._entries

    async def ensure_loaded(self) -> None:
        now = time.monotonic()
        if self._loaded_at is not None and self._entries:
            if now >= self._next_check and (self._reloading is None or self._reloading.done()):
                # Files are looked at in the background; this call goes on with what it has.
                self._next_check = now + self._settings.pool_reload_seconds
                self._reloading = asyncio.create_task(self.reload(), name="pool-reload")
            return
        if self._loaded_at is not None and now < self._next_check:
            return
        await self.reload()

    async def reload(self) -> None:
        """Read the pool file and changed credential files; add, drop and revive members."""
        async with self._load_lock:
            try:
                candidates, notes = await asyncio.to_thread(plan, self._settings, dict(self._roster.stats))
            except PoolConfigError as exc:
                log.error("%s (members unchanged)", exc)
                self._scan_notes = [str(exc)]
                self._loaded_at = self._loaded_at or time.monotonic()
                self._next_check = time.monotonic() + self._settings.pool_reload_seconds
                return
            entries, changed = self._roster.apply(self._entries, candidates)
            first = self._loaded_at is None
            self._scan_notes = notes
            self._loaded_at = time.monotonic()
            self._next_check = self._loaded_at + self._settings.pool_reload_seconds
            if changed or first:
                self._entries = entries
                self._routes.clear()
                if self.shared is not None:
                    self.shared.resync_soon()  # new members take the marks other replicas set
                for note in notes:
                    log.info("credentials: %s", note)
                if self._entries:
                    log.info("pool: %d member(s): %s", len(self._entries), ", ".join(
                        f"{e.cred.id} ({e.cred.kind}, priority {e.spec.priority})" for e in self._entries))
                else:
                    log.warning("%s", self.no_credentials_message())
            self.recheck(time.time())
            self.poll_quotas()

    def recheck(self, now: float) -> None:
        """A credential refused for its account gets one more try after a while: licences get
        assigned, accounts verified, APIs enabled, without anyone touching the gateway."""
        for e in self._entries:
            c = e.cred
            if c.state is CredentialState.DEAD and c.ineligible and \
                    now - c.dead_at >= self._settings.ineligible_recheck_seconds:
                c.revive(f"re-checking after {self._settings.ineligible_recheck_seconds:g}s ({c.detail})")

    def poll_quotas(self) -> None:
        """Start a retrieveUserQuota poll for each Code Assist member that is due one."""
        every = self._settings.quota_poll_seconds
        if every <= 0:
            return
        now = time.time()
        for e in self._entries:
            if e.quota_next <= now and e.cred.usable and isinstance(e.backend, CodeAssistBackend):
                e.quota_next = now + every
                task = asyncio.create_task(self._poll_quota(e), name=f"quota-{e.cred.id}")
                self._polls.add(task)
                task.add_done_callback(self._polls.discard)

    async def _poll_quota(self, entry: Entry) -> None:
        assert isinstance(entry.backend, CodeAssistBackend)
        try:
            headers = await self._within_refresh_timeout(entry.cred.auth_headers())
            await self._resolver.resolve(entry.cred)
            quota = await entry.backend.quota(entry, headers)
        except UpstreamError as err:
            log.info("credential %s: quota poll failed: %s", entry.cred.id, err.message)
            return
        apply_quota(entry, quota, time.time())

    def no_credentials_message(self) -> str:
        why = "; ".join(self._scan_notes) or "nothing usable"
        return (f"no credential configured ({why}); set GEMINI_API_KEYS, VERTEX_CREDENTIALS, VERTEX_API_KEYS, "
                "GEMINI_CREDENTIALS or POOL_CONFIG")

    async def _within_refresh_timeout(self, work: Awaitable[T]) -> T:
        """Wait at most REFRESH_TIMEOUT for a credential's token. The refresh itself runs on
        (shielded, shared by every caller), so a late answer still lands for later calls."""
        seconds = self._settings.refresh_timeout
        try:
            # asyncio.timeout, not wait_for: no task per call (this runs on every request).
            async with asyncio.timeout(seconds):
                return await work
        except TimeoutError:
            raise RefreshError(f"token refresh took longer than {seconds:g}s", permanent=False) from None
