"""`make bench`: latency, throughput and memory of the stack against the simulator.

Layers measured for a streamed answer of 21 SSE events (time to first chunk and total time,
each gateway process's CPU per stream and per event):
  (a) direct to the simulator, (b) upstream over gRPC, (c) edge, (d) Envoy → edge → upstream;
phase `long` does the same for an answer of 300 events. The goals of issue #15 are printed
as HOLDS or SHORT at the end (bench/report.py).
Then non-streaming throughput through the full stack, 1,000 concurrent streams held for a
minute, one 20 MiB image through the OpenAI route (inline, and fetched from a URL), and
nine 20 MiB image URLs in one request (refused early by MEDIA_MAX_TOTAL_BYTES), throughput
through Envoy over 1 vs 3 edges (bench/scale.py), and what FastAPI's routing and the OpenAPI
document cost in the edge (bench/routing.py); phase `floors` measures the bare parts (gRPC,
uvicorn, Envoy, aiohttp) alone, the floor each goal is held against, holding `--streams` streams
too (bench/floors.py, bench/held_floors.py); phase `revoke`
times how soon every edge refuses a revoked key, with and without Redis (bench/revoke.py). Prints a table and writes JSON to
bench/results/ (latest.json after a complete run). Everything runs on loopback; the
simulator's own latency is zero.

Measuring on a shared 2-core machine: at concurrency 1 each layer has its own client process
(bench/worker.py) and the layers take turns in blocks, so load from elsewhere weighs on all
layers alike; the table also gives the gateway processes' CPU per request, which moves less
than latency does. `--phases` runs a subset (e.g. `--phases latency --n50 0 --n500 0`).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import grpc
import httpx
import orjson

from bench.machine import STEAL_WARN_PCT, StealMeter, describe, machine
from bench.media import EDGE_ENV as MEDIA_EDGE_ENV, media_rows
from bench.pool_choice import pool_choice, print_pool
from bench.redis_limits import print_redis, redis_limits
from bench.revoke import print_revoke, revoke_row
from bench.floors import floors_row
from bench.report import LAYERS, floor_report, floor_sums, print_bodies, print_floors, print_table, targets
from bench.routing import print_routing, routing_rows
from bench.scale import print_scale, scale_row
from bench.worker import LineWorker, stream_http
from deploy.envoy_config import DEFAULT_MAX_BODY_BYTES
from tests import harness
from tests.simulator.control import SimControl

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
MODEL = "gemini-2.5-flash"
BENCH_BODY_BYTES = 64 << 20  # the edge's MAX_BODY_BYTES in the bench stacks
EVENTS = 21  # a realistic short answer: about 20 words of text per event is what backends send
LONG_EVENTS = 300
SPACED_MS = 2.0


def stream_body(events: int = EVENTS, delay_ms: float = 0) -> dict:
    """A Gemini request the simulator answers with `events` SSE events (two words each), sent
    back to back (they reach the upstream together, as from a fast backend) or `delay_ms` apart
    (each alone, as tokens come from a real model)."""
    pace = f" [delay={delay_ms:g}]" if delay_ms else ""
    return {"contents": [{"role": "user", "parts": [{"text": f"bench [len={2 * events}] [chunks={events}]{pace}"}]}]}


STREAM_BODY = stream_body()


# --- process metrics ------------------------------------------------------------------------

def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Samples RSS of some processes in the background; VmHWM would include earlier phases."""

    def __init__(self, procs: dict[str, harness.Proc], interval: float = 0.2):
        self.procs, self.peak = procs, {n: 0.0 for n in procs}
        self.interval = interval
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            for n, p in self.procs.items():
                self.peak[n] = max(self.peak[n], rss_mib(p.popen.pid))
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> "PeakRss":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task
        self._task.cancel()
        for n, p in self.procs.items():
            self.peak[n] = max(self.peak[n], rss_mib(p.popen.pid))


# --- the stack ------------------------------------------------------------------------------

@dataclass
class Stack:
    sim: harness.Proc
    upstream: harness.Proc
    edge: harness.Proc
    envoy: harness.Proc
    key: str
    access_token: str
    project: str
    coalesce: bool = True  # what the edge (STREAM_COALESCE) and layer b's client ask for

    def procs(self) -> dict[str, harness.Proc]:
        return {"simulator": self.sim, "upstream": self.upstream, "edge": self.edge, "envoy": self.envoy}

    def stop(self) -> None:
        for p in (self.envoy, self.edge, self.upstream, self.sim):
            p.stop()


