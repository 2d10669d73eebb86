"""Phase `revoke` of `make bench`: how soon every edge refuses a revoked key.

The README promises that with REDIS_URL "a revoked key is refused everywhere within a second",
and that on a shared store (PostgreSQL) "a revoke reaches every edge within
AUTH_REFRESH_SECONDS". Both are measured here on real processes (tests/support/cluster.py: three
edges, one upstream, Envoy, one simulator), each edge group on a PostgreSQL database of its own
(tests/support/servers.py's server):

  - `redis`: three edges with REDIS_URL whose revision poll and key cache are set to an hour
    (AUTH_REFRESH_SECONDS, AUTH_CACHE_TTL), so a refusal within the wait can only have come
    through the Redis fan-out;
  - `poll`: three edges without Redis, AUTH_REFRESH_SECONDS at its default; AUTH_CACHE_TTL's
    default (30 s) is longer than the wait, so a refusal can only have come from the poll.

Each round: a fresh key, one served request on every edge (the key is then in each edge's
cache), the key revoked through Envoy's admin API as the admin console does
(POST /gemini_cli/admin/api/keys/{id}/revoke: it answers once the store has it and, with Redis,
once the change is announced), then each edge polled every POLL_S with a cheap authenticated
request (GET /gemini_cli/v1/models, on a connection already open) until it refuses the key. The
figure per edge and round: time from the revoke call's answer to that edge's first refusal
(the refused answer's arrival, so it includes that request's own round trip). The keys CLI
changes the store the same way (services/edge/admin_service.py), but its interpreter takes
about half a second to exit after the change, which would hide the poll's delay.
"""
from __future__ import annotations

import asyncio
import secrets
import statistics
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from services.edge.settings import EdgeSettings
from tests import harness
from tests.support.cluster import Cluster, start_cluster
from tests.support.servers import start_postgres, start_redis

ROUNDS = 5
EDGES = 3
POLL_S = 0.005
WAIT_S = 10.0  # per edge and round; below AUTH_CACHE_TTL's default, so the cache's expiry never answers
REDIS_BOUND_S = 1.0  # README: "refused everywhere within a second"
POLL_SLACK_S = 1.0  # README: "within AUTH_REFRESH_SECONDS"; a second on top for the request and the machine
AUTH_REFRESH_S = EdgeSettings.model_fields["auth_refresh_seconds"].default
REFUSED = (401, 403)
PATHS: dict[str, dict[str, str]] = {
    "redis": {"AUTH_REFRESH_SECONDS": "3600", "AUTH_CACHE_TTL": "3600"},
    "poll": {},  # the defaults
}


def bound_s(path: str) -> float:
    return REDIS_BOUND_S if path == "redis" else AUTH_REFRESH_S + POLL_SLACK_S


def summarize(delays: list[float | None], bound: float) -> dict[str, Any]:
    """Delays (seconds; None: still served when the wait ended) of every edge in every round:
    p50 and max in ms, and whether every one refused within `bound`."""
    seen = [d for d in delays if d is not None]
    every_edge_refused = bool(delays) and len(seen) == len(delays)
    return {"refusals": len(seen), "of": len(delays),
            "p50_ms": statistics.median(seen) * 1000 if seen else None,
            "max_ms": max(seen) * 1000 if every_edge_refused else None,
            "bound_s": bound, "holds": every_edge_refused and max(seen) <= bound}


def goal_text(path: str) -> str:
    if path == "redis":
        return f"Redis fan-out: every edge refuses a revoked key within {REDIS_BOUND_S:g} s"
    return f"poll: every edge refuses a revoked key within AUTH_REFRESH_SECONDS + {POLL_SLACK_S:g} s"


def detail_text(s: dict[str, Any]) -> str:
    if s["max_ms"] is None:
        return (f"{s['of'] - s['refusals']} of {s['of']} edge-rounds still served the key after {WAIT_S:g} s "
                f"(bound {s['bound_s']:g} s)")
    return f"p50 {s['p50_ms']:.0f} ms, max {s['max_ms']:.0f} ms over {s['of']} edge-rounds (bound {s['bound_s']:g} s)"


async def _until_refused(client: httpx.AsyncClient, url: str, key: str, since: float) -> tuple[float | None, int]:
    """Seconds from `since` to the first refusal of `key` (None: still served after WAIT_S);
    answers that are neither served nor refused are counted, and polling goes on."""
    errors = 0
    headers = {"Authorization": f"Bearer {key}"}
    while True:
        try:
            status = (await client.get(url, headers=headers)).status_code
        except httpx.HTTPError:
            status = 0
        now = time.perf_counter()
        if status in REFUSED:
            return now - since, errors
        errors += status != 200
        if now - since > WAIT_S:
            return None, errors
        await asyncio.sleep(POLL_S)


