"""Per-key admission: model allow-list, total token quota, RPM/TPM sliding windows, and a cap on
concurrent requests, with token reservations so that limits hold under concurrency.

A request that may run holds a `Reservation` of tokens until it ends: its estimated cost (see
services/edge/admission.py), capped at the room the key has left. While it runs, that room is
taken, so requests running at once can never be admitted past a limit together; when it ends,
`settle(actual)` swaps the reservation for the tokens really used. The most a key can exceed
its quota or TPM by is therefore the overrun of the last request admitted (what it used beyond
its reservation), not the sum over every request in flight.

The interface (`Limits` below) is small on purpose — `await reserve(key, model, estimate) ->
Reservation`, `Reservation.settle(actual)`, `Reservation.release()` — so that two
implementations share it: `Limiter` here, in memory and O(1) amortised per request, whose
windows and reservations are per edge process (the quota anchored to the ledger — the store's
committed running total, re-read whenever the key record is re-read — plus the tokens this
process has recorded since); and `RedisLimiter` (services/edge/redis_limits.py), chosen when
REDIS_URL is set, whose windows, reservations and caps every edge replica shares.

Order of checks, and what each refusal means to the client:
    model not in the allow-list                       403
    total token quota spent                           403
    concurrent-request cap reached                    429 + Retry-After
    rest of the quota reserved by requests running    429 + Retry-After
    requests-per-minute reached                       429 + Retry-After
    tokens-per-minute reached (or all reserved)       429 + Retry-After
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Protocol

from services.edge.errors import ApiError
from services.edge.store import KeyRecord

WINDOW = 60.0
# Retry-After when the room is held by requests in progress: they usually end within seconds.
BUSY_RETRY = 1.0


class _TokenWindow:
    __slots__ = ("events", "total")

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, now: float, window: float) -> None:
        ev = self.events
        while ev and ev[0][0] <= now - window:
            self.total -= ev.popleft()[1]

    def add(self, now: float, tokens: int) -> None:
        self.events.append((now, tokens))
        self.total += tokens

    def wait_until_below(self, limit: int, now: float, window: float) -> float:
        """Seconds until the window's total drops below `limit`."""
        total = self.total
        for t, n in self.events:
            total -= n
            if total < limit:
                return max(0.0, t + window - now)
        return window


class Reservation:
    """Tokens held for one admitted request until it ends. `settle` and `release` are
    idempotent: the first call wins, so every exit path may call them. They never block: a
    shared limiter sends the settlement in the background."""

    __slots__ = ("_limiter", "key_id", "tokens", "prompt", "done", "__weakref__")

    def __init__(self, limiter: "Limits | None", key_id: int, tokens: int, prompt: int = 0) -> None:
        self._limiter = limiter
        self.key_id = key_id
        self.tokens = tokens      # held against the key's quota and TPM while the request runs
        self.prompt = prompt      # the prompt part of the estimate (bills a stream cut before usage)
        self.done = False

    @property
    def counts(self) -> bool:
        """Whether settling counts the actual tokens (False: a key without token limits, whose
        tokens the ledger writer counts)."""
        return self._limiter is not None

    def settle(self, actual: int) -> None:
        """The request ended having used `actual` tokens: give back the reservation, count those."""
        if self.done:
            return
        self.done = True
        if self._limiter is not None:
            self._limiter._settle(self, actual)

    def release(self) -> None:
        """The request ended without using tokens (refused or failed before the backend ran)."""
        self.settle(0)


