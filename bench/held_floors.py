"""What the bare parts cost per held stream (`python -m bench.held_floors`).

Phase `streams` of `make bench` holds 1,000 streams through Envoy → edge → upstream and sums the
three processes' peak RSS. This measures the same for the parts those processes are built of,
with no gateway logic, each part a process of its own whose peak RSS is sampled while it holds
`--streams` streams (one message per second each, as the phase's streams), after a few warm-up
calls:

- `grpc`: a grpc.aio server streaming to a grpc.aio client (the upstream's and the edge's ends
  of the hop; the client reads each message in a task of its own, as the edge does, and its
  channel keeps gRPC's transparent retry, which the edge relies on);
- `http`: uvicorn + uvloop + httptools streaming to an aiohttp client (the edge's HTTP server,
  and the upstream's client towards the backend, one connection per held stream);
- `envoy`: the same with Envoy, configured from deploy/envoy.yaml, in between (only Envoy is
  measured: two connections per held stream, as in the stack).

So the upstream's floor per held stream is grpc server + aiohttp client, the edge's uvicorn +
grpc client, Envoy's its own (PROCESSES). Phase `floors` of `make bench` runs one round
(`held_round`) at the run's `--streams`, and bench/report.py sets the held-streams goal against
it; run alone, rounds run the parts in turn (grpc, http, envoy, grpc, ...) on a shared machine
and medians and ranges are printed, for a deeper look.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = "/floor.Held/Stream"
MESSAGE = b"x" * 200  # about one SSE event of the held streams' answers
WARM_UP = 5
PARTS = ("grpc", "http", "envoy")
# Which measured processes of the parts each gateway process is built of.
PROCESSES = {"upstream": ("grpc_server", "http_client"), "edge": ("http_server", "grpc_client"),
             "envoy": ("envoy",)}
# Phase `floors`: long enough for every stream to be open, and held, while the peak is sampled.
# 1,000 streams, one round each here: 131.5 KiB per stream in all with 10 s (48 s for the
# round), 131.4 with 15 s (63 s).
BENCH_HOLD_S = 10


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout} s")


# --- the parts (each runs as `python -m bench.held_floors ROLE PORT`) -----------------------

async def grpc_server(port: int) -> None:
    import grpc

    async def stream(request: bytes, context) -> object:
        for i in range(int(request)):
            if i:
                await asyncio.sleep(1)
            yield MESSAGE

    handler = grpc.method_handlers_generic_handler(
        "floor.Held", {"Stream": grpc.unary_stream_rpc_method_handler(stream)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def _hold(one, n: int, hold_s: int) -> None:
    """Warm up, report idle, wait for the go line, hold n streams, report how many were whole."""
    for _ in range(WARM_UP):
        await one(2)
    print("idle", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    results = await asyncio.gather(*(one(hold_s) for _ in range(n)), return_exceptions=True)
    print(sum(r is True for r in results), flush=True)


async def grpc_client(port: int, n: int, hold_s: int, path: str) -> None:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_stream(METHOD)

        async def one(messages: int) -> bool:
            call = method(str(messages).encode())
            got = 0
            while (msg := await asyncio.ensure_future(call.read())) is not grpc.aio.EOF:
                got += msg == MESSAGE
            return got == messages

        await _hold(one, n, hold_s)


def http_server(port: int) -> None:
    import uvicorn

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        # A bare path (Envoy's health check: GET /healthz) gets one message.
        for i in range(int(scope["query_string"] or 1)):
            if i:
                await asyncio.sleep(1)
            await send({"type": "http.response.body", "body": b"data: " + MESSAGE + b"\r\n\r\n",
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
                log_level="warning", access_log=False, timeout_keep_alive=120, backlog=4096)


async def http_client(port: int, n: int, hold_s: int, path: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=hold_s * 3)) as session:
        async def one(messages: int) -> bool:
            got = 0
            async with session.post(f"http://127.0.0.1:{port}{path}?{messages}", data=b"{}") as r:
                async for line in r.content:
                    got += line == b"data: " + MESSAGE + b"\r\n"
            return got == messages

        await _hold(one, n, hold_s)


# --- the driver -----------------------------------------------------------------------------

def measure(part: str, n: int, hold_s: int) -> dict:
    """One round of one part: each measured process's RSS growth per held stream (KiB) at its
    peak. Part `envoy`: Envoy as deploy/envoy.yaml configures it, between the aiohttp client and
    the uvicorn server of part `http` (only Envoy is measured)."""
    from tests import harness  # here: the parts' own processes never load it

    port = _free_port()
    run = [sys.executable, "-OO", "-m", "bench.held_floors"]
    kind = "grpc" if part == "grpc" else "http"
    server = subprocess.Popen([*run, f"{kind}-server", str(port)], cwd=ROOT)
    envoy = client = None
    logs = Path(tempfile.mkdtemp(prefix="held-floors-"))  # Envoy's config and log
    try:
        _wait_listening(port, server)
        target, path = port, "/"
        measured = {f"{part}_server": server.pid}
        if part == "envoy":
            # Its gRPC cluster points at a port nothing listens on: only the edge route is used.
            envoy = harness.start_envoy(logs, port, _free_port(), name="floor-envoy")
            target, path = envoy.port, "/gemini_cli/held"
            # Routed once Envoy's health check has found the server.
            harness.wait_until(lambda: harness.http_ok(f"{envoy.url}{path}?1"), envoy, what="routing")
            measured = {"envoy": envoy.popen.pid}
        client = subprocess.Popen([*run, f"{kind}-client", str(target), str(n), str(hold_s), path], cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if part != "envoy":
            measured[f"{part}_client"] = client.pid
        assert client.stdin is not None and client.stdout is not None
        if client.stdout.readline().strip() != "idle":
            raise RuntimeError(f"{part}: the client failed to warm up")
        time.sleep(1)
        idle = {name: _rss_mib(pid) for name, pid in measured.items()}
        peak = dict(idle)
        client.stdin.write("go\n")
        client.stdin.flush()
        # The client prints its count of whole streams when all have ended: sample until then.
        os.set_blocking(client.stdout.fileno(), False)
        line = ""
        while not line and client.poll() is None:
            for name, pid in measured.items():
                peak[name] = max(peak[name], _rss_mib(pid))
            time.sleep(0.05)
            line = client.stdout.readline()
        client.wait(30)
    finally:
        for proc in (client, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if envoy is not None:
            envoy.stop()
        shutil.rmtree(logs, ignore_errors=True)
    return {"intact": int(line or 0), **{name: (peak[name] - idle[name]) * 1024 / n for name in measured}}


def held_round(n: int, hold_s: int, parts: tuple[str, ...] = PARTS) -> dict:
    """One round of the parts, in turn: each measured process's growth per held stream (KiB)
    and how many of the n streams each part carried whole (a growth from a part that dropped
    or cut streams is no floor)."""
    intact: dict[str, int] = {}
    kib: dict[str, float] = {}
    for part in parts:
        got = measure(part, n, hold_s)
        intact[part] = got.pop("intact")
        kib.update(got)
    return {"streams": n, "hold_s": hold_s, "intact": intact, "kib_per_stream": kib}


def per_process(kib: dict[str, float]) -> dict[str, float]:
    """The parts' growth per held stream (KiB) grouped as the gateway's processes are built."""
    return {proc: sum(kib[p] for p in parts) for proc, parts in PROCESSES.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--hold", type=int, default=15, help="seconds each held stream lasts")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    per: dict[str, list[float]] = {}
    for r in range(args.rounds):
        got = held_round(args.streams, args.hold)
        if lost := [part for part, whole in got["intact"].items() if whole != args.streams]:
            raise SystemExit(f"{', '.join(lost)}: not every stream arrived whole in round {r + 1}")
        for k, v in got["kib_per_stream"].items():
            per.setdefault(k, []).append(v)
    med = {k: statistics.median(v) for k, v in per.items()}
    print(f"KiB of RSS per held stream, {args.streams} streams, median of {args.rounds} rounds (range):")
    for k, v in per.items():
        print(f"  {k:12} {med[k]:5.1f} ({min(v):.1f}-{max(v):.1f})")
    for proc, kib in per_process(med).items():
        print(f"  {proc} floor ({' + '.join(PROCESSES[proc])}): {kib:.1f}")
    total = sum(med.values())
    print(f"  all three processes: {total:.1f} KiB per stream, {total * args.streams / 1024:.0f} MiB for {args.streams}")
    return 0


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role.endswith("-server") or role.endswith("-client"):
        # As the services set it for themselves (services/edge/__main__.py,
        # services/upstream/__main__.py); here, not at import: bench/report.py imports this module.
        os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")
        import uvloop

        uvloop.install()
        port = int(sys.argv[2])
        if role == "http-server":
            http_server(port)
        elif role == "grpc-server":
            asyncio.run(grpc_server(port))
        else:
            client = grpc_client if role == "grpc-client" else http_client
            asyncio.run(client(port, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
    else:
        sys.exit(main())
