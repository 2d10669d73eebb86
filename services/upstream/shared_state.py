"""State shared by several upstream replicas through Redis (REDIS_URL).

Without REDIS_URL nothing here runs: the pool is the one process's, as before. With it:

- one token refresh per credential at a time, and the refreshed token kept for every replica:
  refresh_lease.py;
- the project discovery found for a Code Assist credential, kept for every replica;
- cool-downs (429s) and DEAD marks: written to two Redis hashes (a replica that starts, or comes
  back after Redis was away, reads them all) and published on one channel, which every replica
  applies to its own members. Choosing a member therefore costs no Redis round trip: the hot
  path reads the local mirror, exactly as with one process.

Members are named across replicas by `Credential.share_key` (backend kind / credential id: the
file stem, the pool file's member name, or the hash-derived id of a key), never by path. A DEAD
mark carries the fingerprint of the secret it condemns: a replica whose file already holds a new
login ignores it, and a revival (new file content) is taken only by replicas holding that same
new secret.

Redis away: every command has a short timeout; a failure marks sharing down (ListModels
`sharing`, metric gateway_upstream_sharing_up), the replica serves with its local state, and the
listener reconnects with backoff, re-reads the hashes and sends what it learnt meanwhile.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, TypeVar

import orjson

log = logging.getLogger(__name__)

T = TypeVar("T")

# Per Redis command: a slow or hung Redis must not stall a call for longer than this.
OP_TIMEOUT = 0.5
RECONNECT_MAX = 5.0
# close(): the whole of it, and how often a task that did not stop is cancelled again meanwhile.
CLOSE_TIMEOUT = 3.0
CLOSE_RECANCEL = 0.2
QUEUE_MAX = 1024
MISSED_MAX = 4096
PREFIX = "gw:upstream:"
CHANNEL = PREFIX + "events"
COOL = PREFIX + "cool"     # field "<share_key>|<model>" → {"u": until (unix s), "r": reason}
DEAD = PREFIX + "dead"     # field "<share_key>" → {"fp", "d": detail, "i": ineligible, "at": dead_at}
PROJECT = PREFIX + "project:"
OFF = PREFIX + "off"       # field "<share_key>" → "1": switched off from the admin console
# The _missed slot of switch events (their own, so a missed DEAD mark is not overwritten).
SWITCH = "#switch"


class SharingDown(Exception):
    """Redis did not answer in time; the caller goes on with this replica's local state."""


@dataclass(frozen=True)
class SharingStatus:
    configured: bool
    connected: bool
    detail: str
    replica_id: str


def _loads(raw: Any) -> Any:
    try:
        return orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        return None


