"""Per-key admission: model allow-list, total token quota, and RPM/TPM sliding windows.

Everything is in memory and O(1) amortised per request. Windows are per edge process; the
quota is anchored to the ledger (the store's committed running total, re-read whenever the key
record is re-read) plus the tokens this process has recorded since.

Order of checks, and what each refusal means to the client:
    model not in the allow-list       403
    total token quota spent           403
    requests-per-minute reached       429 + Retry-After
    tokens-per-minute reached         429 + Retry-After
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from services.edge.errors import ApiError
from services.edge.store import KeyRecord

WINDOW = 60.0


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


class Limiter:
    def __init__(self, *, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._requests: dict[int, deque[float]] = {}
        self._tokens: dict[int, _TokenWindow] = {}
        self._used: dict[int, int] = {}

    # -- quota bookkeeping -------------------------------------------------------------

    def sync_quota(self, key: KeyRecord, pending: int = 0) -> None:
        """Re-anchor the quota counter on a freshly read key record (committed ledger total)
        plus the tokens recorded here but not yet committed."""
        self._used[key.id] = key.tokens_used + pending

    def used(self, key: KeyRecord) -> int:
        return self._used.get(key.id, key.tokens_used)

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

    def admit(self, key: KeyRecord, model: str, now: float | None = None) -> None:
        """Raise ApiError when the request may not run; otherwise count it against the RPM window."""
        self.check_model(key, model)
        if key.quota is not None:
            used = self.used(key)
            if used >= key.quota:
                raise ApiError(403, f"token quota of this key is spent ({used} of {key.quota} tokens)",
                               code="insufficient_quota", error_type="insufficient_quota")
        now = self.clock() if now is None else now
        if key.tpm is not None:
            tw = self._tokens.get(key.id)
            if tw is not None:
                tw.expire(now, self.window)
                if tw.total >= key.tpm:
                    wait = tw.wait_until_below(key.tpm, now, self.window)
                    raise ApiError(429, f"tokens-per-minute limit of this key reached ({key.tpm})",
                                   code="rate_limit_exceeded", retry_after=max(wait, 0.001))
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

    def prune(self, now: float | None = None) -> None:
        """Drop empty windows of keys that went quiet (called now and then)."""
        now = self.clock() if now is None else now
        for key_id in [k for k, q in self._requests.items() if not q or q[-1] <= now - self.window]:
            del self._requests[key_id]
        for key_id in [k for k, tw in self._tokens.items() if not tw.events or tw.events[-1][0] <= now - self.window]:
            del self._tokens[key_id]