def start_stack(base: Path, edge_env: dict[str, str] | None = None) -> Stack:
    logs = base / "logs"
    sim = harness.start_simulator(logs)
    SimControl(sim.url).config(chunk_delay=0.0, latency=0.0)
    harness.write_credential(base / "creds" / "bench.json", "rt-bench")
    up = harness.start_upstream(logs, sim.url, base / "creds", {"LOG_LEVEL": "WARNING"})
    edge = harness.start_edge(logs, up.addr, base / "data",
                              {"LOG_LEVEL": "WARNING", "MAX_BODY_BYTES": str(BENCH_BODY_BYTES), **(edge_env or {})})
    envoy = harness.start_envoy(logs, edge.port, up.port)
    key = harness.create_key(edge, "--name", "bench")
    tok = httpx.post(f"{sim.url}/token", data={"grant_type": "refresh_token", "refresh_token": "rt-bench"}).json()
    load = httpx.post(f"{sim.url}/v1internal:loadCodeAssist", json={"metadata": {}},
                      headers={"Authorization": f"Bearer {tok['access_token']}"}).json()
    return Stack(sim, up, edge, envoy, key, tok["access_token"], load["cloudaicompanionProject"],
                 (edge_env or {}).get("STREAM_COALESCE", "true") != "false")


# --- one streamed request per layer, returning (ttfc, total) seconds -------------------------

async def stream_grpc(stub, body: bytes, coalesce: bool = True) -> tuple[float, float]:
    from gemini_cli.upstream.v1 import upstream_pb2
    from google.api import httpbody_pb2

    t0 = time.perf_counter()
    ttfc = None
    call = stub.Generate(upstream_pb2.GenerateRequest(
        model=MODEL, stream=True, coalesce=coalesce, body=httpbody_pb2.HttpBody(content_type="application/json", data=body)))
    async for _ in call:
        if ttfc is None:
            ttfc = time.perf_counter() - t0
    return ttfc or float("nan"), time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


