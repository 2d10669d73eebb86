"""How long a call waited on backend HTTP: the upstream overhead metric is a Generate's time
less this (servicer.py), so the transport adds every wait on a backend (transport.py,
backend_stream.py) to the calling task's counter."""
from __future__ import annotations

from contextvars import ContextVar
from time import perf_counter

# Seconds the current call spent waiting on backend HTTP (the overhead metric's complement).
_WAITED: ContextVar[list[float] | None] = ContextVar("backend_wait", default=None)


def count_backend_wait() -> list[float]:
    """From now on, the time the calling task (and what it awaits) spends waiting on backend
    HTTP adds up in the returned one-element list."""
    cell = [0.0]
    _WAITED.set(cell)
    return cell


def add_backend_wait(since: float) -> None:
    cell = _WAITED.get()
    if cell is not None:
        cell[0] += perf_counter() - since