async def _round(cluster: Cluster, clients: list[httpx.AsyncClient], admin_token: str) -> tuple[list, int, float]:
    """One fresh key revoked: (delay per edge, errors, seconds the revoke call took)."""
    admin = f"{cluster.public_base}/admin/api/keys"
    auth = {"Authorization": f"Bearer {admin_token}"}
    r = await clients[0].post(admin, json={"name": f"revoke-{uuid.uuid4().hex[:8]}"}, headers=auth)
    if r.status_code != 201:
        raise RuntimeError(f"admin API did not create a key: {r.status_code} {r.text[:200]}")
    key, key_id = r.json()["key"], r.json()["record"]["id"]
    urls = [f"{cluster.edge_base(i)}/v1/models" for i in range(len(cluster.edges))]
    for client, url in zip(clients, urls):  # each edge now holds the key in its cache
        r = await client.get(url, headers={"Authorization": f"Bearer {key}"})
        if r.status_code != 200:
            raise RuntimeError(f"a fresh key was not served: {r.status_code} {r.text[:200]}")
    t0 = time.perf_counter()
    r = await clients[0].post(f"{admin}/{key_id}/revoke", headers=auth)
    returned = time.perf_counter()
    if r.status_code != 200:
        raise RuntimeError(f"admin API did not revoke the key: {r.status_code} {r.text[:200]}")
    got = await asyncio.gather(*(_until_refused(c, u, key, returned) for c, u in zip(clients, urls)))
    return [d for d, _ in got], sum(e for _, e in got), returned - t0


async def revoke_row(base: Path, rounds: int = ROUNDS) -> dict[str, Any]:
    logs = base / "logs"
    paths: dict[str, Any] = {}
    with ExitStack() as stack:
        pg = start_postgres()
        stack.callback(pg.stop)
        redis = start_redis()
        stack.callback(redis.stop)
        sim = harness.start_simulator(logs)
        stack.callback(sim.stop)
        for path, env in PATHS.items():
            admin_token = secrets.token_urlsafe(24)
            edge_env = {"LOG_LEVEL": "WARNING", "ADMIN_TOKEN": admin_token, **env}
            cluster = start_cluster(sim, base / path, edges=EDGES, upstreams=1, license_db=pg.create_database(),
                                    redis_url=redis.url() if path == "redis" else None, edge_env=edge_env,
                                    upstream_env={"LOG_LEVEL": "WARNING"})
            delays: list[float | None] = []
            errors, call_s = 0, []
            try:
                clients = [httpx.AsyncClient(timeout=30, trust_env=False) for _ in cluster.edges]
                try:
                    for _ in range(rounds):
                        d, e, took = await _round(cluster, clients, admin_token)
                        delays += d
                        errors += e
                        call_s.append(took)
                finally:
                    for c in clients:
                        await c.aclose()
            finally:
                cluster.stop()
            paths[path] = {**summarize(delays, bound_s(path)), "errors": errors,
                           "delays_ms": [None if d is None else round(d * 1000, 1) for d in delays],
                           "revoke_call_ms_p50": statistics.median(call_s) * 1000,
                           "edge_env": dict(env)}
    return {"when": time.time(), "rounds": rounds, "edges": EDGES, "store": "postgresql", "poll_s": POLL_S,
            "wait_s": WAIT_S, "auth_refresh_seconds": AUTH_REFRESH_S, "paths": paths,
            "goals": {goal_text(p): {"holds": s["holds"], "detail": detail_text(s)} for p, s in paths.items()}}


def print_revoke(result: dict | None) -> None:
    if not result:
        return
    print(f"\nRevocation reaching the edges ({result['edges']} edges on one {result['store']} store, "
          f"{result['rounds']} rounds, a fresh key each; time from the admin API's revoke answer to each "
          f"edge's first refusal, polled every {result['poll_s'] * 1000:g} ms):")
    for path, s in result["paths"].items():
        how = ("REDIS_URL, poll and cache set to an hour" if path == "redis"
               else f"no Redis, AUTH_REFRESH_SECONDS {result['auth_refresh_seconds']:g} (default)")
        print(f"  {path:<6}({how}): {detail_text(s)}; the revoke call took "
              f"{s['revoke_call_ms_p50']:.0f} ms (p50); other answers while polling {s['errors']}")
    for name, v in result["goals"].items():
        print(f"  {'HOLDS' if v['holds'] else 'SHORT':<7}{name}: {v['detail']}")
