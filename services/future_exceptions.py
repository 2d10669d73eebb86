"""Futures whose failure may have no one left to see it."""
from __future__ import annotations

import asyncio


def mark_retrieved(future: asyncio.Future) -> None:
    """A done-callback for a future whose awaiter may be gone by the time it fails (a read whose
    reader was cancelled, headers of a call its client left, shared work every caller left):
    its exception is expected then, and asyncio would log it as never retrieved."""
    if not future.cancelled():
        future.exception()