class SharedState:
    def __init__(self, url: str, *, refresh_timeout: float) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from .refresh_lease import RefreshLeases

        self.replica_id = uuid.uuid4().hex[:12]
        self.refresh_timeout = refresh_timeout
        # No client-side retries: a failed command falls back to local state at once.
        common: dict[str, Any] = {"socket_connect_timeout": OP_TIMEOUT, "retry": Retry(NoBackoff(), 0)}
        self.redis = aioredis.Redis.from_url(url, socket_timeout=OP_TIMEOUT, **common)
        # The subscriber waits for messages: no read timeout, a ping every few seconds instead.
        self._sub_client = aioredis.Redis.from_url(url, socket_timeout=None, health_check_interval=5, **common)
        self.connected = False
        self.detail = "connecting to Redis"
        self._entries: Callable[[], Iterable[Any]] = lambda: ()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._missed: dict[tuple[str, str], dict[str, Any]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attempted = asyncio.Event()
        self._closing = False
        self.tokens = RefreshLeases(self)

    # --- life ----------------------------------------------------------------------------------

    async def start(self, entries: Callable[[], Iterable[Any]]) -> None:
        """Start listening; returns once the first connection attempt is over (bounded), so that
        the first refreshes of a fresh replica already go through the lease."""
        self._entries = entries
        for coro, name in ((self._listen(), "sharing-listener"), (self._write_loop(), "sharing-writer")):
            task = asyncio.create_task(coro, name=name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(OP_TIMEOUT * 6):
                await self._attempted.wait()

    async def close(self) -> None:
        """Stop listening and writing and close both clients, within CLOSE_TIMEOUT (a shutdown never
        waits on Redis). A task that let a cancellation pass unheeded (a library that turned it into
        an error, a client read that went on) is cancelled again; one still running at the bound is
        left behind with a warning: it would otherwise hold the process's shutdown for ever."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        while self._tasks and loop.time() < deadline:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait(list(self._tasks), timeout=min(CLOSE_RECANCEL, max(0.0, deadline - loop.time())))
        for task in list(self._tasks):
            log.warning("shared state: task %s did not stop when cancelled; shutting down without it",
                        task.get_name())
        for client in (self.redis, self._sub_client):
            try:
                async with asyncio.timeout(max(OP_TIMEOUT, deadline - loop.time())):
                    await client.aclose()
            except Exception as exc:  # TimeoutError included
                log.warning("shared state: closing a Redis client failed: %s: %s", type(exc).__name__, exc)

    def status(self) -> SharingStatus:
        return SharingStatus(True, self.connected, "" if self.connected else self.detail, self.replica_id)

    # --- commands ------------------------------------------------------------------------------

    async def call(self, what: str, work: Awaitable[T]) -> T:
        """Run one Redis command (or pipeline); SharingDown when Redis does not answer."""
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(OP_TIMEOUT * 2):
                return await work
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(what, exc)
            raise SharingDown(what) from exc

    def _down(self, what: str, exc: BaseException) -> None:
        detail = f"Redis unreachable ({type(exc).__name__})"
        if self.connected or detail != self.detail:
            log.warning("shared state: %s failed: %s: %s; serving with this replica's local state",
                        what, type(exc).__name__, exc)
        self.connected = False
        self.detail = detail

    # --- the mirror: publish -------------------------------------------------------------------

    def cooled(self, entry: Any, model: str, until: float, reason: str) -> None:
        self._publish({"t": "cool", "k": entry.cred.share_key, "m": model, "u": until, "r": reason})

    def credential_changed(self, cred: Any) -> None:
        """A DEAD mark or a revival made on this replica (Credential.on_change)."""
        if cred.state.value == "DEAD":
            self._publish(self.dead_event(cred))
        else:
            self._publish({"t": "alive", "k": cred.share_key, "fp": cred.fingerprint()})

    def switched(self, cred: Any, enabled: bool) -> None:
        """The operator switched a credential off or on here (admin console): every replica follows."""
        self._publish({"t": "on" if enabled else "off", "k": cred.share_key, "m": SWITCH})

    @staticmethod
    def dead_event(cred: Any) -> dict[str, Any]:
        return {"t": "dead", "k": cred.share_key, "fp": cred.fingerprint(), "d": cred.detail,
                "i": cred.ineligible, "at": cred.dead_at}

    def _publish(self, event: dict[str, Any]) -> None:
        event["from"] = self.replica_id
        if not self.connected:
            self._miss(event)
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._miss(event)

    def _miss(self, event: dict[str, Any]) -> None:
        # Kept (the latest per member and model) and sent when Redis answers again.
        if len(self._missed) < MISSED_MAX:
            self._missed[(event["k"], event.get("m", ""))] = event

    async def _write_loop(self) -> None:
        while not self._closing:
            event = await self._queue.get()
            try:
                await self.write(event)
            except SharingDown:
                self._miss(event)

    async def write(self, event: dict[str, Any]) -> None:
        """Store an event in its hash and publish it (SharingDown when Redis does not answer)."""
        pipe = self.redis.pipeline(transaction=False)
        kind, key = event["t"], event["k"]
        if kind == "cool":
            pipe.hset(COOL, f"{key}|{event['m']}", orjson.dumps({"u": event["u"], "r": event["r"]}))
        elif kind == "dead":
            pipe.hset(DEAD, key, orjson.dumps({k: event[k] for k in ("fp", "d", "i", "at")}))
        elif kind == "alive":
            pipe.hdel(DEAD, key)
        elif kind == "off":
            pipe.hset(OFF, key, b"1")
        elif kind == "on":
            pipe.hdel(OFF, key)
        pipe.publish(CHANNEL, orjson.dumps(event))
        await self.call(f"sharing {kind}", pipe.execute())

    # --- the mirror: apply ---------------------------------------------------------------------

    def _by_key(self) -> dict[str, Any]:
        return {e.cred.share_key: e for e in self._entries()}

    def _apply(self, data: bytes) -> None:
        event = _loads(data)
        if not isinstance(event, dict) or event.get("from") == self.replica_id:
            return
        kind, key = event.get("t"), event.get("k")
        if not isinstance(key, str):
            return
        if kind == "tok":
            wake = self._wake.pop(key, None)
            if wake is not None:
                wake.set()
            return
        entry = self._by_key().get(key)
        if entry is None:
            return
        if kind == "cool":
            self.apply_cool(entry, event.get("m"), event.get("u"), event.get("r"))
        elif kind == "dead":
            self.apply_dead(entry.cred, event)
        elif kind in ("off", "on"):
            self.apply_switch(entry, kind == "off")
        elif kind == "alive" and event.get("fp") == entry.cred.fingerprint() and entry.cred.state.value == "DEAD":
            entry.cred.revive("another replica saw its credential come back", notify=False)

    @staticmethod
    def apply_cool(entry: Any, model: Any, until: Any, reason: Any) -> None:
        if not isinstance(model, str) or not isinstance(until, (int, float)):
            return
        if until > max(entry.cooling.get(model, 0.0), time.time()):
            entry.cooling[model] = float(until)
            entry.cooling_reason[model] = str(reason or "429")
            log.info("credential %s cooling down for %s until %.1f (seen by another replica)",
                     entry.cred.id, model, until)

    def apply_switch(self, entry: Any, off: bool) -> None:
        """Follow another replica's admin console: its own credential file records it too (an
        oauth_creds copy of this replica's), so a later file reload does not undo it."""
        from .credential_admin import set_enabled  # credential_admin imports the pool's modules

        async def follow() -> None:
            try:
                await set_enabled(entry, not off)
            except Exception as exc:  # a file that cannot be rewritten: still switched in memory
                log.warning("credential %s: could not record the switch in its file: %s", entry.cred.id, exc)
                from .credential_admin import OPERATOR_DETAIL, switch
                switch(entry.cred, not off, OPERATOR_DETAIL)
            log.info("credential %s switched %s by another replica's admin console", entry.cred.id,
                     "off" if off else "on")

        task = asyncio.create_task(follow(), name=f"sharing-switch-{entry.cred.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def apply_dead(cred: Any, mark: dict[str, Any]) -> bool:
        """Take a DEAD mark when it condemns the secret this replica holds; True if DEAD now."""
        if mark.get("fp") != cred.fingerprint() or cred.state.value == "DISABLED":
            return False
        if cred.state.value != "DEAD":
            at = mark.get("at")
            cred.mark_dead(f"{mark.get('d') or 'DEAD'} (seen by another replica)", ineligible=bool(mark.get("i")),
                           dead_at=at if isinstance(at, (int, float)) else None, notify=False)
        return True

    async def resync(self) -> None:
        """Read every cool-down and DEAD mark (after a (re)connect, or when members changed)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(COOL)
        pipe.hgetall(DEAD)
        pipe.hgetall(OFF)
        cool, dead, off = await self.call("sharing resync", pipe.execute())
        now = time.time()
        by_key = self._by_key()
        stale = []
        for field, raw in cool.items():
            key, _, model = field.decode(errors="replace").rpartition("|")
            value = _loads(raw)
            until = value.get("u") if isinstance(value, dict) else None
            if not isinstance(until, (int, float)) or until <= now:
                stale.append(field)
            elif key in by_key:
                self.apply_cool(by_key[key], model, until, value.get("r"))
        for field, raw in dead.items():
            mark = _loads(raw)
            entry = by_key.get(field.decode(errors="replace"))
            if entry is not None and isinstance(mark, dict):
                self.apply_dead(entry.cred, mark)
        for field in off:
            entry = by_key.get(field.decode(errors="replace"))
            if entry is not None and entry.cred.state.value != "DISABLED":
                self.apply_switch(entry, True)
        if stale:
            with contextlib.suppress(SharingDown):
                await self.call("sharing prune", self.redis.hdel(COOL, *stale))

    def resync_soon(self) -> None:
        if not self.connected:
            return  # the listener re-reads everything when it connects
        task = asyncio.create_task(self._quiet(self.resync()), name="sharing-resync")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _quiet(work: Awaitable[Any]) -> None:
        with contextlib.suppress(SharingDown):
            await work

    async def _listen(self) -> None:
        delay = 0.2
        while not self._closing:
            pubsub = self._sub_client.pubsub(ignore_subscribe_messages=True)
            try:
                await self.call("sharing subscribe", pubsub.subscribe(CHANNEL))
                while not self._closing:
                    if not self.connected:
                        # (Re)connected, or a command failed meanwhile: read everything again.
                        await self._catch_up()
                        delay = 0.2
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._apply(message["data"])
            except SharingDown:
                pass
            except Exception as exc:  # the connection broke: Redis went away or restarted
                self._down("sharing subscription", exc)
            finally:
                self._attempted.set()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _catch_up(self) -> None:
        await self.resync()
        missed, self._missed = list(self._missed.values()), {}
        for i, event in enumerate(missed):
            try:
                await self.write(event)
            except SharingDown:
                for later in missed[i:]:
                    self._miss(later)
                raise
        log.info("shared state: Redis connected; replica %s shares refresh leases, tokens, cool-downs and "
                 "DEAD marks", self.replica_id)
        self.connected, self.detail = True, ""
        self._attempted.set()

    # --- waiting for another replica's token ---------------------------------------------------

    async def wait_token(self, key: str, timeout: float) -> None:
        """Until another replica publishes a token for `key`, or `timeout` (a poll then)."""
        wake = self._wake.setdefault(key, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wake.wait()

    # --- Code Assist projects ------------------------------------------------------------------

    async def project_of(self, cred: Any) -> tuple[str, str] | None:
        """(project, tier) another replica discovered for this credential's secret, if any."""
        try:
            value = _loads(await self.call("project read", self.redis.get(PROJECT + cred.share_key)))
        except SharingDown:
            return None
        if isinstance(value, dict) and value.get("fp") == cred.fingerprint() and isinstance(value.get("p"), str) \
                and value["p"]:
            return value["p"], str(value.get("tier") or "")
        return None

    async def keep_project(self, cred: Any, project: str) -> None:
        value = orjson.dumps({"p": project, "tier": cred.tier, "fp": cred.fingerprint()})
        with contextlib.suppress(SharingDown):
            await self.call("project write", self.redis.set(PROJECT + cred.share_key, value, ex=7 * 86400))
