"""The upstream's backend side alone: CPU per request and per SSE event (`python -m bench.upstream_backend`).

One simulator, one or two upstream processes against it, a gRPC client in this process. With
`--base DIR` (a checkout of another revision, e.g. `git archive main | tar -x -C DIR`) the
upstream of that tree runs too and the two take turns in blocks (A, B, A, B, ...), so load
from elsewhere on a shared machine weighs on both alike; figures are process CPU time
(/proc/<pid>/stat), not wall time. Backend kinds: code_assist (OAuth), ai_studio (key), vertex
(express key). Both trees must have GenerateUnary (the `unary` phase uses it, as the edge does).

    python -m bench.upstream_backend --kind code_assist --rounds 6 --base /tmp/upbase
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import orjson

from tests import harness
from tests.simulator.control import SimControl

MODEL = "gemini-2.5-flash"
ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def body(events: int, delay_ms: float = 0) -> bytes:
    pace = f" [delay={delay_ms:g}]" if delay_ms else ""
    return orjson.dumps({"contents": [{"role": "user", "parts": [
        {"text": f"bench [len={2 * events}] [chunks={events}]{pace}"}]}]})


def start_upstream(tree: Path, sim_url: str, creds: Path | None, env: dict[str, str], log_dir: Path,
                   name: str) -> harness.Proc:
    port = harness.free_port()
    full = harness._base_env()  # noqa: SLF001
    full["PYTHONPATH"] = os.pathsep.join([str(tree), str(ROOT / "gen")])
    full.update({
        "UPSTREAM_LISTEN": f"127.0.0.1:{port}", "CODE_ASSIST_ENDPOINT": sim_url, "OAUTH_TOKEN_URL": f"{sim_url}/token",
        "AI_STUDIO_ENDPOINT": sim_url, "VERTEX_ENDPOINT": sim_url, "VERTEX_TOKEN_URL": f"{sim_url}/token",
        "LOG_LEVEL": "WARNING", "INTERNAL_TOKENS_FILE": str(harness.internal_auth().tokens_file),
        "UPSTREAM_METRICS_PORT": str(harness.free_port()), **env})
    if creds is not None:
        full["GEMINI_CREDENTIALS"] = str(creds)
    log_dir.mkdir(parents=True, exist_ok=True)
    fh = open(log_dir / f"{name}.log", "ab")
    popen = subprocess.Popen([sys.executable, "-m", "services.upstream"], cwd=tree, env=full, stdout=fh,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    fh.close()
    proc = harness.Proc(name, popen, port, log_dir / f"{name}.log")
    harness.wait_until(lambda: harness.grpc_serving(proc.addr), proc)
    return proc


async def run_block(stub, metadata, kind: str, n: int, payload: bytes, conc: int) -> int:
    from gemini_cli.upstream.v1 import upstream_pb2
    from google.api import httpbody_pb2

    req = upstream_pb2.GenerateRequest(model=MODEL, stream=kind != "unary", coalesce=True,
                                       body=httpbody_pb2.HttpBody(content_type="application/json", data=payload))
    errors = 0
    left = n

    async def worker() -> None:
        nonlocal errors, left
        while left > 0:
            left -= 1
            try:
                if kind == "unary":  # what the edge uses for non-streaming answers
                    await stub.GenerateUnary(req, metadata=metadata)
                    continue
                async for _ in stub.Generate(req, metadata=metadata):
                    pass
            except grpc.aio.AioRpcError:
                errors += 1

    await asyncio.gather(*(worker() for _ in range(conc)))
    return errors


PHASES = {  # name: (rpc kind, events, delay ms, requests per block, concurrency)
    "unary": ("unary", 1, 0, 300, 8),
    "stream21": ("stream", 21, 0, 150, 1),
    "stream21c8": ("stream", 21, 0, 300, 8),
    "spaced": ("stream", 21, 2, 20, 1),
}


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", default="code_assist", choices=("code_assist", "ai_studio", "vertex"))
    p.add_argument("--base", type=Path, help="tree of the revision to compare against (A)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--scale", type=float, default=1.0, help="multiply requests per block")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-upb-"))
    sim = harness.start_simulator(base / "logs")
    procs: dict[str, harness.Proc] = {}
    try:
        SimControl(sim.url).config(chunk_delay=0.0, latency=0.0)
        creds = None
        env: dict[str, str] = {}
        if args.kind == "code_assist":
            creds = harness.write_credential(base / "creds" / "bench.json", "rt-bench").parent
        elif args.kind == "ai_studio":
            env["GEMINI_API_KEYS"] = "AIza-bench-key-0123456789"
        else:
            env["VERTEX_API_KEYS"] = "AQ.bench-express-key-0123456789"
        trees = {"B": ROOT} if args.base is None else {"A": args.base.resolve(), "B": ROOT}
        for name, tree in trees.items():
            procs[name] = start_upstream(tree, sim.url, creds, env, base / "logs", f"upstream-{name}")
        print("pids " + " ".join(f"{n}={pr.popen.pid}" for n, pr in procs.items()), file=sys.stderr, flush=True)
        metadata = harness.internal_metadata()
        from gemini_cli.upstream.v1 import upstream_pb2_grpc

        channels = {n: grpc.aio.insecure_channel(pr.addr) for n, pr in procs.items()}
        stubs = {n: upstream_pb2_grpc.UpstreamStub(ch) for n, ch in channels.items()}
        phases = [ph for ph in args.phases.split(",") if ph]
        for name in procs:  # warm-up: tokens, project, connections
            for ph in phases:
                kind, events, delay, n, conc = PHASES[ph]
                await run_block(stubs[name], metadata, kind, max(conc, 10), body(events, delay), conc)
        per: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            for ph in phases:
                kind, events, delay, n, conc = PHASES[ph]
                n = max(conc, int(n * args.scale))
                order = list(procs) if r % 2 == 0 else list(reversed(procs))
                for name in order:
                    pid = procs[name].popen.pid
                    c0 = cpu_seconds(pid)
                    t0 = time.perf_counter()
                    errors = await run_block(stubs[name], metadata, kind, n, body(events, delay), conc)
                    spent = cpu_seconds(pid) - c0
                    if errors:
                        print(f"  {name} {ph}: {errors} errors", file=sys.stderr)
                    per.setdefault((ph, name), []).append(spent / n * 1e3)
                    _ = time.perf_counter() - t0
        print(f"kind={args.kind} rounds={args.rounds}  (upstream CPU ms per request; median [min..max])")
        for ph in phases:
            kind, events, *_ = PHASES[ph]
            cells = []
            for name in procs:
                v = per[(ph, name)]
                cells.append(f"{name}: {statistics.median(v):.3f} [{min(v):.3f}..{max(v):.3f}]")
            extra = ""
            if len(procs) == 2:
                a, b = statistics.median(per[(ph, "A")]), statistics.median(per[(ph, "B")])
                extra = f"  B/A {b / a:.2f}"
                if kind == "stream":
                    extra += f"  per event A {a / events * 1e3:.0f} µs B {b / events * 1e3:.0f} µs"
            print(f"  {ph:11s} " + "  ".join(cells) + extra)
        for ch in channels.values():
            await ch.close()
    finally:
        for pr in procs.values():
            pr.stop()
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
