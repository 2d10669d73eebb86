"""The credential pool: which credential serves a call, and what happens when it fails.

Selection is round-robin over the credentials usable for the model. Failure policy, applied
only before the first chunk reached the caller (after that, nothing is retried):

  429                        cool (credential, model) down for RetryInfo.retryDelay, else
                             ErrorInfo quotaResetDelay, else DEFAULT_COOLDOWN_SECONDS doubled
                             per consecutive 429; capped by MAX_COOLDOWN_SECONDS; next credential
  401                        refresh once (single flight) and retry on the same credential;
                             a second 401 sets the credential aside briefly, next credential
  invalid_grant              credential DEAD (needs a new login), next credential
  token endpoint 5xx/network credential set aside for TRANSIENT_COOLDOWN_SECONDS, next
  refresh > REFRESH_TIMEOUT  the same; the refresh goes on, shared, in the background
  403 about the account      (SUBSCRIPTION_REQUIRED, VALIDATION_REQUIRED, CONSUMER_INVALID,
                             TOS_VIOLATION, API not enabled) credential DEAD, next credential
  403 otherwise              PERMISSION_DENIED to the caller, pool untouched
  400 / 404 / other 4xx      to the caller at once (never retried)
  5xx / network / empty      next credential, at most MAX_ATTEMPTS attempts in all
  answer over the size cap   to the caller (TransportError.retry False: the work is done)
  timeout                    to the caller (its time is spent)

When no credential is left: RESOURCE_EXHAUSTED + RetryInfo if some are cooling down,
UNAVAILABLE + RetryInfo if some are only set aside, UNAUTHENTICATED / PERMISSION_DENIED if
all are dead.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

import grpc
import httpx

from . import errors
from .code_assist import Chunk, CodeAssistClient, EventStream, build_count_body, check_body, envelope_parts
from .credentials import Credential, CredentialState, OAuthCredential, scan_credential_files
from .errors import (BackendError, CredentialError, EmptyStream, NoCredentials, PoolExhausted, RefreshError,
                     StreamCut, TransportError, UpstreamError)
from .project import ProjectResolver, ineligible_reason
from .settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
# An empty credential directory is looked at again at most this often.
RESCAN_SECONDS = 10.0


def cooldown_seconds(retry_delay_s: float | None, strikes: int, default: float, maximum: float) -> float:
    """How long a (credential, model) rests after a 429.

    The backend's own delay wins; without one the default doubles with each consecutive 429
    (strikes ≥ 1). Never longer than `maximum`, so a far-off quota reset hint cannot block a
    credential long after it recovered: once the cap passes, one call probes it again."""
    if retry_delay_s is not None and retry_delay_s >= 0:
        base = retry_delay_s
    else:
        base = default * (2 ** max(0, min(strikes, 32) - 1))
    return max(0.0, min(base, maximum))


@dataclass
class Entry:
    """A credential and the pool's bookkeeping about it."""

    cred: Credential
    cooling: dict[str, float] = field(default_factory=dict)   # model → unix time the rest ends
    strikes: dict[str, int] = field(default_factory=dict)     # model → consecutive 429s
    cooling_reason: dict[str, str] = field(default_factory=dict)
    served: set[str] = field(default_factory=set)             # models it answered
    blocked_until: float = 0.0                                # every model (transient trouble)
    blocked_detail: str = ""
    requests: int = 0
    failures: int = 0

    def wait(self, model: str, now: float) -> float:
        """Seconds before this entry can serve `model` (0: now; inf: never)."""
        if self.cred.state is not CredentialState.READY:
            return float("inf")
        return max(0.0, self.blocked_until - now, self.cooling.get(model, 0.0) - now)

    def cool(self, model: str, seconds: float, reason: str, now: float) -> None:
        self.cooling[model] = now + seconds
        self.cooling_reason[model] = reason

    def block(self, seconds: float, detail: str, now: float) -> None:
        self.blocked_until = now + seconds
        self.blocked_detail = detail

    def succeeded(self, model: str) -> None:
        self.served.add(model)
        self.strikes.pop(model, None)
        self.cooling.pop(model, None)
        self.cooling_reason.pop(model, None)