class Clients:
    """Several small httpx clients instead of one big one: httpx's pool does work in proportion
    to its connections on every request start and end (quadratic overall), which at a few
    hundred connections made this load generator, not the gateway, the bottleneck."""

    PER_CLIENT = 16

    def __init__(self, connections: int, **kw) -> None:
        n = max(1, -(-connections // self.PER_CLIENT))
        limits = httpx.Limits(max_connections=self.PER_CLIENT, max_keepalive_connections=self.PER_CLIENT)
        self.clients = [httpx.AsyncClient(limits=limits, trust_env=False, **kw) for _ in range(n)]

    def for_worker(self, i: int) -> httpx.AsyncClient:
        """The client of the i-th of `connections` concurrent workers (at most PER_CLIENT each)."""
        return self.clients[(i // self.PER_CLIENT) % len(self.clients)]

    async def __aenter__(self) -> "Clients":
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self.clients:
            await c.aclose()


BLOCK = 25  # requests per layer in a row at concurrency 1


def layer_calls(stack: Stack, client: httpx.AsyncClient, stub,
                events: int = EVENTS) -> dict[str, Callable[[], Awaitable[tuple[float, float]]]]:
    """One streamed request through each layer, as a callable returning (ttfc, total) seconds."""
    request = stream_body(events)
    body = orjson.dumps(request)
    envelope = orjson.dumps({"model": MODEL, "project": stack.project, "request": request})
    sim_url = f"{stack.sim.url}/v1internal:streamGenerateContent?alt=sse"
    sim_hdrs = {"Authorization": f"Bearer {stack.access_token}", "Content-Type": "application/json"}
    path = f"/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    hdrs = {"x-goog-api-key": stack.key, "Content-Type": "application/json"}
    return {
        "a_simulator": lambda: stream_http(client, sim_url, sim_hdrs, envelope),
        "b_upstream_grpc": lambda: stream_grpc(stub, body, stack.coalesce),
        "c_edge": lambda: stream_http(client, f"http://127.0.0.1:{stack.edge.port}{path}", hdrs, body),
        "d_envoy_full": lambda: stream_http(client, f"http://127.0.0.1:{stack.envoy.port}{path}", hdrs, body),
    }


def layer_result(layer: str, concurrency: int, total: int, errors: int, wall: float,
                 results: list[tuple[float, float]], cpu_ms: dict[str, float], events: int,
                 delay_ms: float = 0) -> dict:
    ttfc = [r[0] for r in results]
    tot = [r[1] for r in results]
    return {"layer": layer, "events": events, "delay_ms": delay_ms, "concurrency": concurrency, "requests": total, "errors": errors, "wall_s": wall,
            "ttfc_p50_ms": pct(ttfc, 0.5), "ttfc_p99_ms": pct(ttfc, 0.99),
            "total_p50_ms": pct(tot, 0.5), "total_p99_ms": pct(tot, 0.99), "cpu_ms_per_request": cpu_ms}


class LayerWorker(LineWorker):
    """A `bench.worker` process measuring one layer (see there for why)."""

    @classmethod
    async def start(cls, stack: Stack, layer: str, events: int = EVENTS, delay_ms: float = 0) -> "LayerWorker":
        request = stream_body(events, delay_ms)
        body = orjson.dumps(request)
        path = f"/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
        spec = {"layer": layer, "model": MODEL, "grpc_addr": stack.upstream.addr,
                "metadata": list(harness.internal_metadata()), "url": "", "headers": {},
                "body": body.decode("latin-1"), "coalesce": getattr(stack, "coalesce", True)}
        if layer == "a_simulator":
            spec.update(url=f"{stack.sim.url}/v1internal:streamGenerateContent?alt=sse",
                        headers={"Authorization": f"Bearer {stack.access_token}", "Content-Type": "application/json"},
                        body=orjson.dumps({"model": MODEL, "project": stack.project, "request": request}).decode("latin-1"))
        elif layer in ("c_edge", "d_envoy_full"):
            port = stack.edge.port if layer == "c_edge" else stack.envoy.port
            spec.update(url=f"http://127.0.0.1:{port}{path}",
                        headers={"x-goog-api-key": stack.key, "Content-Type": "application/json"})
        return await cls.spawn(spec)


async def run_latency(stack: Stack, concurrency: int, total: int, events: int = EVENTS,
                      delay_ms: float = 0) -> list[dict]:
    """Every layer at one concurrency.

    At concurrency 1 each layer is measured from a client process of its own (bench.worker),
    and the layers take turns in blocks of BLOCK requests, so that a change in the machine's
    load (it is shared) weighs on all of them alike while each block still runs warm. At higher
    concurrency each layer runs alone, from this process."""
    procs = {"upstream": stack.upstream, "edge": stack.edge, "envoy": stack.envoy}
    if concurrency == 1:
        workers = {layer: await LayerWorker.start(stack, layer, events, delay_ms) for layer in LAYERS}
        try:
            for w in workers.values():
                await w.run(min(20, total))  # warm connections and caches
            results: dict[str, list] = {layer: [] for layer in LAYERS}
            errors = dict.fromkeys(LAYERS, 0)
            cpu = {layer: dict.fromkeys(procs, 0.0) for layer in LAYERS}
            wall = dict.fromkeys(LAYERS, 0.0)
            for start in range(0, total, BLOCK):
                for layer in LAYERS:
                    cpu0 = {n: cpu_seconds(p.popen.pid) for n, p in procs.items()}
                    t0 = time.perf_counter()
                    got, errs = await workers[layer].run(min(BLOCK, total - start))
                    wall[layer] += time.perf_counter() - t0
                    results[layer] += got
                    errors[layer] += errs
                    for n, p in procs.items():
                        cpu[layer][n] += cpu_seconds(p.popen.pid) - cpu0[n]
        finally:
            for w in workers.values():
                await w.close()
        return [layer_result(layer, 1, total, errors[layer], wall[layer], results[layer],
                             {n: round(v * 1000 / total, 3) for n, v in cpu[layer].items()}, events, delay_ms)
                for layer in LAYERS]

    async with Clients(concurrency, timeout=60) as clients, \
            grpc.aio.insecure_channel(stack.upstream.addr) as channel:
        stub = harness.AuthedStub(channel)
        calls = [layer_calls(stack, c, stub, events) for c in clients.clients]
        for per_client in calls:
            for one in per_client.values():
                for _ in range(3):  # warm connections and caches
                    await one()
        out = []
        for layer in LAYERS:
            results: list[tuple[float, float]] = []
            errs = 0

            async def worker(i: int, count: int) -> None:
                nonlocal errs
                one = calls[(i // Clients.PER_CLIENT) % len(calls)][layer]
                for _ in range(count):
                    try:
                        results.append(await one())
                    except Exception:
                        errs += 1

            shares = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
            cpu0 = {n: cpu_seconds(p.popen.pid) for n, p in procs.items()}
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(i, k) for i, k in enumerate(shares) if k))
            elapsed = time.perf_counter() - t0
            cpu_ms = {n: round((cpu_seconds(p.popen.pid) - cpu0[n]) * 1000 / total, 3) for n, p in procs.items()}
            out.append(layer_result(layer, concurrency, total, errs, elapsed, results, cpu_ms, events))
        return out


async def throughput(stack: Stack, seconds: float, concurrency: int) -> dict:
    url = f"{stack.envoy.url}/gemini_cli/v1beta/models/{MODEL}:generateContent"
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "rps"}]}]})
    hdrs = {"x-goog-api-key": stack.key, "Content-Type": "application/json"}
    done = errors = 0
    procs = {n: p for n, p in stack.procs().items() if n != "simulator"}
    cpu0 = {n: cpu_seconds(p.popen.pid) for n, p in procs.items()}
    async with Clients(concurrency, timeout=30) as clients:
        stop = time.perf_counter() + seconds

        async def worker(i: int) -> None:
            nonlocal done, errors
            client = clients.for_worker(i)
            while time.perf_counter() < stop:
                r = await client.post(url, content=body, headers=hdrs)
                if r.status_code == 200:
                    done += 1
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall = time.perf_counter() - t0
    spent = {n: cpu_seconds(p.popen.pid) - cpu0[n] for n, p in procs.items()}
    cpu = sum(spent.values())
    return {"concurrency": concurrency, "requests": done, "errors": errors, "rps": done / wall,
            "gateway_cpu_s": cpu, "requests_per_cpu_s": done / cpu if cpu else float("nan"),
            "cpu_ms_per_request": {n: round(v * 1000 / max(done, 1), 4) for n, v in spent.items()}}


