"""The credential pool: which member serves a call, and what happens when it fails.

Members are credentials of three kinds (Code Assist OAuth, AI Studio keys, Vertex AI) with a
backend each. A model is served by the members allowed to serve it (their `models`
patterns, minus the models they answered 404/403 for, which they are not asked again for
UNSUPPORTED_MODEL_SECONDS); the lowest priority tier first, smooth weighted round-robin
within a tier. Failure policy, applied only before the first chunk reached the caller
(after that, nothing is retried):

  429                        cool (member, model) down for the backend's hint (RetryInfo,
                             quotaResetDelay, AI Studio's daily quota → midnight Pacific),
                             else exponential backoff from the backend's start (Vertex 1 s,
                             others DEFAULT_COOLDOWN_SECONDS); capped by MAX_COOLDOWN_SECONDS
  401                        refresh once (single flight) and retry on the same member;
                             a second 401 sets the member aside briefly, next member
  token grant refused        credential DEAD (new login / new key needed), next member
  token endpoint 5xx/network member set aside for TRANSIENT_COOLDOWN_SECONDS, next
  backend says the account   (licence, tier, verification, key invalid/leaked, API off, no
  or key is unusable         IAM role) credential DEAD with the action to take, next member
  404 / other 403            the member learns it cannot serve the model, next member; the
                             error goes to the caller when no member is left
  400 / other 4xx            to the caller at once (never retried)
  5xx / no connection / empty next member, at most MAX_ATTEMPTS attempts in all
  connection lost once the   to the caller (TransportError.retry False): the backend may have
  request was sent           run the generation; another member would run (and bill) it twice
  answer over the size cap   to the caller (TransportError.retry False: the work is done)
  timeout                    to the caller (its time is spent)

Several replicas (REDIS_URL): refreshes go through a lease, and 429 cool-downs and DEAD marks
reach every replica's members (shared_state.py); choosing a member still reads local state only.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

import grpc

from . import errors
from .backends import ChunkStream, Embeddings, embed_requests
from .code_assist import Chunk, check_body
from .credentials import CredentialState
from .errors import (BackendError, CredentialError, EmptyStream, NoCredentials, PoolExhausted, StreamCut,
                     TransportError, UpstreamError)
from .pool_entry import CredentialReport, Entry, build_report, cooldown_seconds
from .pool_loading import PoolLoading, T

log = logging.getLogger(__name__)

Op = Callable[["Entry", Mapping[str, str]], Awaitable[T]]
_ROUTE_CACHE = 512


class Pool(PoolLoading):
    """Chooses a member for each call and applies the failure policy above."""

    async def warmup(self) -> None:
        """Get tokens and find projects for every member now rather than on first use."""
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

    def _tiers(self, model: str, embed: bool) -> list[list[Entry]]:
        key = (model, embed)
        tiers = self._routes.get(key)
        if tiers is None:
            by_priority: dict[int, list[Entry]] = {}
            for e in self._entries:
                if e.allows(model) and (not embed or (e.backend is not None and e.backend.has_embeddings)):
                    by_priority.setdefault(e.spec.priority, []).append(e)
            tiers = [by_priority[p] for p in sorted(by_priority)]
            if len(self._routes) >= _ROUTE_CACHE:
                self._routes.clear()
            self._routes[key] = tiers
        return tiers

    def _select(self, model: str, tried: set[Entry], embed: bool = False) -> Entry | None:
        now = time.time()
        for tier in self._tiers(model, embed):
            best: Entry | None = None
            total = 0
            for e in tier:
                if e in tried or e.wait(model, now) > 0:
                    continue
                e.current += e.spec.weight
                total += e.spec.weight
                if best is None or e.current > best.current:
                    best = e
            if best is not None:
                best.current -= total
                return best
        return None

    def _exhausted(self, model: str, last: UpstreamError | None, embed: bool) -> UpstreamError:
        if not self._entries:
            return NoCredentials(self.no_credentials_message())
        now = time.time()
        members = [e for tier in self._tiers(model, embed) for e in tier]
        if not members:
            if embed:
                return PoolExhausted("no pool member has embeddings (Code Assist has none): add AI Studio or "
                                     "Vertex AI members", code=grpc.StatusCode.FAILED_PRECONDITION,
                                     reason=errors.REASON_NO_EMBEDDINGS)
            return PoolExhausted(f"no pool member is configured to serve model {model}",
                                 code=grpc.StatusCode.NOT_FOUND, reason=errors.REASON_MODEL_NOT_SERVED)
        live = [e for e in members if e.cred.state is CredentialState.READY]
        able = [e for e in live if e.unsupported.get(model, 0.0) <= now]
        if live and not able:
            if isinstance(last, BackendError) and last.http_status in (403, 404):
                return last
            return PoolExhausted(f"no pool member can serve model {model} (every one answered that it cannot)",
                                 code=grpc.StatusCode.NOT_FOUND, reason=errors.REASON_MODEL_NOT_SERVED, last=last)
        if able:
            retry = min(e.wait(model, now) for e in able)
            if any(e.cooling.get(model, 0.0) > now for e in able):
                return PoolExhausted(
                    f"all {len(able)} usable member(s) are cooling down for model {model}; "
                    f"retry in {retry:.1f}s" + (f" (backend: {last.message})" if isinstance(last, BackendError) else ""),
                    code=grpc.StatusCode.RESOURCE_EXHAUSTED, reason=errors.REASON_ALL_COOLING,
                    retry_delay_s=retry, last=last)
            details = "; ".join(f"{e.cred.id}: {e.blocked_detail}" for e in able if e.blocked_detail)
            return PoolExhausted(f"no credential can serve now ({details or 'all set aside'}); retry in {retry:.1f}s",
                                 code=grpc.StatusCode.UNAVAILABLE, reason=errors.REASON_CREDENTIALS_UNAVAILABLE,
                                 retry_delay_s=retry, last=last)
        dead = [e for e in members if e.cred.state is CredentialState.DEAD]
        details = "; ".join(f"{e.cred.id}: {e.cred.detail}" for e in members)
        if dead and all(e.cred.ineligible for e in dead):
            return PoolExhausted(f"no credential is allowed to use its backend: {details}",
                                 code=grpc.StatusCode.PERMISSION_DENIED, reason=errors.REASON_CREDENTIALS_INELIGIBLE,
                                 last=last)
        return PoolExhausted(f"no usable credential: {details}", code=grpc.StatusCode.UNAUTHENTICATED,
                             reason=errors.REASON_CREDENTIALS_DEAD, last=last)

    # --- failure policy ----------------------------------------------------------------------

    def _credential_failed(self, entry: Entry, err: CredentialError, now: float) -> None:
        entry.last_error = err.message
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
        start = entry.backend.backoff_start if entry.backend is not None else None
        seconds = cooldown_seconds(err.retry_delay_s, strikes, start if start is not None
                                   else s.default_cooldown_seconds, s.max_cooldown_seconds)
        entry.cool(model, seconds, err.reason or err.status or "429", now)
        if self.shared is not None:
            self.shared.cooled(entry, model, now + seconds, err.reason or err.status or "429")
        entry.last_error = str(err)
        log.warning("credential %s cooling down %.1fs for %s (%s)", entry.cred.id, seconds, model,
                    err.reason or err.message)

    async def _attempt(self, entry: Entry, op: Op[T]) -> T:
        """One member: headers, project, the call; a 401 refreshes once and retries."""
        cred = entry.cred
        # Most calls find a token that needs no refresh and a project already known: no
        # coroutine, no timeout for them.
        headers = cred.ready_headers()
        if headers is None:
            headers = await self._within_refresh_timeout(cred.auth_headers())
        if cred.project_unknown:  # asked here too: a known project costs no coroutine
            await self._resolver.resolve(cred)
        try:
            return await op(entry, headers)
        except BackendError as err:
            if err.http_status != 401:
                raise
            log.info("credential %s: backend answered 401, refreshing", cred.id)
            await self._within_refresh_timeout(cred.refresh(rejected=headers))
            return await op(entry, await self._within_refresh_timeout(cred.auth_headers()))

    async def run(self, model: str, op: Op[T], *, embed: bool = False) -> tuple[T, Entry]:
        """Run `op` on members of the pool until one succeeds or the policy gives up."""
        await self.ensure_loaded()
        tried: set[Entry] = set()
        transient = 0
        last: UpstreamError | None = None
        while True:
            entry = self._select(model, tried, embed)
            if entry is None:
                if last is not None and _retryable(last):
                    raise last
                raise self._exhausted(model, last, embed)
            tried.add(entry)
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
                entry.last_error = str(err)
                if err.http_status == 429:
                    self._rate_limited(entry, model, err, now)
                    last = err
                    continue
                if err.http_status == 401:
                    entry.block(self._settings.transient_cooldown_seconds,
                                f"backend rejected a freshly refreshed token: {err.message}", now)
                    last = err
                    continue
                problem = entry.backend.account_problem(err) if entry.backend is not None else None
                if problem is not None:
                    entry.cred.mark_dead(problem, ineligible=True)
                    last = err
                    continue
                if err.http_status in (403, 404):
                    log.info("credential %s cannot serve %s (HTTP %d): not asked again for %gs", entry.cred.id,
                             model, err.http_status, self._settings.unsupported_model_seconds)
                    entry.learn_unsupported(model, self._settings.unsupported_model_seconds, now)
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
                entry.last_error = err.message
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

        async def op(entry: Entry, headers: Mapping[str, str]) -> Chunk:
            assert entry.backend is not None
            return await entry.backend.generate(entry, headers, model, body, request_id)

        return await self.run(model, op)

    async def stream(self, model: str, body: bytes | memoryview, request_id: str) -> AsyncIterator[tuple[Chunk, Entry]]:
        """Chunks of a streamed call as they arrive. Closing the iterator closes the backend
        connection."""
        batches = self.stream_batches(model, body, request_id)
        try:
            async for batch, entry in batches:
                for chunk in batch:
                    yield chunk, entry
        finally:
            await batches.aclose()

    async def stream_batches(self, model: str, body: bytes | memoryview,
                             request_id: str) -> AsyncIterator[tuple[list[Chunk], Entry]]:
        """As stream(), but the chunks that arrived together come as one list (at least one
        chunk; nothing is held back to wait for more)."""
        check_body(body)

        async def op(entry: Entry, headers: Mapping[str, str]) -> tuple[ChunkStream, list[Chunk]]:
            assert entry.backend is not None
            events = await entry.backend.open_stream(entry, headers, model, body, request_id)
            try:
                first = await events.next_batch()
            except BaseException:
                await events.aclose()
                raise
            if first is None:
                await events.aclose()
                raise EmptyStream("backend closed the stream without sending anything")
            return events, first

        (events, batch), entry = await self.run(model, op)
        # The answer has started: no credential will be tried again, so the body is not kept
        # for the minutes the stream may last.
        del body, op
        try:
            while True:
                yield batch, entry
                batch = None  # sent on: not held while the next one is read (the first for the whole stream)
                try:
                    batch = await events.next_batch()
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
                if batch is None:
                    return
        finally:
            await events.aclose()

    async def count_tokens(self, model: str, body: bytes, request_id: str) -> tuple[Any, Entry]:
        async def op(entry: Entry, headers: Mapping[str, str]) -> Any:
            assert entry.backend is not None
            return await entry.backend.count_tokens(entry, headers, model, body)

        return await self.run(model, op)

    async def embed(self, model: str, body: bytes, request_id: str) -> tuple[Embeddings, Entry]:
        """Embeddings of a batchEmbedContents body, from members whose backend has them."""
        requests = embed_requests(body)

        async def op(entry: Entry, headers: Mapping[str, str]) -> Embeddings:
            assert entry.backend is not None
            return await entry.backend.embed(entry, headers, model, requests)

        return await self.run(model, op, embed=True)

    # --- reporting ---------------------------------------------------------------------------

    def can_serve(self, model: str, kinds: frozenset[str] | set[str] | None = None, embed: bool = False) -> bool:
        """Some member (of one of `kinds`) is configured for `model`, not switched off, and has
        not said it cannot serve it."""
        now = time.time()
        return any(e.cred.state is not CredentialState.DISABLED and e.unsupported.get(model, 0.0) <= now
                   and (kinds is None or e.cred.kind in kinds)
                   for tier in self._tiers(model, embed) for e in tier)

    def kinds(self) -> set[str]:
        return {e.cred.kind for e in self._entries}

    def report(self) -> list[CredentialReport]:
        return build_report(self._entries, time.time())


def _retryable(err: UpstreamError) -> bool:
    """Errors that say "the backend is struggling" rather than "this credential is spent"."""
    if isinstance(err, BackendError):
        return err.http_status >= 500
    return isinstance(err, (TransportError, EmptyStream))
