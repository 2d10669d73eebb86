"""Per-key limits shared by every edge replica, in Redis (chosen when REDIS_URL is set).

The same rules, order of checks and refusals as the in-process `Limiter`
(services/edge/limits.py), kept in Redis so that N replicas admit what one would: RPM and TPM
sliding windows, token reservations against quota and TPM, and the concurrent-request cap.
Each admission is one Lua script (one round trip, atomic across replicas); each settlement one
more, sent in the background when the request ends; nothing per streamed chunk.

Per license key (id K) — the `{K}` hash tag keeps them in one cluster slot:
    gw:lim:{K}:rpm      zset  admitted request id → time                (RPM window)
    gw:lim:{K}:tpm      zset  "id:tokens" → time of settlement          (TPM window)
    gw:lim:{K}:tpmsum   int   sum of the TPM window's tokens
    gw:lim:{K}:leases   zset  running request id → lease expiry         (concurrency, reservations)
    gw:lim:{K}:held     hash  running request id → tokens reserved
    gw:lim:{K}:heldsum  int   sum of `held`
    gw:lim:{K}:used     int   tokens used: the ledger total, plus every settlement since

Leases: a running request's lease is renewed by its edge every LEASE_SECONDS / 3; an edge that
dies stops renewing, and the next admission for the key drops its expired leases and gives
back what they held, so a crashed replica locks no key out for longer than LEASE_SECONDS.

Quota: the ledger is the truth, but rows reach it in batches from every edge. `used` starts at
the ledger total an edge read with the key record (plus that edge's rows not yet written) and
every settlement adds to it at once, so settled tokens count on every replica before any ledger
sees them; each admission raises it to the caller's ledger reading if that is higher (usage
that did not pass through Redis). It expires after a day without requests and is re-read from
the ledger then. If Redis loses its data (a restart without persistence), the count restarts
from the ledger as the edges last read it — at most AUTH_CACHE_TTL old — and the windows and
leases start empty: for that moment a key may get up to one cache period's usage more.

Time is Redis's own clock (TIME), so replicas' clocks need not agree; tests may pass their own.
Redis unreachable: keys with limits are refused with 503 + Retry-After (the limits cannot be
checked, and failing open would let a key past them); keys without limits never touch Redis.
A settlement that cannot be sent is logged; its lease expires and the ledger still has the row.
"""
from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import secrets
import time
import weakref
from typing import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.edge.errors import ApiError
from services.edge.limits import BUSY_RETRY, WINDOW, Reservation
from services.edge.store import KeyRecord

log = logging.getLogger("edge.limits")

LEASE_SECONDS = 30.0
WARN_EVERY = 10.0
USED_TTL_SECONDS = 86400

# Arguments travel as one space-separated string (A below): the client's cost of a command
# grows with its number of arguments, and this one runs on every request.
_NOW = """
local A = {}
for w in string.gmatch(ARGV[1], '%S+') do A[#A + 1] = w end
local now = tonumber(A[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# KEYS: rpm tpm tpmsum leases held heldsum used
# A: now window rid estimate quota tpm rpm max_concurrent ledger lease used_ttl  (-1 = no limit)
# Reply: {0, tokens, leased, used} admitted, or {refusal, detail}.
_RESERVE = _NOW + """
local window = tonumber(A[2])
local rid = A[3]
local estimate = tonumber(A[4])
local quota, tpm, rpm, maxc = tonumber(A[5]), tonumber(A[6]), tonumber(A[7]), tonumber(A[8])
local ledger, lease, used_ttl = tonumber(A[9]), tonumber(A[10]), tonumber(A[11])
local lease_ms = math.ceil(lease * 2000)
local window_ms = math.ceil(window * 1000) + 1000

local held = tonumber(redis.call('GET', KEYS[6]) or '0')
local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
if #gone > 0 then
  for _, r in ipairs(gone) do
    held = held - tonumber(redis.call('HGET', KEYS[5], r) or '0')
    redis.call('HDEL', KEYS[5], r)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if held < 0 then held = 0 end
  redis.call('SET', KEYS[6], held, 'KEEPTTL')