async def many_streams(stack: Stack, n: int, hold_s: int, request_kib: int = 0) -> dict:
    """n streams open at once, each one chunk per second for hold_s seconds; with request_kib,
    each request carries that much earlier conversation (the Gemini CLI sends its whole
    history, often 100 KiB and more: what a process keeps of it, it keeps per open stream)."""
    words = hold_s
    history = ([{"role": "user", "parts": [{"text": "earlier turn " * (request_kib * 1024 // 13)}]},
                {"role": "model", "parts": [{"text": "ok"}]}] if request_kib else [])
    body = orjson.dumps({"contents": history + [{"role": "user", "parts": [
        {"text": f"hold [len={words}] [chunks={words}] [delay=1000]"}]}]})
    url = f"{stack.envoy.url}/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    hdrs = {"x-goog-api-key": stack.key, "Content-Type": "application/json"}
    expected = " ".join(f"w{i}" for i in range(1, words + 1))
    intact = 0
    failures: dict[str, int] = {}
    # Idle: after a few answers of each kind (imports, pools and caches warm), none open.
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        for _ in range(5):
            await stream_http(client, url, hdrs, orjson.dumps(STREAM_BODY))
            await client.post(url.replace(":streamGenerateContent?alt=sse", ":generateContent"),
                              content=orjson.dumps(STREAM_BODY), headers=hdrs)
    await asyncio.sleep(1)
    idle = {name: rss_mib(p.popen.pid) for name, p in stack.procs().items()}
    async with Clients(n, timeout=httpx.Timeout(hold_s * 3, connect=30)) as clients, \
            PeakRss(stack.procs()) as peak:
        async def one(i: int) -> None:
            nonlocal intact
            try:
                text, finish = "", None
                async with clients.for_worker(i).stream("POST", url, content=body, headers=hdrs) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            chunk = orjson.loads(line[6:])
                            cand = chunk["candidates"][0]
                            text += "".join(p.get("text", "") for p in cand["content"]["parts"])
                            finish = cand.get("finishReason", finish)
                if text == expected and finish == "STOP":
                    intact += 1
                else:
                    failures["mangled"] = failures.get("mangled", 0) + 1
            except Exception as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1

        async def halfway() -> dict[str, float]:
            # Peak vs steady: a peak well above this is a transient of the opening burst, not
            # what each held stream keeps.
            await asyncio.sleep(hold_s / 2)
            return {name: rss_mib(p.popen.pid) for name, p in stack.procs().items()}

        mid = asyncio.create_task(halfway())
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
        if not mid.done():
            mid.cancel()
    return {"streams": n, "hold_s": hold_s, "intact": intact, "failures": failures, "wall_s": wall,
            "idle_rss_mib": idle, "peak_rss_mib": peak.peak, "request_kib": request_kib,
            "hold_rss_mib": mid.result() if mid.done() and not mid.cancelled() else None}


async def big_image(stack: Stack, mib: int) -> dict:
    raw = b"\x89PNG\r\n\x1a\n" + os.urandom(mib << 20)
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(raw).decode()}}]}]})
    url = f"{stack.envoy.url}/gemini_cli/v1/chat/completions"
    # A short request: sample often, or the peak falls between two samples.
    async with httpx.AsyncClient(timeout=120, trust_env=False) as client, PeakRss(
            {"envoy": stack.envoy, "edge": stack.edge, "upstream": stack.upstream}, interval=0.005) as peak:
        before = {n: rss_mib(p.popen.pid) for n, p in peak.procs.items()}
        t0 = time.perf_counter()
        r = await client.post(url, content=body, headers={"Authorization": f"Bearer {stack.key}",
                                                          "Content-Type": "application/json"})
        took = time.perf_counter() - t0
    ok = r.status_code == 200 and f"{len(raw)} bytes" in r.json()["choices"][0]["message"]["content"]
    return {"image_mib": mib, "request_mib": len(body) / (1 << 20), "status": r.status_code, "intact": ok,
            "seconds": took, "rss_before_mib": before, "peak_rss_mib": peak.peak,
            "stack_growth_mib": sum(peak.peak[n] - before[n] for n in before)}


