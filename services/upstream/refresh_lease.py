"""One token refresh per credential across upstream replicas (REDIS_URL), and the refreshed
token kept in Redis for all of them.

A replica whose token for credential C is missing, expiring or was refused (this runs inside
C's single flight, so once per replica):

  1. reads C's token record (and C's DEAD mark) from Redis: a usable record (same secret
     lineage, not expiring, not the refused token) is taken, no refresh; a DEAD mark for the
     secret it holds makes C DEAD here too, no refresh;
  2. else takes the lease, `SET lease:C <random> NX PX 3000`. Holding it (renewed every second
     while the token endpoint answers, so a holder that dies frees C within 3 s), it reads the
     record once more (the previous holder may have just finished), refreshes as one process
     would (credential file, token endpoint, atomic 0600 write back), stores the new record,
     publishes "token for C", and releases the lease by compare-and-delete;
  3. else (another replica holds the lease) waits for that replica's record, woken by its
     publication or after a short poll, and starts again at 1 — never longer than twice
     REFRESH_TIMEOUT in all.

A refresh that condemns the secret (invalid_grant) writes the DEAD mark before it lets the lease
go, so the waiting replicas do not try the refused grant again. Whenever Redis does not answer,
the refresh runs locally, as with one replica.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson

from .errors import RefreshError
from .shared_state import CHANNEL, DEAD, PREFIX, SharingDown, _loads

if TYPE_CHECKING:
    from .shared_state import SharedState

log = logging.getLogger(__name__)

TOKEN = PREFIX + "token:"
LEASE = PREFIX + "lease:"
LEASE_MS = 3000
RENEW_EVERY = 1.0
POLL = 0.1
MAX_TOKEN_TTL_MS = 2 * 3600 * 1000

# Only the holder may end or extend its lease.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end "
          "return 0")


class RefreshLeases:
    def __init__(self, shared: "SharedState") -> None:
        self._shared = shared
        self._release = shared.redis.register_script(_RELEASE)
        self._renew = shared.redis.register_script(_RENEW)
        # What happened to the refreshes this replica needed (tests and ListModels logs read it).
        self.counts = {"refreshed": 0, "taken": 0, "local": 0}

    async def refresh(self, cred: Any, rejected: str | None, local: Callable[[], Awaitable[None]]) -> None:
        """Give `cred` a usable token: another replica's, or one refreshed under the lease."""
        shared = self._shared
        if not shared.connected:
            self.counts["local"] += 1
            await local()
            return
        key = cred.share_key
        deadline = time.monotonic() + 2 * shared.refresh_timeout
        try:
            while True:
                if await self._take(cred, key, rejected):
                    return
                lease = uuid.uuid4().hex
                if await shared.call("refresh lease", shared.redis.set(LEASE + key, lease, nx=True, px=LEASE_MS)):
                    break
                if time.monotonic() >= deadline:
                    raise RefreshError("another upstream replica's token refresh is taking too long",
                                       permanent=False)
                await shared.wait_token(key, POLL)
        except SharingDown:
            self.counts["local"] += 1
            await local()
            return
        await self._refresh_holding(cred, key, lease, rejected, local)

    async def _take(self, cred: Any, key: str, rejected: str | None) -> bool:
        """Take another replica's token or DEAD mark; True when nothing is left to do."""
        pipe = self._shared.redis.pipeline(transaction=False)
        pipe.get(TOKEN + key)
        pipe.hget(DEAD, key)
        record, dead = await self._shared.call("token read", pipe.execute())
        mark = _loads(dead)
        if isinstance(mark, dict) and self._shared.apply_dead(cred, mark):
            raise RefreshError(cred.detail, permanent=True, ineligible=cred.ineligible)
        record = _loads(record)
        if isinstance(record, dict) and cred.take_token(record, rejected):
            self.counts["taken"] += 1
            log.info("credential %s: took the token another upstream replica refreshed", cred.id)
            return True
        return False

    async def _refresh_holding(self, cred: Any, key: str, lease: str, rejected: str | None,
                               local: Callable[[], Awaitable[None]]) -> None:
        shared = self._shared
        keeper = asyncio.create_task(self._keep(key, lease), name=f"lease-{cred.id}")
        try:
            with contextlib.suppress(SharingDown):
                if await self._take(cred, key, rejected):
                    return
            self.counts["refreshed"] += 1
            try:
                await local()
            except RefreshError as err:
                if err.permanent:
                    # Before the lease goes: the replicas waiting for it must see the mark.
                    with contextlib.suppress(SharingDown):
                        await shared.write(shared.dead_event(cred) | {"from": shared.replica_id})
                raise
            record = cred.token_record()
            if record is not None:
                with contextlib.suppress(SharingDown):
                    await self._store(key, record)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(SharingDown):
                await shared.call("lease release", self._release(keys=[LEASE + key], args=[lease]))

    async def _store(self, key: str, record: dict[str, Any]) -> None:
        ttl = int(record.get("exp", 0) - time.time() * 1000)
        pipe = self._shared.redis.pipeline(transaction=False)
        pipe.set(TOKEN + key, orjson.dumps(record), px=max(1000, min(ttl, MAX_TOKEN_TTL_MS)))
        pipe.publish(CHANNEL, orjson.dumps({"t": "tok", "k": key, "from": self._shared.replica_id}))
        await self._shared.call("token write", pipe.execute())

    async def _keep(self, key: str, lease: str) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            with contextlib.suppress(SharingDown):
                if not await self._shared.call("lease renew", self._renew(keys=[LEASE + key], args=[lease, LEASE_MS])):
                    return  # lost it (expired while Redis was away): the refresh goes on regardless
