"""The simulator's state: accounts, cloud keys, faults, the record, held replies and delivery settings."""
from __future__ import annotations

import asyncio

from . import google_api
from .accounts import AccountStore
from .faults import FaultTable
from .record import RequestLog


class Simulator:
    """All mutable state of one simulator instance."""

    def __init__(self, strict_accounts: bool = False, chunk_delay: float = 0.0, latency: float = 0.0,
                 embed_response_ids: bool = False) -> None:
        self.accounts = AccountStore(strict=strict_accounts)
        self.cloud = google_api.CloudStore()
        self.faults = FaultTable()
        self.log = RequestLog()
        # Replies waiting at a "hold" fault until POST /_sim/release (reply.py).
        self.holds: set[asyncio.Event] = set()
        self.chunk_delay = chunk_delay
        self.latency = latency
        self.embed_response_ids = embed_response_ids

    def config(self) -> dict[str, float]:
        return {"chunk_delay": self.chunk_delay, "latency": self.latency}