def _hwm_reset(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM restarts from the current RSS


def _tiny_chat(n: int) -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "x"} for i in range(n)]})


async def tiny_messages(stack: Stack, limit: int) -> dict:
    """The largest body of tiny messages the edge accepts (the shape that costs most once
    parsed): each gateway process's peak growth (VmHWM, reset first) over its RSS before."""
    small, large = len(_tiny_chat(1000)), len(_tiny_chat(3000))
    n = int(1000 + (limit - small) / ((large - small) / 2000)) // 2 * 2 + 2
    body = _tiny_chat(n)
    while len(body) > limit:
        n -= 2
        body = _tiny_chat(n)
    procs = {"upstream": stack.upstream, "edge": stack.edge, "envoy": stack.envoy}
    before = {}
    for name, p in procs.items():
        _hwm_reset(p.popen.pid)
        before[name] = rss_mib(p.popen.pid)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, trust_env=False) as client:
        r = await client.post(f"{stack.envoy.url}/gemini_cli/v1/chat/completions", content=body,
                              headers={"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"})
    took = time.perf_counter() - t0
    growth = {name: rss_mib(p.popen.pid, "VmHWM") - before[name] for name, p in procs.items()}
    return {"messages": n, "body_mib": len(body) / (1 << 20), "status": r.status_code, "seconds": took,
            "growth_mib": growth, "stack_growth_mib": sum(growth.values())}


def _fan_out(depth: int) -> dict:
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"},
                                                       "b": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(depth)}
    defs[f"d{depth}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}


async def worst_schema(stack: Stack, repeat: int = 20) -> dict:
    """Edge CPU per request for the deepest $ref fan-out the gateway still accepts, and for the
    first one it refuses (schema_too_complex)."""
    url = f"{stack.envoy.url}/gemini_cli/v1/chat/completions"
    headers = {"Authorization": f"Bearer {stack.key}", "Content-Type": "application/json"}

    def body(depth: int) -> bytes:
        return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [
            {"type": "function", "function": {"name": "f", "parameters": _fan_out(depth)}}]})

    out: dict = {}
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        depth = 1
        while (await client.post(url, content=body(depth + 1), headers=headers)).status_code == 200:
            depth += 1
        for label, d in (("accepted", depth), ("refused", depth + 1)):
            raw = body(d)
            cpu0 = cpu_seconds(stack.edge.popen.pid)
            statuses = set()
            for _ in range(repeat):
                statuses.add((await client.post(url, content=raw, headers=headers)).status_code)
            cpu = (cpu_seconds(stack.edge.popen.pid) - cpu0) / repeat
            out[label] = {"depth": d, "schema_bytes": len(raw), "statuses": sorted(statuses),
                          "edge_cpu_ms": cpu * 1000}
    return out


