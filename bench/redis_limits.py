"""Phase `redis` of `make bench`: what Redis-backed limits (REDIS_URL) add to a request.

Two edges on one upstream and one license database, one with REDIS_URL (a redis-server on
loopback) and one without, serve the same key — one with every limit set (RPM, TPM, quota,
concurrency cap), so admission runs the whole Lua script and settlement the other — with
non-streaming generateContent calls straight to the edge at concurrency 1, the two edges taking
turns in blocks so load from elsewhere weighs on both alike. Compared: latency p50/p99 and the
edge's CPU per request (plus Redis's own CPU per request on the Redis side).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests import harness
from tests.support.servers import start_redis

BLOCK = 25
BODY = {"contents": [{"role": "user", "parts": [{"text": "bench [len=12]"}]}]}
LIMITS = ("--rpm", "100000000", "--tpm", "1000000000", "--quota", "1000000000000", "--max-concurrent", "1000")


def redis_limits(base: Path, total: int, model: str, cpu_seconds: Any, pct: Any) -> dict:
    logs = base / "logs"
    redis = start_redis()
    procs: list[harness.Proc] = []
    try:
        sim = harness.start_simulator(logs)
        procs.append(sim)
        harness.write_credential(base / "creds" / "bench.json", "rt-bench-redis")
        up = harness.start_upstream(logs, sim.url, base / "creds", {"LOG_LEVEL": "WARNING"})
        procs.append(up)
        common = {"LOG_LEVEL": "WARNING", "LEDGER_FLUSH_SECONDS": "0.1"}
        edges = {"without": harness.start_edge(logs, up.addr, base / "data", common, name="edge-local"),
                 "with": harness.start_edge(logs, up.addr, base / "data", {**common, "REDIS_URL": redis.url()},
                                            name="edge-redis")}
        procs += edges.values()
        key = harness.create_key(edges["with"], "--name", "bench-limited", *LIMITS)
        headers = {"x-goog-api-key": key}
        times: dict[str, list[float]] = {n: [] for n in edges}
        cpu = dict.fromkeys(edges, 0.0)
        errors = dict.fromkeys(edges, 0)
        redis_cpu = 0.0
        with httpx.Client(timeout=30, trust_env=False) as client:
            urls = {n: f"{p.url}/gemini_cli/v1beta/models/{model}:generateContent" for n, p in edges.items()}
            for name, url in urls.items():  # warm: key records, connections, scripts
                for _ in range(20):
                    client.post(url, json=BODY, headers=headers)
            for start in range(0, total, BLOCK):
                for name, url in urls.items():
                    n = min(BLOCK, total - start)
                    cpu0, r0 = cpu_seconds(edges[name].popen.pid), cpu_seconds(redis.popen.pid)
                    for _ in range(n):
                        t0 = time.perf_counter()
                        r = client.post(url, json=BODY, headers=headers)
                        times[name].append(time.perf_counter() - t0)
                        errors[name] += r.status_code != 200
                    cpu[name] += cpu_seconds(edges[name].popen.pid) - cpu0
                    if name == "with":
                        redis_cpu += cpu_seconds(redis.popen.pid) - r0
    finally:
        for p in reversed(procs):
            p.stop()
        redis.stop()
    out: dict[str, Any] = {"requests": total, "when": time.time()}
    for name in edges:
        out[name] = {"p50_ms": pct(times[name], 0.5), "p99_ms": pct(times[name], 0.99), "errors": errors[name],
                     "edge_cpu_ms_per_request": round(cpu[name] * 1000 / total, 3)}
    out["with"]["redis_cpu_ms_per_request"] = round(redis_cpu * 1000 / total, 3)
    out["added_p50_ms"] = out["with"]["p50_ms"] - out["without"]["p50_ms"]
    out["added_edge_cpu_ms"] = out["with"]["edge_cpu_ms_per_request"] - out["without"]["edge_cpu_ms_per_request"]
    return out


def print_redis(result: dict | None) -> None:
    if not result:
        return
    w, o = result["with"], result["without"]
    print(f"\nRedis-backed limits (REDIS_URL), one edge, non-streaming, concurrency 1, {result['requests']} requests "
          "each, a key with every limit set:")
    print(f"  without: p50 {o['p50_ms']:.2f} ms, p99 {o['p99_ms']:.2f} ms, edge CPU {o['edge_cpu_ms_per_request']:.3f} "
          f"ms/req, errors {o['errors']}")
    print(f"  with:    p50 {w['p50_ms']:.2f} ms, p99 {w['p99_ms']:.2f} ms, edge CPU {w['edge_cpu_ms_per_request']:.3f} "
          f"ms/req (+ Redis {w['redis_cpu_ms_per_request']:.3f}), errors {w['errors']}")
    print(f"  added by Redis-backed limits: {result['added_p50_ms']:+.3f} ms at p50, "
          f"{result['added_edge_cpu_ms']:+.3f} ms edge CPU per request")
