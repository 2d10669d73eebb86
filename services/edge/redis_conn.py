"""The edge's Redis client (REDIS_URL): short timeouts, so an unreachable Redis costs a request
at most about REDIS_TIMEOUT, never a hang.

One retry on a connection error: after Redis restarts, the pool's first idle connection fails
once and the retry reconnects; a Redis that stays down fails every call within the timeout.
"""
from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Connections one edge may hold: admission and settlement calls each take one for a round
# trip, so this bounds Redis's clients per edge, not the edge's concurrency.
MAX_CONNECTIONS = 64


def connect(url: str, timeout: float, *, blocking_reads: bool = False) -> Redis:
    """A client for `url`. `blocking_reads` drops the read timeout (a pub/sub subscriber waits
    for messages as long as it likes; its liveness comes from health checks instead)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=timeout, socket_connect_timeout=timeout,
        socket_timeout=None if blocking_reads else timeout, retry=Retry(NoBackoff(), 1),
        health_check_interval=5 if blocking_reads else 0, client_name="gateway-edge")
    return Redis(connection_pool=pool)
