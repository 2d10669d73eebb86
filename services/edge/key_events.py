"""Revocation fan-out over Redis (REDIS_URL): a change to a key reaches every edge at once.

Whatever changes a key — the keys CLI, the admin API — goes through the license store; with
REDIS_URL set that store is wrapped in `NotifyingStore`, which publishes the key's id on
CHANNEL after each change. Every edge subscribes (`KeyChangeListener`) and empties its key cache
(services/edge/auth.py) on each message, so the next request with a revoked or disabled key
reads the store again and is refused: within a Redis round trip of the change, on every replica.

Pub/sub delivers at most once and only to connected subscribers, so the store's revision
polling (AUTH_REFRESH_SECONDS) stays on as the fallback, and a subscriber that (re)connects
empties the cache too, in case it missed a message while it was away.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.edge.redis_conn import connect

log = logging.getLogger("edge.key_events")

CHANNEL = "gw:keys:changed"

# Store methods that change a key (a new store method that does must be named here).
MUTATIONS = frozenset({"create_key", "revoke", "set_enabled", "update_key", "set_limits", "delete_key"})


class KeyChangePublisher:
    def __init__(self, client: Redis, timeout: float) -> None:
        self._redis = client
        self._timeout = timeout

    @classmethod
    def from_url(cls, url: str, timeout: float) -> "KeyChangePublisher":
        return cls(connect(url, timeout), timeout)

    async def announce(self, key_id: Any = "") -> bool:
        """Tell every edge that a key changed; False (logged) when Redis could not be told:
        the edges then see the change at their next revision poll."""
        try:
            async with asyncio.timeout(2 * self._timeout):
                await self._redis.publish(CHANNEL, str(key_id))
            return True
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("key change not announced on Redis (%s); edges will see it at their next poll",
                        type(exc).__name__)
            return False

    async def close(self) -> None:
        await self._redis.aclose()


class NotifyingStore:
    """A license store that announces each key change after the store made it."""

    def __init__(self, store: Any, publisher: KeyChangePublisher) -> None:
        self._store = store
        self.publisher = publisher
        self.announced: bool | None = None  # outcome of the last announcement

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in MUTATIONS:
            return attr

        async def changed(*args: Any, **kwargs: Any) -> Any:
            result = await attr(*args, **kwargs)
            key_id = getattr(result, "id", args[0] if args and isinstance(args[0], int) else "")
            self.announced = await self.publisher.announce(key_id)
            return result

        return changed

    async def close(self) -> None:
        try:
            await self._store.close()
        finally:
            await self.publisher.close()


class KeyChangeListener:
    """Calls `on_change()` for every announced key change, and whenever it (re)subscribes."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._on_change: Callable[[], None] = lambda: None
        self._task: asyncio.Task | None = None
        self.subscribed = asyncio.Event()

    def start(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="key-change-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            client = connect(self._url, self._timeout, blocking_reads=True)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._on_change()
                    self.subscribed.set()
                    backoff = 0.2
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                        if msg is not None:
                            self._on_change()
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning("key change channel lost (%s); revision polling covers until it is back",
                            type(exc).__name__)
            finally:
                await client.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
