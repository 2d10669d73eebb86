"""Phase `pool` of `make bench`: what the pool's choice costs.

A second upstream with a pool of 12 members (8 Code Assist seats with weights 1..8 in tier 0,
4 AI Studio keys in tier 1, all against the same simulator) is measured beside the stack's
single-member upstream: streamed answers over gRPC at concurrency 1, the two upstreams taking
turns in blocks from client processes of their own, as run_latency does for the layers.
Compared: time to first chunk (p50) and the upstream's CPU per request.

A third upstream runs the same pool with REDIS_URL (a redis-server started for the phase): the
pool choice reads the local mirror of the shared state, so it should cost what the pool without
Redis costs; the difference is what sharing adds per request.
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests import harness
from tests.support.servers import start_redis

SEATS = 8
KEYS = 4
BLOCK = 25


def _pool_file(base: Path) -> Path:
    creds = base / "pool-creds"
    lines = ["allow_inline_secrets = true"]
    for i in range(SEATS):
        harness.write_credential(creds / f"seat{i}.json", f"rt-bench-pool-{i}")
        lines += ["[[members]]", 'kind = "code-assist"', f'file = "{creds / f"seat{i}.json"}"', "priority = 0",
                  f"weight = {i + 1}"]
    for i in range(KEYS):
        lines += ["[[members]]", 'kind = "ai-studio"', f'key = "AIza-bench-{i}"', "priority = 1"]
    path = base / "pool.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def pool_choice(stack: Any, base: Path, total: int, worker_cls: Any, cpu_seconds: Any,
                      pct: Any) -> dict:
    pool_env = {"POOL_CONFIG": str(_pool_file(base)), "LOG_LEVEL": "WARNING"}
    up = harness.start_upstream(base / "logs", stack.sim.url, None, pool_env, name="upstream-pool")
    redis = start_redis()
    shared = harness.start_upstream(base / "logs", stack.sim.url, None, {**pool_env, "REDIS_URL": redis.url()},
                                    name="upstream-pool-redis")
    try:
        sides = {"single": stack.upstream, "pool": up, "pool_redis": shared}
        workers = {name: await worker_cls.start(SimpleNamespace(upstream=proc, sim=stack.sim), "b_upstream_grpc")
                   for name, proc in sides.items()}
        try:
            for w in workers.values():
                await w.run(min(20, total))  # warm: tokens, projects, connections
            results: dict[str, list] = {n: [] for n in sides}
            errors = dict.fromkeys(sides, 0)
            cpu = dict.fromkeys(sides, 0.0)
            for start in range(0, total, BLOCK):
                for name, proc in sides.items():
                    cpu0 = cpu_seconds(proc.popen.pid)
                    got, errs = await workers[name].run(min(BLOCK, total - start))
                    cpu[name] += cpu_seconds(proc.popen.pid) - cpu0
                    results[name] += got
                    errors[name] += errs
        finally:
            for w in workers.values():
                await w.close()
    finally:
        up.stop()
        shared.stop()
        redis.stop()
    out: dict[str, Any] = {"members": SEATS + KEYS, "requests": total, "when": time.time()}
    for name in sides:
        ttfc = [r[0] for r in results[name]]
        out[name] = {"ttfc_p50_ms": pct(ttfc, 0.5), "ttfc_p99_ms": pct(ttfc, 0.99), "errors": errors[name],
                     "upstream_cpu_ms_per_request": round(cpu[name] * 1000 / total, 3)}
    out["added_ttfc_p50_ms"] = out["pool"]["ttfc_p50_ms"] - out["single"]["ttfc_p50_ms"]
    out["redis_added_ttfc_p50_ms"] = out["pool_redis"]["ttfc_p50_ms"] - out["pool"]["ttfc_p50_ms"]
    return out


def print_pool(result: dict | None) -> None:
    if not result:
        return
    s, p, r = result["single"], result["pool"], result.get("pool_redis")
    print(f"\nPool choice ({result['members']} members, 2 tiers, weights) vs one member, upstream over gRPC, "
          f"concurrency 1, {result['requests']} streams each:")
    print(f"  one member: ttfc p50 {s['ttfc_p50_ms']:.2f} ms, p99 {s['ttfc_p99_ms']:.2f} ms, "
          f"upstream CPU {s['upstream_cpu_ms_per_request']:.3f} ms/req, errors {s['errors']}")
    print(f"  pool:       ttfc p50 {p['ttfc_p50_ms']:.2f} ms, p99 {p['ttfc_p99_ms']:.2f} ms, "
          f"upstream CPU {p['upstream_cpu_ms_per_request']:.3f} ms/req, errors {p['errors']}")
    if r is not None:
        print(f"  pool, REDIS_URL: ttfc p50 {r['ttfc_p50_ms']:.2f} ms, p99 {r['ttfc_p99_ms']:.2f} ms, "
              f"upstream CPU {r['upstream_cpu_ms_per_request']:.3f} ms/req, errors {r['errors']}")
    print(f"  added by the pool's choice: {result['added_ttfc_p50_ms']:+.3f} ms at p50")
    if r is not None:
        print(f"  added by sharing state through Redis: {result['redis_added_ttfc_p50_ms']:+.3f} ms at p50, "
              f"{r['upstream_cpu_ms_per_request'] - p['upstream_cpu_ms_per_request']:+.3f} ms CPU/req")