end

local room = nil
local used = -1
if quota >= 0 then
  used = tonumber(redis.call('GET', KEYS[7]) or '-1')
  if used < ledger then used = ledger end
  redis.call('SET', KEYS[7], used, 'EX', used_ttl)
  if used >= quota then return {1, string.format('%d', used)} end
  room = quota - used - held
  if room <= 0 then return {2, '0'} end
end
if maxc >= 0 and redis.call('ZCARD', KEYS[4]) >= maxc then return {3, '0'} end
if tpm >= 0 then
  local total = tonumber(redis.call('GET', KEYS[3]) or '0')
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if #old > 0 then
    for _, m in ipairs(old) do total = total - tonumber(string.match(m, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
    if total < 0 then total = 0 end
    redis.call('SET', KEYS[3], total, 'KEEPTTL')
  end
  if total >= tpm then
    local left = total
    local ev = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #ev, 2 do
      left = left - tonumber(string.match(ev[i], ':(%d+)$'))
      if left < tpm then return {4, tostring(math.max(0, tonumber(ev[i + 1]) + window - now))} end
    end
    return {4, tostring(window)}
  end
  local tpm_room = tpm - total - held
  if tpm_room <= 0 then return {5, '0'} end
  if room == nil or tpm_room < room then room = tpm_room end
end
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local wait = window
    if #first > 0 then wait = tonumber(first[2]) + window - now end
    return {6, tostring(wait)}
  end
  redis.call('ZADD', KEYS[1], now, rid)
  redis.call('PEXPIRE', KEYS[1], window_ms)
end
if room == nil and maxc < 0 then return {0, '0', '0', string.format('%d', used)} end
local tokens = 0
if room ~= nil then tokens = math.max(1, math.min(estimate, room)) end
redis.call('ZADD', KEYS[4], now + lease, rid)
redis.call('HSET', KEYS[5], rid, tokens)
redis.call('SET', KEYS[6], held + tokens)
for i = 4, 6 do redis.call('PEXPIRE', KEYS[i], lease_ms) end
return {0, string.format('%d', tokens), '1', string.format('%d', used)}
"""

# KEYS: tpm tpmsum leases held heldsum used
# A: now rid actual window count_tpm count_quota used_ttl
_SETTLE = _NOW + """
local rid, actual, window = A[2], tonumber(A[3]), tonumber(A[4])
if redis.call('ZREM', KEYS[3], rid) == 1 then
  local t = tonumber(redis.call('HGET', KEYS[4], rid) or '0')
  redis.call('HDEL', KEYS[4], rid)
  if t > 0 then
    local h = tonumber(redis.call('GET', KEYS[5]) or '0') - t
    if h < 0 then h = 0 end
    redis.call('SET', KEYS[5], h, 'KEEPTTL')
  end
end
if actual > 0 then
  if A[5] == '1' then
    redis.call('ZADD', KEYS[1], now, rid .. ':' .. actual)
    redis.call('INCRBY', KEYS[2], actual)
    local ms = math.ceil(window * 1000) + 1000
    redis.call('PEXPIRE', KEYS[1], ms)
    redis.call('PEXPIRE', KEYS[2], ms)
  end
  if A[6] == '1' and redis.call('EXISTS', KEYS[6]) == 1 then
    redis.call('INCRBY', KEYS[6], actual)
    redis.call('EXPIRE', KEYS[6], tonumber(A[7]))
  end
end
return 1
"""

# KEYS: leases held heldsum; A: now lease rid...
_RENEW = _NOW + """
local until_ = now + tonumber(A[2])
for i = 3, #A do redis.call('ZADD', KEYS[1], 'XX', until_, A[i]) end
local ms = math.ceil(tonumber(A[2]) * 2000)
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ms) end
return 1
"""

_QUOTA_BUSY = "the rest of this key's token quota is reserved by its requests in progress"


@functools.lru_cache(maxsize=4096)
def _keys(key_id: int) -> tuple[bytes, ...]:
    p = f"gw:lim:{{{key_id}}}:".encode()
    return tuple(p + name for name in (b"rpm", b"tpm", b"tpmsum", b"leases", b"held", b"heldsum", b"used"))


def unavailable() -> ApiError:
    return ApiError(503, "rate limits cannot be checked right now; try again shortly",
                    code="limits_unavailable", retry_after=BUSY_RETRY)


class RedisReservation(Reservation):
    __slots__ = ("rid", "count_tpm", "count_quota")


class RedisLimiter:
    def __init__(self, client: Redis, *, window: float = WINDOW, lease: float = LEASE_SECONDS,
                 timeout: float = 0.5, clock: Callable[[], float] | None = None) -> None:
        self.window = window
        self.lease = lease
        self.timeout = timeout
        self._clock = clock  # None: Redis's clock
        self._redis = client
        self._reserve = client.register_script(_RESERVE)
        self._settle_script = client.register_script(_SETTLE)
        self._renew = client.register_script(_RENEW)
        self._edge = secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._ledger: dict[int, int] = {}
        self._seen: dict[int, int] = {}
        # Running requests' leases, renewed while their reservation lives.
        self._live: weakref.WeakValueDictionary[str, RedisReservation] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task] = set()
        self._renewer: asyncio.Task | None = None
        self._refused = 0
        self._warned = float("-inf")

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="limit-lease-renewal")

    async def drain(self) -> None:
        """Wait for the settlements sent so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        try:
            await asyncio.wait_for(self.drain(), timeout=max(2.0, 4 * self.timeout))
        except asyncio.TimeoutError:
            log.warning("%d limit settlements not sent at shutdown; their leases will expire", len(self._tasks))
        await self._redis.aclose()

    # -- the Limits interface ---------------------------------------------------------------

    def check_model(self, key: KeyRecord, model: str) -> None:
        if not key.allows_model(model):
            raise ApiError(403, f"this key may not use model '{model}'", code="model_not_allowed")

    def sync_quota(self, key: KeyRecord, pending: int = 0) -> None:
        self._ledger[key.id] = key.tokens_used + pending

    def used(self, key: KeyRecord) -> int:
        """The last quota figure this edge saw (Redis's, or its own ledger reading)."""
        return max(self._ledger.get(key.id, key.tokens_used), self._seen.get(key.id, 0))

    def record_tokens(self, key_id: int, tokens: int) -> None:
        # Only requests that hold no reservation come here: keys without token limits, whose
        # tokens the ledger counts (and `used` is re-anchored on it).
        pass

    def prune(self) -> None:
        pass  # Redis expires quiet keys' windows itself

    async def admit(self, key: KeyRecord, model: str) -> None:
        (await self.reserve(key, model, 0)).release()

    async def reserve(self, key: KeyRecord, model: str, estimate: int = 1, *, prompt: int = 0) -> Reservation:
        self.check_model(key, model)
        if key.quota is None and key.tpm is None and key.rpm is None and key.max_concurrent is None:
            return Reservation(None, key.id, 0, prompt)
        rid = f"{self._edge}:{next(self._ids)}"
        args = [self._now(), self.window, rid, max(1, estimate), _opt(key.quota), _opt(key.tpm), _opt(key.rpm),
                _opt(key.max_concurrent), self._ledger.get(key.id, key.tokens_used), self.lease, USED_TTL_SECONDS]
        try:
            # The client's own timeouts (connect, read, waiting for a pooled connection) bound this.
            reply = await self._reserve(keys=_keys(key.id), args=(_pack(args),))
        except (RedisError, OSError, TimeoutError) as exc:
            self._refused += 1
            now = time.monotonic()
            if now - self._warned >= WARN_EVERY:  # one line per outage period, not one per request
                self._warned = now
                log.warning("Redis unavailable (%s): requests of keys with limits refused with 503 "
                            "(%d so far)", type(exc).__name__, self._refused)
            raise unavailable() from None
        outcome = int(reply[0])
        if outcome == 0:
            tokens, leased = int(reply[1]), reply[2] == b"1"
            if key.quota is not None:
                self._seen[key.id] = int(reply[3])
            if not leased:
                return Reservation(None, key.id, 0, prompt)
            res = RedisReservation(self, key.id, tokens, prompt)
            res.rid, res.count_tpm, res.count_quota = rid, key.tpm is not None, key.quota is not None
            self._live[rid] = res
            return res
        detail = float(reply[1])
        if outcome == 1:
            self._seen[key.id] = int(detail)
            raise ApiError(403, f"token quota of this key is spent ({int(detail)} of {key.quota} tokens)",
                           code="insufficient_quota", error_type="insufficient_quota")
        if outcome == 2:
            raise ApiError(429, _QUOTA_BUSY, code="rate_limit_exceeded", retry_after=BUSY_RETRY)
        if outcome == 3:
            raise ApiError(429, f"concurrent-request limit of this key reached ({key.max_concurrent})",
                           code="rate_limit_exceeded", retry_after=BUSY_RETRY)
        if outcome == 4:
            raise ApiError(429, f"tokens-per-minute limit of this key reached ({key.tpm})",
                           code="rate_limit_exceeded", retry_after=max(detail, 0.001))
        if outcome == 5:
            raise ApiError(429, f"tokens-per-minute limit of this key reached ({key.tpm}, "
                                "reserved by its requests in progress)",
                           code="rate_limit_exceeded", retry_after=BUSY_RETRY)
        raise ApiError(429, f"requests-per-minute limit of this key reached ({key.rpm})",
                       code="rate_limit_exceeded", retry_after=max(detail, 0.001))

    def _settle(self, res: Reservation, actual: int) -> None:
        assert isinstance(res, RedisReservation)
        self._live.pop(res.rid, None)
        k = _keys(res.key_id)
        args = [self._now(), res.rid, max(0, actual), self.window, int(res.count_tpm), int(res.count_quota),
                USED_TTL_SECONDS]
        try:
            task = asyncio.get_running_loop().create_task(self._send_settle(res.key_id, k[1:], args))
        except RuntimeError:
            return  # no loop (a meter collected at shutdown): the lease expires by itself
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_settle(self, key_id: int, keys: tuple[bytes, ...], args: list) -> None:
        try:
            await self._settle_script(keys=keys, args=(_pack(args),))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("settlement of a request of key %d not sent (%s); its lease will expire", key_id,
                        type(exc).__name__)

    # -- leases -----------------------------------------------------------------------------

    async def renew_once(self) -> None:
        by_key: dict[int, list[str]] = {}
        for rid, res in list(self._live.items()):
            if not res.done:
                by_key.setdefault(res.key_id, []).append(rid)
        if not by_key:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id, rids in by_key.items():
                k = _keys(key_id)
                await self._renew(keys=[k[3], k[4], k[5]], args=(_pack([self._now(), self.lease, *rids]),),
                                  client=pipe)
            await pipe.execute()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew_once()
            except (RedisError, OSError) as exc:
                log.warning("could not renew limit leases (%s)", type(exc).__name__)
            except Exception:
                # The loop must outlive any one failure: leases not renewed free their keys early.
                log.exception("could not renew limit leases")

    def _now(self) -> str:
        return "-" if self._clock is None else repr(self._clock())

    async def state(self, key_id: int) -> tuple[int, int]:
        """(requests running, tokens they hold) for a key, across replicas (tests, diagnostics)."""
        k = _keys(key_id)
        running, held = await self._redis.zcard(k[3]), await self._redis.get(k[5])
        return running, int(held or 0)


def _pack(args: list) -> str:
    return " ".join(map(str, args))


def _opt(limit: int | None) -> int:
    return -1 if limit is None else limit
