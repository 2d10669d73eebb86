"""3 edges and 2 upstreams behind one Envoy, against the simulator (issue #14, "Done when").

The replicas share one license database and one Redis (REDIS_URL to every edge and upstream),
as in deploy/k8s. What each test proves:
  - Envoy spreads the public API over every edge; each edge spreads its calls over every upstream.
  - A key's RPM, TPM and quota hold for the key, not per replica: requests sent to each edge in
    turn are served at most up to the limit (plus one request's overrun for tokens).
  - A revoke is refused by every edge within 1 s.
  - An upstream killed mid-run loses no ledger row, and the other one serves what comes after.
  - A credential is refreshed once, however many upstreams need it.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import harness
from tests.support.cluster import Cluster, kill, start_cluster
from tests.support.servers import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODEL = "gemini-2.5-flash"
# A Redis database of its own: other modules' `redis_url` flushes happen between modules, never
# while this module's cluster is up.
REDIS_DB = 5


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def cluster(request: pytest.FixtureRequest, simulator: harness.Proc, redis_server: RedisServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The replicas on one SQLite file (one machine) or on PostgreSQL (as in deploy/k8s)."""
    license_db = None
    if request.param == "postgresql":
        license_db = request.getfixturevalue("postgres_server").create_database()
    redis_server.flush()
    c = start_cluster(simulator, tmp_path_factory.mktemp(f"cluster-{request.param}"), edges=3, upstreams=2,
                      license_db=license_db, redis_url=redis_server.url(REDIS_DB))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60, trust_env=False) as client:
        yield client


def generate(http: httpx.Client, base: str, key: str, text: str = "hi") -> httpx.Response:
    return http.post(f"{base}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": key},
                     json={"contents": [{"role": "user", "parts": [{"text": text}]}]})


def counter(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples (those matching `labels`) in an exposition."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{name}_total" and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def generations(cluster: Cluster, upstream: harness.Proc) -> float:
    """Generate calls an upstream served."""
    return counter(cluster.metrics_text(upstream), "gateway_upstream_requests", gen_ai_operation_name="generate",
                   outcome="ok")


# --- spreading -----------------------------------------------------------------------------

def test_envoy_spreads_requests_over_every_edge(cluster: Cluster):
    """Concurrent requests (LEAST_REQUEST sends each to an edge with fewer in flight): every edge
    serves some, as its own metrics show."""
    from concurrent.futures import ThreadPoolExecutor

    key = cluster.key()
    before = [counter(cluster.metrics_text(e), "gateway_requests") for e in cluster.edges]

    def one(_: int) -> int:
        with httpx.Client(timeout=60, trust_env=False) as client:
            return generate(client, cluster.public_base, key, "[len=4] [chunks=2] [delay=30] go").status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(one, range(36)))
    assert statuses == [200] * 36
    served = [counter(cluster.metrics_text(e), "gateway_requests") - b for e, b in zip(cluster.edges, before)]
    assert sum(served) == 36
    assert all(n > 0 for n in served), served


def test_each_edge_spreads_calls_over_every_upstream(cluster: Cluster, http: httpx.Client):
    key = cluster.key()
    for i, _ in enumerate(cluster.edges):
        before = [generations(cluster, u) for u in cluster.upstreams]
        for _ in range(6):
            r = generate(http, cluster.edge_base(i), key)
            assert r.status_code == 200, r.text
        served = [generations(cluster, u) - b for u, b in zip(cluster.upstreams, before)]
        # round_robin: each upstream takes every other call of this edge.
        assert served == [3, 3], (i, served)


# --- limits hold for the key, whichever replica serves it ---------------------------------------

def round_robin(cluster: Cluster, http: httpx.Client, key: str, rounds: int, text: str = "hi") -> list[httpx.Response]:
    """`rounds` requests to each edge in turn (edge 0, 1, 2, 0, 1, 2, ...), directly."""
    return [generate(http, cluster.edge_base(i), key, text) for _ in range(rounds) for i in range(len(cluster.edges))]


