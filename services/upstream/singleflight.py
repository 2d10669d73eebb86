"""Single flight: callers that need the same work while it runs share one run of it.

The work runs in its own task, shielded from the callers: a caller that is cancelled (its
client went away) leaves the work running for the others. A failure reaches every caller
that waited for that run, so 50 callers of a failing token endpoint make one request, not 50.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

from services.future_exceptions import mark_retrieved

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._task: asyncio.Future[T] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Join the run in flight, or start `work()` when none is."""
        task = self._task
        if task is None or task.done():
            task = self._task = asyncio.ensure_future(work())
            task.add_done_callback(mark_retrieved)
        return await asyncio.shield(task)