PHASES = ("latency", "long", "spaced", "uncoalesced", "rps", "pool", "image", "media", "bodies", "streams", "redis",
          "scale", "routing", "floors", "revoke")


async def main(args: argparse.Namespace) -> int:
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        print(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    steal = StealMeter()
    plan = [(1, args.n1), (50, args.n50), (500, args.n500)]
    latency: list[dict] = []
    rps = streams = image = media = pool = routing = None
    if "routing" in phases:
        routing = await routing_rows()
        print(f"  routing: openapi.json built in {routing['openapi_first_build_ms']:.0f} ms", flush=True)
    if {"latency", "long", "spaced", "rps", "pool"} & set(phases):
        stack = start_stack(base / "s1")
        try:
            if "latency" in phases:
                steal.start()
                for conc, total in plan:
                    if total <= 0:
                        continue
                    for r in await run_latency(stack, conc, total, args.events):
                        latency.append(r)
                        print(f"  {r['layer']} c={conc}: ttfc p50 {r['ttfc_p50_ms']:.2f} ms, errors {r['errors']}",
                              flush=True)
                steal.stop("latency")
            if "long" in phases:
                # One long answer: what each further event costs, per process.
                for conc, total in ((1, args.n_long), (50, args.n_long * 5)):
                    if total <= 0:
                        continue
                    for r in await run_latency(stack, conc, total, args.long_events):
                        latency.append(r)
                        print(f"  {r['layer']} c={conc} {args.long_events} events: total p50 "
                              f"{r['total_p50_ms']:.2f} ms, errors {r['errors']}", flush=True)
            if "spaced" in phases and args.n_spaced > 0:
                # The same answer with its events 2 ms apart: each crosses the stack alone, so
                # this is what an event costs when nothing can be coalesced.
                for r in await run_latency(stack, 1, args.n_spaced, args.events, SPACED_MS):
                    latency.append(r)
                    print(f"  {r['layer']} c=1 {args.events} events {SPACED_MS:g} ms apart: "
                          f"ttfc p50 {r['ttfc_p50_ms']:.2f} ms, errors {r['errors']}", flush=True)
            if "rps" in phases:
                rps = await throughput(stack, args.rps_seconds, 64)
                print(f"  throughput: {rps['rps']:.0f} req/s", flush=True)
            if "pool" in phases:
                pool = await pool_choice(stack, base / "s1", max(args.n1, 50), LayerWorker, cpu_seconds, pct)
                print(f"  pool choice: {pool['added_ttfc_p50_ms']:+.3f} ms ttfc p50", flush=True)
        finally:
            stack.stop()
    floors = None
    if "floors" in phases:
        # The bare parts on this machine, in this run: what the goals can be held against.
        t0 = time.perf_counter()
        steal.start()
        floors = await floors_row(base / "s8", MODEL, stream_body(args.events), cpu_seconds, pct, rss_mib,
                                  paced=(rps["rps"], rps["concurrency"]) if rps and rps.get("rps") else None,
                                  held_streams=args.streams)
        steal.stop("floors")
        print(f"  floors: the bare parts measured in {time.perf_counter() - t0:.0f} s", flush=True)
    if "uncoalesced" in phases:
        # The same streams with coalescing off (STREAM_COALESCE=false): what it saves.
        stack = start_stack(base / "s6", {"STREAM_COALESCE": "false"})
        try:
            for conc, total in plan[:2]:
                if total <= 0:
                    continue
                for r in await run_latency(stack, conc, total, args.events):
                    r["coalesce"] = False
                    latency.append(r)
                    print(f"  {r['layer']} c={conc} uncoalesced: ttfc p50 {r['ttfc_p50_ms']:.2f} ms, "
                          f"errors {r['errors']}", flush=True)
        finally:
            stack.stop()
    if "image" in phases:
        stack = start_stack(base / "s2")
        try:
            image = await big_image(stack, args.image_mib)
            print(f"  image: {image['seconds']:.2f} s", flush=True)
        finally:
            stack.stop()
    if "media" in phases:
        stack = start_stack(base / "s4", MEDIA_EDGE_ENV)
        try:
            media = await media_rows(stack, PeakRss, rss_mib, args.image_mib,
                                     fresh=lambda: start_stack(base / "s6", MEDIA_EDGE_ENV))
            print(f"  media: over budget {media['over_budget']['status']} in "
                  f"{media['over_budget']['seconds']:.2f} s", flush=True)
        finally:
            stack.stop()
    tiny = schema = None
    if "bodies" in phases:
        stack = start_stack(base / "s5")
        try:
            schema = await worst_schema(stack)
            print(f"  worst accepted schema: depth {schema['accepted']['depth']}", flush=True)
            # Envoy in the bench stacks keeps the default limit (32 MiB + margin): the default
            # MAX_BODY_BYTES is what production accepts.
            tiny = await tiny_messages(stack, DEFAULT_MAX_BODY_BYTES)
            print(f"  tiny messages: {tiny['seconds']:.1f} s", flush=True)
        finally:
            stack.stop()
    if "streams" in phases:
        stack = start_stack(base / "s3")
        try:
            streams = await many_streams(stack, args.streams, args.hold, args.stream_request_kib)
        finally:
            stack.stop()
    redis = None
    if "redis" in phases:
        redis = redis_limits(base / "s6", max(args.n1, 50), MODEL, cpu_seconds, pct)
        print(f"  redis limits: {redis['added_p50_ms']:+.3f} ms p50", flush=True)
    scale = None
    if "scale" in phases:
        scale = await scale_row(base / "s7", args.rps_seconds)
        print(f"  1 vs 3 edges: {scale['ratio']:.2f}x", flush=True)
    revoke = None
    if "revoke" in phases:
        revoke = await revoke_row(base / "s9")
        print("  revoke: " + "; ".join(f"{p} max {s['max_ms'] or float('nan'):.0f} ms"
                                       for p, s in revoke["paths"].items()), flush=True)
    print_table(latency, rps, streams, image, media)
    print_pool(pool)
    print_redis(redis)
    print_bodies(tiny, schema)
    print_scale(scale)
    print_routing(routing)
    print_revoke(revoke)
    print_floors(floors, latency, rps, streams)
    RESULTS.mkdir(exist_ok=True)
    ran_on = machine(steal)
    print(f"\nmachine: {ran_on['cores']} cores ({describe(ran_on)})")
    if (ran_on["steal_pct"]["run"] or 0) >= STEAL_WARN_PCT:
        print(f"  the hypervisor took {ran_on['steal_pct']['run']:g}% of the CPU: this run's figures are "
              "disturbed; compare goals with their floors only, or run again")
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(), "machine": ran_on,
           "phases": phases, "latency": latency, "throughput": rps, "streams": streams, "image": image, "media": media,
           "pool_choice": pool, "tiny_messages": tiny, "worst_schema": schema, "redis_limits": redis, "scale_out": scale,
           "routing": routing, "floors": floors, "revoke": revoke,
           "floor_sums": floor_sums(floors) if floors else None,
           "floor_report": floor_report(latency, rps, streams, floors) if floors else None,
           "targets": {name: {"holds": held, "detail": detail}
                       for name, (held, detail) in targets(latency, rps, streams).items()}}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    names = [f"bench-{stamp}.json"]
    if set(phases) == set(PHASES):
        names.append("latest.json")  # only a complete run replaces the reference figures
    for name in names:
        (RESULTS / name).write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    print(f"\nwritten to {RESULTS / names[-1]}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 600: the p99 is then the 6th-worst request, not the 2nd (one stall of a shared machine
    # decided the p99 goal's verdict with 200).
    p.add_argument("--n1", type=int, default=600, help="requests at concurrency 1")
    p.add_argument("--n50", type=int, default=1000, help="requests at concurrency 50")
    p.add_argument("--n500", type=int, default=2000, help="requests at concurrency 500")
    p.add_argument("--events", type=int, default=EVENTS, help="SSE events per streamed answer")
    p.add_argument("--long-events", type=int, default=LONG_EVENTS, help="events of the long answer (phase long)")
    p.add_argument("--n-long", type=int, default=40, help="long answers at concurrency 1 (5× that at 50)")
    p.add_argument("--n-spaced", type=int, default=100, help="spaced answers at concurrency 1 (phase spaced)")
    p.add_argument("--rps-seconds", type=float, default=10)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--hold", type=int, default=60, help="seconds each held stream lasts")
    p.add_argument("--stream-request-kib", type=int, default=0,
                   help="earlier conversation each held stream's request carries (phase streams)")
    p.add_argument("--image-mib", type=int, default=20)
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated subset of {','.join(PHASES)} (default: all)")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main(p.parse_args())))