def tokens_of(r: httpx.Response) -> int:
    return r.json()["usageMetadata"]["totalTokenCount"]


def test_requests_per_minute_hold_across_edges(cluster: Cluster, http: httpx.Client):
    key = cluster.key("--rpm", "2")
    answers = round_robin(cluster, http, key, rounds=2)
    statuses = [r.status_code for r in answers]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) == 2, statuses


def test_tokens_per_minute_hold_across_edges(cluster: Cluster, http: httpx.Client):
    tpm = 40
    key = cluster.key("--tpm", str(tpm))
    answers = round_robin(cluster, http, key, rounds=3, text="[len=12] go")
    served = [r for r in answers if r.status_code == 200]
    assert served and all(r.status_code in (200, 429) for r in answers), [r.status_code for r in answers]
    overrun = max(tokens_of(r) for r in served)
    assert sum(tokens_of(r) for r in served) <= tpm + overrun, [r.status_code for r in answers]


def test_token_quota_holds_across_edges(cluster: Cluster, http: httpx.Client):
    quota = 40
    key = cluster.key("--quota", str(quota))
    answers = round_robin(cluster, http, key, rounds=3, text="[len=12] go")
    served = [r for r in answers if r.status_code == 200]
    assert served and all(r.status_code in (200, 403, 429) for r in answers), [r.status_code for r in answers]
    overrun = max(tokens_of(r) for r in served)
    assert sum(tokens_of(r) for r in served) <= quota + overrun, [r.status_code for r in answers]


# --- revocation ------------------------------------------------------------------------------

def assert_revoke_reaches_every_edge(cluster: Cluster, http: httpx.Client, guard_s: float) -> None:
    """Every edge, each holding the key in its cache, refuses it once it is revoked. `guard_s` is
    a hang guard, kept below what the cache alone would take (AUTH_CACHE_TTL), so a refusal that
    only the cache's expiry brought fails; no elapsed time is asserted."""
    key = cluster.key()
    for i in range(len(cluster.edges)):
        assert generate(http, cluster.edge_base(i), key).status_code == 200  # now cached there
    out = cluster.cli("revoke", key)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + guard_s
    for i in range(len(cluster.edges)):
        while (status := generate(http, cluster.edge_base(i), key).status_code) == 200:
            assert time.monotonic() < deadline, f"hung: edge {i} still served the revoked key"
            time.sleep(0.02)
        assert status == 401, (i, status)
    assert generate(http, cluster.public_base, key).status_code == 401


def test_revoke_is_refused_by_every_edge(cluster: Cluster, http: httpx.Client):
    """The edges poll the shared store's change counter (AUTH_REFRESH_SECONDS, 0.25 s) and hear
    Redis; either reaches them long before their cache (AUTH_CACHE_TTL, 30 s) would expire."""
    assert_revoke_reaches_every_edge(cluster, http, guard_s=15)


def test_revoke_reaches_every_edge_through_redis(simulator: harness.Proc, redis_server: RedisServer,
                                                 tmp_path: Path, http: httpx.Client):
    """Edges that poll the store only hourly and cache a key for an hour: within the 30 s hang
    guard, the revoke can only have come through Redis."""
    c = start_cluster(simulator, tmp_path, edges=3, upstreams=1, redis_url=redis_server.url(REDIS_DB + 1),
                      edge_env={"AUTH_REFRESH_SECONDS": "3600", "AUTH_CACHE_TTL": "3600"})
    try:
        assert_revoke_reaches_every_edge(c, http, guard_s=30)
    finally:
        c.stop()


# --- an upstream dies ------------------------------------------------------------------------