class Limits(Protocol):
    """What the edge needs of a limiter; `Limiter` (one process) and `RedisLimiter` (shared by
    the edge replicas) implement it. `reserve` is the only call on the request path that may
    wait (one Redis round trip); the rest never do I/O on the caller's time."""

    def check_model(self, key: KeyRecord, model: str) -> None: ...

    async def reserve(self, key: KeyRecord, model: str, estimate: int = 1, *, prompt: int = 0) -> Reservation: ...

    async def admit(self, key: KeyRecord, model: str) -> None: ...

    def sync_quota(self, key: KeyRecord, pending: int = 0) -> None: ...

    def used(self, key: KeyRecord) -> int: ...

    def record_tokens(self, key_id: int, tokens: int) -> None: ...

    def _settle(self, res: Reservation, actual: int) -> None: ...

    def prune(self) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Limiter:
    """The in-process implementation (REDIS_URL unset): limits hold per edge process."""

    def __init__(self, *, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._requests: dict[int, deque[float]] = {}
        self._tokens: dict[int, _TokenWindow] = {}
        self._used: dict[int, int] = {}
        self._reserved: dict[int, int] = {}
        self._running: dict[int, int] = {}

    # -- quota bookkeeping -------------------------------------------------------------

    def sync_quota(self, key: KeyRecord, pending: int = 0) -> None:
        """Re-anchor the quota counter on a freshly read key record (committed ledger total)
        plus the tokens recorded here but not yet committed."""
        self._used[key.id] = key.tokens_used + pending

    def used(self, key: KeyRecord) -> int:
        return self._used.get(key.id, key.tokens_used)

    def used_tokens(self, key_id: int) -> int:
        """Tokens a key used (the ledger's total when last read, plus this process's since)."""
        return self._used.get(key_id, 0)

    def reserved(self, key_id: int) -> int:
        """Tokens held by this key's requests in progress."""
        return self._reserved.get(key_id, 0)

    def running(self, key_id: int) -> int:
        """This key's requests in progress (admitted, not yet settled)."""
        return self._running.get(key_id, 0)

    def record_tokens(self, key_id: int, tokens: int, now: float | None = None) -> None:
        if tokens <= 0:
            return
        now = self.clock() if now is None else now
        if key_id in self._used:
            self._used[key_id] += tokens
        tw = self._tokens.get(key_id)
        if tw is None:
            tw = self._tokens[key_id] = _TokenWindow()
        tw.expire(now, self.window)
        tw.add(now, tokens)

    # -- admission ----------------------------------------------------------------------

    def check_model(self, key: KeyRecord, model: str) -> None:
        if not key.allows_model(model):
            raise ApiError(403, f"this key may not use model '{model}'", code="model_not_allowed")

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def reserve(self, key: KeyRecord, model: str, estimate: int = 1, *, prompt: int = 0,
                      now: float | None = None) -> Reservation:
        return self.reserve_now(key, model, estimate, prompt=prompt, now=now)

    def reserve_now(self, key: KeyRecord, model: str, estimate: int = 1, *, prompt: int = 0,
                    now: float | None = None) -> Reservation:
        """Admit a request that may cost up to `estimate` tokens, or raise ApiError.

        The reservation is the estimate capped at the room the key has left (quota and TPM),
        so a request is refused only when nothing is left; one that is bigger than the room
        takes all of it, and what it uses beyond that is the overrun the bound allows."""
        self.check_model(key, model)
        now = self.clock() if now is None else now
        held = self._reserved.get(key.id, 0)
        room: int | None = None
        if key.quota is not None:
            used = self.used(key)
            if used >= key.quota:
                raise ApiError(403, f"token quota of this key is spent ({used} of {key.quota} tokens)",
                               code="insufficient_quota", error_type="insufficient_quota")
            room = key.quota - used - held
            if room <= 0:
                raise ApiError(429, "the rest of this key's token quota is reserved by its requests in progress",
                               code="rate_limit_exceeded", retry_after=BUSY_RETRY)
        max_running = key.max_concurrent
        if max_running is not None and self._running.get(key.id, 0) >= max_running:
            raise ApiError(429, f"concurrent-request limit of this key reached ({max_running})",
                           code="rate_limit_exceeded", retry_after=BUSY_RETRY)
        if key.tpm is not None:
            tw = self._tokens.get(key.id)
            total = 0
            if tw is not None:
                tw.expire(now, self.window)
                total = tw.total
                if total >= key.tpm:
                    wait = tw.wait_until_below(key.tpm, now, self.window)
                    raise ApiError(429, f"tokens-per-minute limit of this key reached ({key.tpm})",
                                   code="rate_limit_exceeded", retry_after=max(wait, 0.001))
            tpm_room = key.tpm - total - held
            if tpm_room <= 0:
                raise ApiError(429, f"tokens-per-minute limit of this key reached ({key.tpm}, "
                                    "reserved by its requests in progress)",
                               code="rate_limit_exceeded", retry_after=BUSY_RETRY)
            room = tpm_room if room is None else min(room, tpm_room)
        if key.rpm is not None:
            reqs = self._requests.get(key.id)
            if reqs is None:
                reqs = self._requests[key.id] = deque()
            while reqs and reqs[0] <= now - self.window:
                reqs.popleft()
            if len(reqs) >= key.rpm:
                wait = reqs[0] + self.window - now if reqs else self.window
                raise ApiError(429, f"requests-per-minute limit of this key reached ({key.rpm})",
                               code="rate_limit_exceeded", retry_after=max(wait, 0.001))
            reqs.append(now)
        tokens = max(1, estimate) if room is None else max(1, min(estimate, room))
        if room is not None:
            self._reserved[key.id] = held + tokens
        elif max_running is None:
            # An unlimited key: nothing to hold, nothing to give back.
            return Reservation(None, key.id, 0, prompt)
        self._running[key.id] = self._running.get(key.id, 0) + 1
        return Reservation(self, key.id, tokens if room is not None else 0, prompt)

    async def admit(self, key: KeyRecord, model: str, now: float | None = None) -> None:
        """Check a request that reserves nothing (counted against RPM only); raise ApiError when
        it may not run. Routes that generate tokens use `reserve`."""
        self.reserve_now(key, model, 0, now=now).release()

    def _settle(self, res: Reservation, actual: int) -> None:
        key_id = res.key_id
        if res.tokens:
            left = self._reserved.get(key_id, 0) - res.tokens
            if left > 0:
                self._reserved[key_id] = left
            else:
                self._reserved.pop(key_id, None)
        n = self._running.get(key_id, 0) - 1
        if n > 0:
            self._running[key_id] = n
        else:
            self._running.pop(key_id, None)
        self.record_tokens(key_id, actual)

    def prune(self, now: float | None = None) -> None:
        """Drop empty windows of keys that went quiet (called now and then)."""
        now = self.clock() if now is None else now
        for key_id in [k for k, q in self._requests.items() if not q or q[-1] <= now - self.window]:
            del self._requests[key_id]
        for key_id in [k for k, tw in self._tokens.items() if not tw.events or tw.events[-1][0] <= now - self.window]:
            del self._tokens[key_id]
