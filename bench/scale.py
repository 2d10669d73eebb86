"""`make bench` row: non-streaming throughput through Envoy over 1 edge and over 3 edges.

The same processes serve both: one simulator, one upstream, three edges on one license
database; only Envoy's list of edges changes (deploy/envoy_config.py's edge endpoints). The
same load generator (this process, many keep-alive connections) measures each, in alternating
blocks (1, 3, 3, 1, ...) so that load from elsewhere on a shared machine weighs on both alike.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import orjson

from tests import harness
from tests.simulator.control import SimControl

MODEL = "gemini-2.5-flash"
EDGES = 3
# What replication must not cost: on 2 cores three edges cannot give 3× (see note()), but they
# must not serve less than one edge does, within the ±10% a shared machine's load moves a block.
GOAL_RATIO = 0.9


async def _rps(url: str, key: str, seconds: float, concurrency: int) -> tuple[int, int, float]:
    """(answered 200, other answers or errors, wall seconds) of `concurrency` workers for `seconds`."""
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "rps"}]}]})
    headers = {"x-goog-api-key": key, "Content-Type": "application/json"}
    per_client = 16  # small pools: httpx's pool cost grows with its connections
    limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    clients = [httpx.AsyncClient(limits=limits, timeout=30, trust_env=False)
               for _ in range(-(-concurrency // per_client))]
    ok = bad = 0
    stop = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal ok, bad
        client = clients[i // per_client]
        while time.perf_counter() < stop:
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                bad += 1
                continue
            if r.status_code == 200:
                ok += 1
            else:
                bad += 1

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        for c in clients:
            await c.aclose()
    return ok, bad, time.perf_counter() - t0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scale_row(base: Path, seconds: float = 8.0, concurrency: int = 64, rounds: int = 3) -> dict:
    """Throughput through Envoy over 1 edge and over EDGES edges; `rounds` blocks of `seconds` each."""
    logs = base / "logs"
    procs: list[harness.Proc] = []
    try:
        sim = harness.start_simulator(logs)
        procs.append(sim)
        SimControl(sim.url).config(chunk_delay=0.0, latency=0.0)
        harness.write_credential(base / "creds" / "bench.json", "rt-bench-scale")
        up = harness.start_upstream(logs, sim.url, base / "creds", {"LOG_LEVEL": "WARNING"})
        procs.append(up)
        env = {"LOG_LEVEL": "WARNING", "LICENSE_DB": str(base / "licenses.db")}
        edges = []
        for i in range(EDGES):
            edges.append(harness.start_edge(logs, up.addr, base / f"edge-{i}", env, name=f"edge-{i}"))
            procs.append(edges[-1])
        key = harness.create_key(edges[0], "--name", "bench-scale")
        envoys = {}
        for n in (1, EDGES):
            envoys[n] = harness.start_envoy(logs, [e.port for e in edges[:n]], up.port, name=f"envoy-{n}")
            procs.append(envoys[n])
        totals = {n: {"ok": 0, "errors": 0, "wall_s": 0.0, "cpu_s": {}} for n in envoys}
        for n, envoy in envoys.items():  # warm every connection and cache
            await _rps(f"{envoy.url}/gemini_cli/v1beta/models/{MODEL}:generateContent", key, 1.0, concurrency)
        order = [n for r in range(rounds) for n in ((1, EDGES) if r % 2 == 0 else (EDGES, 1))]
        for n in order:
            url = f"{envoys[n].url}/gemini_cli/v1beta/models/{MODEL}:generateContent"
            groups = {"edges": edges, "envoy": [envoys[n]], "upstream": [up], "simulator": [sim]}
            cpu0 = {g: sum(_cpu_seconds(p.popen.pid) for p in ps) for g, ps in groups.items()}
            me0 = sum(os.times()[:2])
            ok, bad, wall = await _rps(url, key, seconds, concurrency)
            t = totals[n]
            t["ok"] += ok
            t["errors"] += bad
            t["wall_s"] += wall
            for g, ps in groups.items():
                t["cpu_s"][g] = t["cpu_s"].get(g, 0.0) + sum(_cpu_seconds(p.popen.pid) for p in ps) - cpu0[g]
            t["cpu_s"]["load generator"] = t["cpu_s"].get("load generator", 0.0) + sum(os.times()[:2]) - me0
    finally:
        for p in reversed(procs):
            p.stop()
    rows = {n: {"edges": n, "requests": t["ok"], "errors": t["errors"], "rps": t["ok"] / t["wall_s"],
                "edge_cpu_ms_per_request": t["cpu_s"]["edges"] * 1000 / t["ok"] if t["ok"] else float("nan"),
                # Cores each part kept busy: where the machine's CPU went while this ran.
                "cores_used": {g: round(v / t["wall_s"], 2) for g, v in t["cpu_s"].items()}}
            for n, t in totals.items()}
    ratio = rows[EDGES]["rps"] / rows[1]["rps"] if rows[1]["rps"] else float("nan")
    return {"cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1), "concurrency": concurrency, "seconds_per_block": seconds, "rounds": rounds,
            "one_edge": rows[1], "many_edges": rows[EDGES], "ratio": ratio,
            "goal": f"{EDGES} edges >= {GOAL_RATIO:g}x of 1 edge", "holds": ratio >= GOAL_RATIO}


def note(cpus: int, one: dict, load: float) -> str:
    busy = sum(one["cores_used"].values())
    return (f"on {cpus} cores {EDGES} edges cannot give {EDGES}x: with one edge the stack got {busy:.1f} of the "
            f"{cpus} cores (load average {load:g}: other work shares them), the edge {one['cores_used']['edges']:.2f} "
            f"of them, and Envoy, the upstream, the simulator and the load generator share the same cores; each of "
            f"{EDGES} edges at a third of the load also spends more CPU per request (fewer requests per event-loop "
            f"turn). More edges pay off where each gets cores of its "
            f"own (nodes, as in deploy/k8s): throughput then grows with the edges, about linearly while the edges "
            f"are what is saturated, until the upstreams or Envoy are; then add upstream replicas (round_robin "
            f"spreads the edges' calls over them)")


def print_scale(row: dict | None) -> None:
    if not row:
        return
    one, many = row["one_edge"], row["many_edges"]
    print(f"\nNon-streaming through Envoy, 1 vs {many['edges']} edges (one upstream, concurrency "
          f"{row['concurrency']}, {row['rounds']} blocks of {row['seconds_per_block']:g} s each):")
    for r in (one, many):
        print(f"  {r['edges']} edge{'s' if r['edges'] > 1 else ' '}: {r['rps']:.0f} req/s, "
              f"{r['edge_cpu_ms_per_request']:.2f} edge CPU ms per request ({r['errors']} errors); cores used: "
              + ", ".join(f"{g} {v:.2f}" for g, v in r["cores_used"].items()))
    print(f"  ratio {row['ratio']:.2f}x; {note(row['cpus'], one, row.get('load_average', float('nan')))}")
    print(f"  {'HOLDS' if row['holds'] else 'SHORT':<7}{row['goal']} on {row['cpus']} cores "
          f"(no loss from replication): {row['ratio']:.2f}x")