@dataclass
class CredentialReport:
    id: str
    kind: str
    state: str            # READY, COOLING, DEAD, DISABLED
    project: str
    detail: str
    cooling_until: dict[str, float]
    requests: int
    failures: int


class Pool:
    def __init__(self, settings: Settings, http: httpx.AsyncClient, client: CodeAssistClient,
                 resolver: ProjectResolver) -> None:
        self._settings = settings
        self._http = http
        self._client = client
        self._resolver = resolver
        self._entries: list[Entry] = []
        self._cursor = 0
        self._load_lock = asyncio.Lock()
        self._loaded_at: float | None = None
        self._scan_notes: list[str] = []

    # --- loading -------------------------------------------------------------------------

    @property
    def entries(self) -> list[Entry]:
        return self._entries

    def add(self, cred: Credential) -> Entry:
        """Put a credential into the pool (besides those found in GEMINI_CREDENTIALS)."""
        entry = Entry(cred)
        self._entries.append(entry)
        return entry

    async def ensure_loaded(self) -> None:
        if self._loaded_at is not None and (self._entries or time.monotonic() - self._loaded_at < RESCAN_SECONDS):
            return
        async with self._load_lock:
            if self._loaded_at is not None and (self._entries or time.monotonic() - self._loaded_at < RESCAN_SECONDS):
                return
            path = self._settings.credentials_path
            found, notes = await asyncio.to_thread(scan_credential_files, path)
            s = self._settings
            known = {e.cred.path for e in self._entries if isinstance(e.cred, OAuthCredential)}
            for file, data in found:
                if file in known:
                    continue
                cred = OAuthCredential(file, data, http=self._http, token_url=s.oauth_token_url,
                                       client_id=s.oauth_client_id, client_secret=s.oauth_client_secret,
                                       timeout=s.refresh_timeout)
                if not cred.project_override and s.google_cloud_project:
                    cred.project_override = s.google_cloud_project
                self.add(cred)
            self._scan_notes = notes
            self._loaded_at = time.monotonic()
            for note in notes:
                log.info("credentials: %s", note)
            if self._entries:
                log.info("credentials: %d loaded from %s: %s", len(self._entries), path,
                         ", ".join(e.cred.id for e in self._entries))
            else:
                log.warning("%s", self.no_credentials_message())

    def no_credentials_message(self) -> str:
        path = self._settings.credentials_path
        why = "; ".join(self._scan_notes) or "nothing usable"
        return (f"no Gemini CLI credential found at {path} ({why}); set GEMINI_CREDENTIALS to an "
                "oauth_creds.json file or a directory of them")

    async def warmup(self) -> None:
        """Refresh tokens and find projects for every credential now rather than on first use."""
        await self.ensure_loaded()

        async def one(entry: Entry) -> None:
            try:
                await entry.cred.auth_headers()
                await self._resolver.resolve(entry.cred)
            except CredentialError as err:
                self._credential_failed(entry, err, time.time())
            except UpstreamError as err:
                log.warning("credential %s: warm-up failed: %s", entry.cred.id, err.message)

        await asyncio.gather(*(one(e) for e in self._entries if e.cred.usable))

    # --- selection -------------------------------------------------------------------------

    def _select(self, model: str, tried: set[int]) -> tuple[int, Entry] | None:
        entries = self._entries
        n = len(entries)
        now = time.time()
        for i in range(n):
            idx = (self._cursor + i) % n
            entry = entries[idx]
            if idx in tried or entry.wait(model, now) > 0:
                continue
            self._cursor = idx + 1
            return idx, entry
        return None

    def _exhausted(self, model: str, last: UpstreamError | None) -> UpstreamError:
        if not self._entries:
            return NoCredentials(self.no_credentials_message())
        now = time.time()
        live = [e for e in self._entries if e.cred.state is CredentialState.READY]
        cooling = [e for e in live if e.cooling.get(model, 0.0) > now]
        if cooling or live:
            retry = min(e.wait(model, now) for e in live)
            if cooling:
                return PoolExhausted(
                    f"all {len(live)} usable credential(s) are cooling down for model {model}; "
                    f"retry in {retry:.1f}s" + (f" (backend: {last.message})" if isinstance(last, BackendError) else ""),
                    code=grpc.StatusCode.RESOURCE_EXHAUSTED, reason=errors.REASON_ALL_COOLING,
                    retry_delay_s=retry, last=last)
            details = "; ".join(f"{e.cred.id}: {e.blocked_detail}" for e in live if e.blocked_detail)
            return PoolExhausted(f"no credential can serve now ({details or 'all set aside'}); retry in {retry:.1f}s",
                                 code=grpc.StatusCode.UNAVAILABLE, reason=errors.REASON_CREDENTIALS_UNAVAILABLE,
                                 retry_delay_s=retry, last=last)
        dead = [e for e in self._entries if e.cred.state is CredentialState.DEAD]
        details = "; ".join(f"{e.cred.id}: {e.cred.detail}" for e in self._entries)
        if dead and all(e.cred.ineligible for e in dead):
            return PoolExhausted(f"no credential is allowed to use Code Assist: {details}",
                                 code=grpc.StatusCode.PERMISSION_DENIED, reason=errors.REASON_CREDENTIALS_INELIGIBLE,
                                 last=last)
        return PoolExhausted(f"no usable credential: {details}", code=grpc.StatusCode.UNAUTHENTICATED,
                             reason=errors.REASON_CREDENTIALS_DEAD, last=last)

    # --- failure policy ----------------------------------------------------------------------

    def _credential_failed(self, entry: Entry, err: CredentialError, now: float) -> None:
        if err.permanent:
            entry.cred.mark_dead(err.message, ineligible=err.ineligible)
        else:
            entry.block(self._settings.transient_cooldown_seconds, err.message, now)
            log.warning("credential %s set aside for %gs: %s", entry.cred.id,
                        self._settings.transient_cooldown_seconds, err.message)

    def _rate_limited(self, entry: Entry, model: str, err: BackendError, now: float) -> None:
        strikes = entry.strikes.get(model, 0) + 1
        entry.strikes[model] = strikes
        s = self._settings
        seconds = cooldown_seconds(err.retry_delay_s, strikes, s.default_cooldown_seconds, s.max_cooldown_seconds)
        entry.cool(model, seconds, err.reason or err.status or "429", now)
        log.warning("credential %s cooling down %.1fs for %s (%s)", entry.cred.id, seconds, model,
                    err.reason or err.message)

    async def _attempt(self, entry: Entry, op: Callable[[Credential, Mapping[str, str], str | None], Awaitable[T]]) -> T:
        """One credential: headers, project, the call; a 401 refreshes once and retries."""
        cred = entry.cred
        headers = await self._within_refresh_timeout(cred.auth_headers())
        project = await self._resolver.resolve(cred)
        try:
            return await op(cred, headers, project)
        except BackendError as err:
            if err.http_status != 401:
                raise
            log.info("credential %s: backend answered 401, refreshing", cred.id)
            await self._within_refresh_timeout(cred.refresh(rejected=headers))
            return await op(cred, await self._within_refresh_timeout(cred.auth_headers()), project)

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

    async def run(self, model: str, op: Callable[[Credential, Mapping[str, str], str | None], Awaitable[T]],
                  ) -> tuple[T, Entry]:
        """Run `op` on credentials of the pool until one succeeds or the policy gives up."""
        await self.ensure_loaded()
        tried: set[int] = set()
        transient = 0
        last: UpstreamError | None = None
        while True:
            picked = self._select(model, tried)
            if picked is None:
                if last is not None and _retryable(last):
                    raise last
                raise self._exhausted(model, last)
            idx, entry = picked
            tried.add(idx)
            entry.requests += 1
            try:
                result = await self._attempt(entry, op)
            except CredentialError as err:
                entry.failures += 1
                self._credential_failed(entry, err, time.time())
                last = err
                continue
            except BackendError as err:
                entry.failures += 1
                now = time.time()
                if err.http_status == 429:
                    self._rate_limited(entry, model, err, now)
                    last = err
                    continue
                if err.http_status == 401:
                    entry.block(self._settings.transient_cooldown_seconds,
                                f"backend rejected a freshly refreshed token: {err.message}", now)
                    last = err
                    continue
                if err.http_status == 403:
                    why = ineligible_reason(err)
                    if why is None:
                        raise
                    entry.cred.mark_dead(f"Code Assist refused the account ({why}): {err.message}", ineligible=True)
                    last = err
                    continue
                if err.http_status >= 500:
                    transient += 1
                    log.warning("credential %s: backend error %s", entry.cred.id, err)
                    if transient >= self._settings.max_attempts:
                        raise
                    last = err
                    continue
                raise
            except (TransportError, EmptyStream) as err:
                entry.failures += 1
                if isinstance(err, TransportError) and (err.timeout or not err.retry):
                    raise
                transient += 1
                log.warning("credential %s: %s", entry.cred.id, err.message)
                if transient >= self._settings.max_attempts:
                    raise
                last = err
                continue
            entry.succeeded(model)
            return result, entry

    # --- calls -------------------------------------------------------------------------------

    async def generate(self, model: str, body: bytes | memoryview, request_id: str) -> tuple[Chunk, Entry]:
        check_body(body)

        async def op(cred: Credential, headers: Mapping[str, str], project: str | None) -> Chunk:
            return await self._client.generate(headers, model, envelope_parts(model, project, request_id, body))

        return await self.run(model, op)

    async def stream(self, model: str, body: bytes | memoryview, request_id: str) -> AsyncIterator[tuple[Chunk, Entry]]:
        """Chunks of a streamed call as they arrive. Closing the iterator closes the backend
        connection."""
        check_body(body)

        async def op(cred: Credential, headers: Mapping[str, str], project: str | None) -> tuple[EventStream, Chunk]:
            events = await self._client.open_stream(headers, model, envelope_parts(model, project, request_id, body))
            try:
                first = await events.next()
            except BaseException:
                await events.aclose()
                raise
            if first is None:
                await events.aclose()
                raise EmptyStream("backend closed the stream without sending anything")
            return events, first

        (events, first), entry = await self.run(model, op)
        try:
            yield first, entry
            while True:
                try:
                    chunk = await events.next()
                except TransportError as err:
                    entry.failures += 1
                    if err.timeout:
                        raise
                    raise StreamCut(f"backend stream broke after it started: {err.message}") from None
                except BackendError as err:
                    entry.failures += 1
                    if err.http_status == 429:
                        self._rate_limited(entry, model, err, time.time())
                    raise
                if chunk is None:
                    return
                yield chunk, entry
        finally:
            await events.aclose()

    async def count_tokens(self, model: str, body: bytes, request_id: str) -> tuple[Any, Entry]:
        payload = build_count_body(model, body)

        async def op(cred: Credential, headers: Mapping[str, str], project: str | None) -> Any:
            return await self._client.count_tokens(headers, model, payload)

        return await self.run(model, op)

    # --- reporting ---------------------------------------------------------------------------

    def report(self) -> list[CredentialReport]:
        now = time.time()
        out = []
        for e in self._entries:
            cooling = {m: until for m, until in e.cooling.items() if until > now}
            state = e.cred.state.value
            detail = e.cred.detail
            if state == "READY":
                if e.blocked_until > now:
                    state, detail = "COOLING", e.blocked_detail
                    cooling["*"] = e.blocked_until
                elif cooling and not (e.served - cooling.keys()):
                    state = "COOLING"
                    detail = "; ".join(f"{m}: {e.cooling_reason.get(m, '429')}" for m in cooling)
            out.append(CredentialReport(e.cred.id, e.cred.kind, state, e.cred.project or "", detail, cooling,
                                        e.requests, e.failures))
        return out


def _retryable(err: UpstreamError) -> bool:
    """Errors that say "the backend is struggling" rather than "this credential is spent"."""
    if isinstance(err, BackendError):
        return err.http_status >= 500
    return isinstance(err, (TransportError, EmptyStream))
