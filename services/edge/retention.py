"""Usage retention (USAGE_RETENTION_DAYS): raw ledger rows older than the retention age are summed
per key, model, credential kind and UTC day into `usage_daily`, then deleted, so the database
stays bounded while every total (usage summaries, `keys usage`) stays what it was. Quota is
unaffected either way: it is checked against each key's running total, not the rows.

The edge runs it in the background every USAGE_ROLLUP_SECONDS; `python -m services.edge.keys
prune` runs it now. Several edges may run it at once: on PostgreSQL one holds an advisory lock
and the others skip, on SQLite each batch is one write transaction.
"""
from __future__ import annotations

import asyncio
import logging
import time

from services.edge.store import LicenseStore, RollupResult
from services.edge.store_schema import day_start

log = logging.getLogger("gateway.edge.retention")

DAY = 86400


def cutoff(days: int, now: float) -> float:
    """Rows created before this are rolled up: the UTC midnight at or before now - days, so a
    day is never split between raw rows and its rolled-up total by one run."""
    return float(day_start(now - days * DAY))


async def run_once(store: LicenseStore, days: int, now: float | None = None) -> RollupResult:
    if days <= 0:
        return RollupResult()
    return await store.roll_up(cutoff(days, time.time() if now is None else now))


async def run_forever(store: LicenseStore, days: int, interval: float) -> None:
    """The edge's background task: a run at start-up, then one every `interval` seconds."""
    while True:
        try:
            done = await run_once(store, days)
            if done.rows:
                log.info("usage retention: %d ledger rows older than %d days rolled up into daily totals",
                         done.rows, days)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("usage retention failed; retrying in %.0fs", interval)
        await asyncio.sleep(interval)