def test_killing_an_upstream_mid_run_loses_no_ledger_row(simulator: harness.Proc, redis_server: RedisServer,
                                                         postgres_server, tmp_path: Path):
    """Load through Envoy; one upstream is SIGKILLed while calls run on it. Only calls in flight
    on it may fail; every answer has its ledger row (in PostgreSQL); the other upstream serves
    the rest."""
    c = start_cluster(simulator, tmp_path, edges=3, upstreams=2, license_db=postgres_server.create_database(),
                      redis_url=redis_server.url(REDIS_DB + 2))
    try:
        key = c.key()
        key_id = c.key_id(key)
        results: list[tuple[float, int, str]] = []  # (started at, status, request id)
        stop = threading.Event()
        killed_at: list[float] = []
        # Each answer takes a while, so calls are in flight on both upstreams at the kill.
        body = {"contents": [{"role": "user", "parts": [{"text": "[len=6] [chunks=3] [delay=40] go"}]}]}
        url = f"{c.public_base}/v1beta/models/{MODEL}:generateContent"

        def worker() -> None:
            with httpx.Client(timeout=60, trust_env=False) as client:
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        r = client.post(url, headers={"x-goog-api-key": key}, json=body)
                    except httpx.HTTPError as exc:
                        results.append((t0, 0, repr(exc)))
                        continue
                    results.append((t0, r.status_code, r.headers.get("x-request-id", "")))

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            harness.wait_until(lambda: len(results) >= 20, c.envoy, timeout=60, what="serving load")
            victim = c.upstreams[0]
            assert generations(c, victim) > 0
            kill(victim)
            killed_at.append(time.monotonic())
            count_at_kill = len(results)
            harness.wait_until(lambda: len(results) >= count_at_kill + 40, c.envoy, timeout=90,
                               what="serving after the kill")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        after = [r for r in results if r[0] > killed_at[0]]
        assert after and all(status == 200 for _, status, _ in after), [s for _, s, _ in after if s != 200]
        # Calls in flight on the killed upstream fail (never re-sent: they may have started at
        # the backend); nothing else does.
        assert all(status in (200, 503, 502) for _, status, _ in results)
        assert all(rid for _, _, rid in results), "every answer came through Envoy with a request id"
        rows = c.ledger(key_id, expect=len(results))
        by_id = {row["request_id"]: row for row in rows}
        missing = [(status, rid) for _, status, rid in results if rid not in by_id]
        assert not missing, missing
        assert all(by_id[rid]["status"] == status for _, status, rid in results)
        assert len(rows) == len(results)
        # The survivor served after the kill.
        assert generations(c, c.upstreams[1]) > 0
        # Readiness follows the upstreams: ready while one serves, not once none does (the
        # Kubernetes readinessProbe); liveness does not.
        with httpx.Client(timeout=10, trust_env=False) as client:
            for edge in c.edges:
                assert client.get(f"{edge.url}/readyz").json()["upstream"] is True
            kill(c.upstreams[1])
            for edge in c.edges:
                harness.wait_until(lambda: client.get(f"{edge.url}/readyz").status_code == 503, edge, timeout=30,
                                   what="unready without upstreams")
                assert client.get(f"{edge.url}/healthz").status_code == 200
    finally:
        c.stop()


# --- refresh -------------------------------------------------------------------------------------

def test_one_refresh_per_credential_however_many_upstreams_need_it(cluster: Cluster, http: httpx.Client):
    """Both upstreams start from the same expired credential (each its own copy, as pods seeded
    from one Secret) and both serve with it: the token endpoint sees one refresh."""
    from tests.simulator.control import SimControl

    key = cluster.key()
    for i in range(len(cluster.edges)):
        for _ in range(2):  # round_robin: both upstreams serve
            assert generate(http, cluster.edge_base(i), key).status_code == 200
    for u in cluster.upstreams:
        assert generations(cluster, u) > 0, u.name
    with SimControl(cluster.simulator.url) as sim:
        refreshes = sim.requests(op="refresh", account=cluster.refresh_tokens[0])
    assert len(refreshes) == 1, len(refreshes)
