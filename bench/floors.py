"""`make bench` phase `floors`: what the bare parts cost on this machine, in the same run.

Issue #15's goals may ask for less than the parts our topology is made of can do here. This
phase measures those parts alone, with no gateway logic (bench/floor_parts.py), each in a
process of its own driven by a client process of its own, CPU from /proc/PID/stat:
  grpc_unary, grpc_stream_1, grpc_stream_21: a grpc.aio server and client on loopback (the
      edge → upstream hop), a whole short Gemini answer in one message, or its SSE events in one
      message (as coalesced) or one message each; CPU of the server and of the client;
  http: uvicorn + uvloop + httptools answering 1 KiB of JSON (the edge's HTTP side);
  envoy: Envoy, rendered from deploy/envoy.yaml like the stack's, proxying to that app;
  aiohttp_unary, aiohttp_stream: an aiohttp client calling the simulator (the upstream's
      backend side); CPU of the client;
  backend: a bare keep-alive client calling the simulator's stream (first body bytes): the
      backend's own share of aiohttp_stream's latency (no CPU of ours).
At concurrency 1 (latency p50/p99 and CPU) the parts take turns in blocks, as the latency
phase's layers do; then each runs at a higher concurrency for its CPU per request alone.
bench/report.py adds them up along one request's way through our topology (the floor) and
sets that next to the measured figure for each goal. With `held_streams`, one round of
bench/held_floors.py follows: what the parts grow by per held stream, the floor of the
held-streams goal.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Callable

import httpx
import orjson

from bench.held_floors import BENCH_HOLD_S, held_round
from bench.report import FLOOR_UNARY as UNARY_PARTS
from bench.worker import LineWorker
from tests import harness
from tests.simulator.control import SimControl

BLOCK = 50


def _sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


async def floors_row(base: Path, model: str, request: dict, cpu_seconds: Callable[[int], float],
                     pct: Callable[[list[float], float], float], rss_mib: Callable[[int], float],
                     n1: int = 400, n_conc: int = 2000, concurrency: int = 50,
                     paced: tuple[float, int] | None = None, paced_seconds: float = 5.0,
                     held_streams: int = 0) -> dict:
    logs = base / "logs"
    procs: dict[str, harness.Proc] = {}
    clients: dict[str, LineWorker] = {}
    try:
        sim = procs["simulator"] = harness.start_simulator(logs)
        SimControl(sim.url).config(chunk_delay=0.0, latency=0.0)
        tok = httpx.post(f"{sim.url}/token", data={"grant_type": "refresh_token", "refresh_token": "rt-floors"}).json()
        auth = {"Authorization": f"Bearer {tok['access_token']}", "Content-Type": "application/json"}
        project = httpx.post(f"{sim.url}/v1internal:loadCodeAssist", json={"metadata": {}},
                             headers=auth).json()["cloudaicompanionProject"]
        envelope = orjson.dumps({"model": model, "project": project, "request": request}).decode()
        # The gRPC server sends what the upstream would: the simulator's own answer and events.
        answer = httpx.post(f"{sim.url}/v1internal:generateContent", content=envelope, headers=auth).text
        events = _sse_events(httpx.post(f"{sim.url}/v1internal:streamGenerateContent?alt=sse", content=envelope,
                                        headers=auth).text)
        payloads = base / "payloads.json"
        payloads.write_bytes(orjson.dumps({"answer": answer, "events": events}))

        gport, hport = harness.free_port(), harness.free_port()
        grpc_proc = procs["grpc_server"] = harness.spawn(
            "floor-grpc", [sys.executable, "-m", "bench.floor_parts", "grpc-server", str(gport), str(payloads)],
            gport, logs)
        http_proc = procs["http_server"] = harness.spawn(
            "floor-http", [sys.executable, "-m", "bench.floor_parts", "http-server", str(hport)], hport, logs)
        harness.wait_until(lambda: _connects(gport), grpc_proc)
        harness.wait_until(lambda: harness.http_ok(f"{http_proc.url}/"), http_proc)
        envoy = procs["envoy"] = harness.start_envoy(logs, hport, gport, name="floor-envoy")

        path = f"/gemini_cli/v1beta/models/{model}:generateContent"
        small = orjson.dumps(request).decode()
        specs = {
            "grpc_unary": {"kind": "grpc_unary", "target": grpc_proc.addr, "body": small},
            "grpc_stream_1": {"kind": "grpc_stream", "target": grpc_proc.addr, "messages": 1, "body": small},
            f"grpc_stream_{len(events)}": {"kind": "grpc_stream", "target": grpc_proc.addr, "messages": len(events),
                                           "body": small},
            "http": {"kind": "http", "target": http_proc.addr, "path": path, "body": small},
            "envoy": {"kind": "http", "target": f"127.0.0.1:{envoy.port}", "path": path, "body": small},
            "aiohttp_unary": {"kind": "aiohttp", "target": f"{sim.url}/v1internal:generateContent",
                              "headers": auth, "body": envelope},
            "aiohttp_stream": {"kind": "aiohttp", "target": f"{sim.url}/v1internal:streamGenerateContent?alt=sse",
                               "headers": auth, "body": envelope},
            # The backend alone from a bare client: what of aiohttp_stream is the backend's.
            "backend": {"kind": "http", "target": sim.url.split("//", 1)[1],
                        "path": "/v1internal:streamGenerateContent?alt=sse", "headers": auth, "body": envelope,
                        "first_body": True},
        }
        for name, spec in specs.items():
            clients[name] = await LineWorker.spawn(spec, "bench.floor_parts", "client")
        # Whose CPU a part costs: the gRPC client is the edge's side of the hop, the aiohttp
        # client the upstream's; a load process's own CPU is never counted otherwise.
        measured = {name: (["grpc_server", name] if name.startswith("grpc") else
                           ["http_server"] if name == "http" else
                           ["envoy"] if name == "envoy" else [] if name == "backend" else [name]) for name in specs}

        def pids(name: str) -> dict[str, int]:
            return {p: (procs[p].popen.pid if p in procs else clients[name].proc.pid) for p in measured[name]}

        for c in clients.values():
            await c.run(BLOCK, concurrency=1)  # warm connections and caches
        lat: dict[str, list[tuple[float, float]]] = {n: [] for n in specs}
        cpu1 = {n: dict.fromkeys(measured[n], 0.0) for n in specs}
        errors = dict.fromkeys(specs, 0)
        for start in range(0, n1, BLOCK):
            for name, c in clients.items():
                got, errs = await _timed(c, pids(name), cpu1[name], cpu_seconds, min(BLOCK, n1 - start), 1)
                lat[name] += got
                errors[name] += errs
        cpun = {n: dict.fromkeys(measured[n], 0.0) for n in specs}
        for name, c in clients.items():
            _, errs = await _timed(c, pids(name), cpun[name], cpu_seconds, n_conc, concurrency)
            errors[name] += errs
        # `paced` = (rate, concurrency) of the stack's own non-streaming run: the parts of a
        # non-streaming request again, at that request rate. Saturated, a part serves many
        # requests per wake-up; at the stack's rate it may serve one, as each process does in
        # the stack, so this is the floor that run is held against.
        cpup: dict[str, dict[str, float]] = {}
        n_paced = max(200, int(paced[0] * paced_seconds)) if paced else 0
        for name in (UNARY_PARTS if paced else ()):
            cpup[name] = dict.fromkeys(measured[name], 0.0)
            _, errs = await _timed(clients[name], pids(name), cpup[name], cpu_seconds, n_paced, paced[1],
                                   rate=paced[0])
            errors[name] += errs
        parts = {}
        for name in specs:
            first, total = [r[0] for r in lat[name]], [r[1] for r in lat[name]]
            parts[name] = {
                "first_p50_ms": pct(first, 0.5), "first_p99_ms": pct(first, 0.99),
                "total_p50_ms": pct(total, 0.5), "total_p99_ms": pct(total, 0.99), "errors": errors[name],
                "cpu_ms_c1": {p: round(v * 1000 / max(n1, 1), 4) for p, v in cpu1[name].items()},
                f"cpu_ms_c{concurrency}": {p: round(v * 1000 / max(n_conc, 1), 4) for p, v in cpun[name].items()}}
            if name in cpup:
                parts[name]["cpu_ms_paced"] = {p: round(v * 1000 / n_paced, 4) for p, v in cpup[name].items()}
        rss = {n: round(rss_mib(procs[n].popen.pid), 1) for n in ("grpc_server", "http_server", "envoy")}
        row = {"requests_c1": n1, "requests_conc": n_conc, "concurrency": concurrency, "events": len(events),
               **({"paced_rps": round(paced[0], 1), "paced_concurrency": paced[1], "requests_paced": n_paced}
                  if paced else {}),
               "answer_bytes": len(answer), "event_bytes": sum(map(len, events)), "parts": parts, "rss_mib": rss}
    finally:
        for c in clients.values():
            await c.close()
        for p in reversed(list(procs.values())):
            p.stop()
    if held_streams:
        # After the parts above have stopped: each held part's RSS is its own, on a quiet machine.
        row["held"] = await asyncio.to_thread(held_round, held_streams, BENCH_HOLD_S)
    return row


async def _timed(client: LineWorker, pids: dict[str, int], into: dict[str, float], cpu_seconds, n: int,
                 concurrency: int, **order) -> tuple[list[tuple[float, float]], int]:
    cpu0 = {p: cpu_seconds(pid) for p, pid in pids.items()}
    got, errs = await client.run(n, concurrency=concurrency, **order)
    for p, pid in pids.items():
        into[p] += cpu_seconds(pid) - cpu0[p]
    return got, errs


def _connects(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
