"""Byte budgets for media: what one request may fetch, and what all requests of this process
may hold at once."""
from __future__ import annotations

from services.edge.media_errors import MediaError


class InflightBudget:
    """Bytes held by all requests of this process at once: fetched media here, large request
    bodies in body_budget.py (the edge's memory for them is a small multiple of it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


class MediaLease:
    """The media bytes one request fetched: bounded by the per-request total, and held against
    the process-wide in-flight budget until `release()` (once the request was handed on)."""

    def __init__(self, max_total: int, inflight: InflightBudget) -> None:
        self.max_total = max_total
        self._inflight = inflight
        self.total = 0

    def claim(self, n: int, url: str) -> None:
        if n <= 0:
            return
        if self.total + n > self.max_total:
            raise MediaError(f"the media of this request exceed the limit of {self.max_total} bytes in total "
                             "(MEDIA_MAX_TOTAL_BYTES)", url, status=413, code="media_too_large")
        if not self._inflight.take(n):
            raise MediaError("the gateway is fetching too much media at the moment; retry shortly", url,
                             status=503, code="media_busy", retry_after=1.0)
        self.total += n

    def release(self) -> None:
        self._inflight.give(self.total)
        self.total = 0

    def __enter__(self) -> "MediaLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
