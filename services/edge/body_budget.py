"""Bytes of large request bodies one edge process holds at once (MAX_INFLIGHT_BODY_BYTES).

A request costs the edge a small multiple of its body while it is read, translated and sent
on (tests/hostile/test_big_bodies.py bounds it), so the process's memory is bounded only if the
large bodies in flight are. Each request's body is counted as it arrives; once it passes
LARGE_BODY bytes it holds budget for all it has (its declared length up front, when it says
one), until the request has been answered. Past the budget the request is refused with a 503
and Retry-After before more of it is read: one key holder sending many large bodies at once
cannot push the process past the memory its deployment allows. Small bodies never count.
"""
from __future__ import annotations

from starlette.types import Message, Receive, Scope

from services.edge.errors import ApiError
from services.edge.media_budget import InflightBudget

# Bodies up to this size are bounded by the connection limits alone.
LARGE_BODY = 1 << 20


class BodyBudget(InflightBudget):
    def __init__(self, limit: int, large: int = LARGE_BODY) -> None:
        super().__init__(limit)
        self.large = large

    def account(self, scope: Scope, receive: Receive) -> "BodyAccount":
        return BodyAccount(self, scope, receive)


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return max(0, int(value))
            except ValueError:
                return 0  # the body reader answers the malformed header itself
    return 0


def _busy() -> ApiError:
    return ApiError(503, "the gateway is busy with other large requests; retry shortly",
                    code="server_busy", retry_after=1.0)


class BodyAccount:
    """One request's share of the budget: `receive` counts its body, `release()` gives it back."""

    __slots__ = ("_budget", "_receive", "_declared", "seen", "held")

    def __init__(self, budget: BodyBudget, scope: Scope, receive: Receive) -> None:
        self._budget = budget
        self._receive = receive
        self._declared = _declared_length(scope)
        self.seen = 0
        self.held = 0

    async def receive(self) -> Message:
        budget = self._budget
        if self.held == 0 and self._declared > budget.large:
            # It says how large it will be: refuse before reading any of it.
            self._hold(self._declared)
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > budget.large and self.seen > self.held:
                self._hold(self.seen - self.held)
        return message

    def _hold(self, n: int) -> None:
        if not self._budget.take(n):
            raise _busy()
        self.held += n

    def release(self) -> None:
        self._budget.give(self.held)
        self.held = 0
