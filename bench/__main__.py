"""`make bench`: latency, throughput and memory of the stack against the simulator.

Layers measured for a streamed answer (time to first chunk and total time):
  (a) direct to the simulator, (b) upstream over gRPC, (c) edge, (d) Envoy → edge → upstream.
Then non-streaming throughput through the full stack, 1,000 concurrent streams held for a
minute, and one 20 MiB image through the OpenAI route. Prints a table and writes JSON to
bench/results/. Everything runs on loopback; the simulator's own latency is zero.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import orjson

from tests import harness
from tests.simulator.control import SimControl

RESULTS = Path(__file__).parent / "results"
MODEL = "gemini-2.5-flash"
STREAM_BODY = {"contents": [{"role": "user", "parts": [{"text": "bench [len=12] [chunks=4]"}]}]}


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

    def __init__(self, procs: dict[str, harness.Proc]):
        self.procs, self.peak = procs, {n: 0.0 for n in procs}
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            for n, p in self.procs.items():
                self.peak[n] = max(self.peak[n], rss_mib(p.popen.pid))
            await asyncio.sleep(0.2)

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

    def procs(self) -> dict[str, harness.Proc]:
        return {"simulator": self.sim, "upstream": self.upstream, "edge": self.edge, "envoy": self.envoy}

    def stop(self) -> None:
        for p in (self.envoy, self.edge, self.upstream, self.sim):
            p.stop()


def start_stack(base: Path) -> Stack:
    logs = base / "logs"
    sim = harness.start_simulator(logs)
    SimControl(sim.url).config(chunk_delay=0.0, latency=0.0)
    harness.write_credential(base / "creds" / "bench.json", "rt-bench")
    up = harness.start_upstream(logs, sim.url, base / "creds", {"LOG_LEVEL": "WARNING"})
    edge = harness.start_edge(logs, up.addr, base / "data", {"LOG_LEVEL": "WARNING", "MAX_BODY_BYTES": str(64 << 20)})
    envoy = harness.start_envoy(logs, edge.port, up.port)
    key = harness.create_key(edge, "--name", "bench")
    tok = httpx.post(f"{sim.url}/token", data={"grant_type": "refresh_token", "refresh_token": "rt-bench"}).json()
    load = httpx.post(f"{sim.url}/v1internal:loadCodeAssist", json={"metadata": {}},
                      headers={"Authorization": f"Bearer {tok['access_token']}"}).json()
    return Stack(sim, up, edge, envoy, key, tok["access_token"], load["cloudaicompanionProject"])


# --- one streamed request per layer, returning (ttfc, total) seconds -------------------------

async def stream_http(client: httpx.AsyncClient, url: str, headers: dict, body: bytes) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttfc = None
    async with client.stream("POST", url, content=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {(await r.aread())[:200]!r}")
        async for piece in r.aiter_raw():
            if ttfc is None and b"data:" in piece:
                ttfc = time.perf_counter() - t0
    return (ttfc if ttfc is not None else float("nan")), time.perf_counter() - t0


async def stream_grpc(stub, body: bytes) -> tuple[float, float]:
    from gemini_cli.upstream.v1 import upstream_pb2
    from google.api import httpbody_pb2

    t0 = time.perf_counter()
    ttfc = None
    call = stub.Generate(upstream_pb2.GenerateRequest(
        model=MODEL, stream=True, body=httpbody_pb2.HttpBody(content_type="application/json", data=body)))
    async for _ in call:
        if ttfc is None:
            ttfc = time.perf_counter() - t0
    return ttfc or float("nan"), time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000 if s else float("nan")


async def run_layer(stack: Stack, layer: str, concurrency: int, total: int) -> dict:
    from gemini_cli.upstream.v1 import upstream_pb2_grpc

    body = orjson.dumps(STREAM_BODY)
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60, trust_env=False) as client, \
            grpc.aio.insecure_channel(stack.upstream.addr) as channel:
        stub = upstream_pb2_grpc.UpstreamStub(channel)
        if layer == "a_simulator":
            envelope = orjson.dumps({"model": MODEL, "project": stack.project, "request": STREAM_BODY})
            url = f"{stack.sim.url}/v1internal:streamGenerateContent?alt=sse"
            hdrs = {"Authorization": f"Bearer {stack.access_token}", "Content-Type": "application/json"}
            one = lambda: stream_http(client, url, hdrs, envelope)  # noqa: E731
        elif layer == "b_upstream_grpc":
            one = lambda: stream_grpc(stub, body)  # noqa: E731
        else:
            port = stack.edge.port if layer == "c_edge" else stack.envoy.port
            url = f"http://127.0.0.1:{port}/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
            hdrs = {"x-goog-api-key": stack.key, "Content-Type": "application/json"}
            one = lambda: stream_http(client, url, hdrs, body)  # noqa: E731
        for _ in range(min(20, total)):  # warm connections and caches
            await one()
        sem = asyncio.Semaphore(concurrency)
        errors = 0

        async def guarded() -> tuple[float, float] | None:
            nonlocal errors
            async with sem:
                try:
                    return await one()
                except Exception:
                    errors += 1
                    return None

        t0 = time.perf_counter()
        results = [r for r in await asyncio.gather(*(guarded() for _ in range(total))) if r]
        wall = time.perf_counter() - t0
    ttfc = [r[0] for r in results]
    tot = [r[1] for r in results]
    return {"layer": layer, "concurrency": concurrency, "requests": total, "errors": errors, "wall_s": wall,
            "ttfc_p50_ms": pct(ttfc, 0.5), "ttfc_p99_ms": pct(ttfc, 0.99),
            "total_p50_ms": pct(tot, 0.5), "total_p99_ms": pct(tot, 0.99)}


async def throughput(stack: Stack, seconds: float, concurrency: int) -> dict:
    url = f"{stack.envoy.url}/gemini_cli/v1beta/models/{MODEL}:generateContent"
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "rps"}]}]})
    hdrs = {"x-goog-api-key": stack.key, "Content-Type": "application/json"}
    done = errors = 0
    procs = {n: p for n, p in stack.procs().items() if n != "simulator"}
    cpu0 = {n: cpu_seconds(p.popen.pid) for n, p in procs.items()}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                r = await client.post(url, content=body, headers=hdrs)
                if r.status_code == 200:
                    done += 1
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    cpu = sum(cpu_seconds(p.popen.pid) - cpu0[n] for n, p in procs.items())
    return {"concurrency": concurrency, "requests": done, "errors": errors, "rps": done / wall,
            "gateway_cpu_s": cpu, "requests_per_cpu_s": done / cpu if cpu else float("nan")}


async def many_streams(stack: Stack, n: int, hold_s: int) -> dict:
    """n streams open at once, each one chunk per second for hold_s seconds."""
    words = hold_s
    body = orjson.dumps({"contents": [{"role": "user", "parts": [
        {"text": f"hold [len={words}] [chunks={words}] [delay=1000]"}]}]})
    url = f"{stack.envoy.url}/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    hdrs = {"x-goog-api-key": stack.key, "Content-Type": "application/json"}
    expected = " ".join(f"w{i}" for i in range(1, words + 1))
    intact = 0
    failures: dict[str, int] = {}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(hold_s * 3, connect=30),
                                 trust_env=False) as client, PeakRss(stack.procs()) as peak:
        async def one() -> None:
            nonlocal intact
            try:
                text, finish = "", None
                async with client.stream("POST", url, content=body, headers=hdrs) as r:
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

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - t0
    return {"streams": n, "hold_s": hold_s, "intact": intact, "failures": failures, "wall_s": wall,
            "peak_rss_mib": peak.peak}


async def big_image(stack: Stack, mib: int) -> dict:
    raw = b"\x89PNG\r\n\x1a\n" + os.urandom(mib << 20)
    body = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(raw).decode()}}]}]})
    url = f"{stack.envoy.url}/gemini_cli/v1/chat/completions"
    async with httpx.AsyncClient(timeout=120, trust_env=False) as client, PeakRss(
            {"edge": stack.edge, "upstream": stack.upstream}) as peak:
        before = {n: rss_mib(p.popen.pid) for n, p in peak.procs.items()}
        t0 = time.perf_counter()
        r = await client.post(url, content=body, headers={"Authorization": f"Bearer {stack.key}",
                                                          "Content-Type": "application/json"})
        took = time.perf_counter() - t0
    ok = r.status_code == 200 and f"{len(raw)} bytes" in r.json()["choices"][0]["message"]["content"]
    return {"image_mib": mib, "request_mib": len(body) / (1 << 20), "status": r.status_code, "intact": ok,
            "seconds": took, "rss_before_mib": before, "peak_rss_mib": peak.peak}


# --- report ---------------------------------------------------------------------------------

def print_table(latency: list[dict], rps: dict, streams: dict, image: dict) -> None:
    print("\nStreamed answer, time to first chunk (TTFC) and total, ms")
    print(f"{'layer':<18}{'conc':>6}{'ok':>7}{'err':>5}{'ttfc p50':>10}{'ttfc p99':>10}{'tot p50':>9}"
          f"{'tot p99':>9}{'+ttfc p50':>11}{'ratio':>7}")
    base = {r["concurrency"]: r for r in latency if r["layer"] == "a_simulator"}
    for r in latency:
        b = base.get(r["concurrency"])
        added = r["ttfc_p50_ms"] - b["ttfc_p50_ms"] if b else float("nan")
        ratio = r["ttfc_p50_ms"] / b["ttfc_p50_ms"] if b and b["ttfc_p50_ms"] else float("nan")
        r["added_ttfc_p50_ms"], r["ratio_to_direct"] = added, ratio
        print(f"{r['layer']:<18}{r['concurrency']:>6}{r['requests'] - r['errors']:>7}{r['errors']:>5}"
              f"{r['ttfc_p50_ms']:>10.2f}{r['ttfc_p99_ms']:>10.2f}{r['total_p50_ms']:>9.2f}{r['total_p99_ms']:>9.2f}"
              f"{added:>11.2f}{ratio:>7.2f}")
    print(f"\nNon-streaming through Envoy→edge→upstream at concurrency {rps['concurrency']}: "
          f"{rps['rps']:.0f} req/s, {rps['requests_per_cpu_s']:.0f} req per gateway CPU-second "
          f"({rps['errors']} errors)")
    print(f"\n{streams['streams']} concurrent streams held {streams['hold_s']} s: {streams['intact']} intact, "
          f"failures {streams['failures'] or 'none'}; peak RSS MiB "
          + ", ".join(f"{n} {v:.0f}" for n, v in streams["peak_rss_mib"].items()))
    print(f"\n{image['image_mib']} MiB image via /v1/chat/completions: status {image['status']}, intact {image['intact']}, "
          f"{image['seconds']:.2f} s; peak RSS MiB " + ", ".join(f"{n} {v:.0f}" for n, v in image["peak_rss_mib"].items()))


async def main(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    plan = [(1, args.n1), (50, args.n50), (500, args.n500)]
    latency: list[dict] = []
    stack = start_stack(base / "s1")
    try:
        for conc, total in plan:
            for layer in ("a_simulator", "b_upstream_grpc", "c_edge", "d_envoy_full"):
                r = await run_layer(stack, layer, conc, total)
                latency.append(r)
                print(f"  {layer} c={conc}: ttfc p50 {r['ttfc_p50_ms']:.2f} ms, errors {r['errors']}", flush=True)
        rps = await throughput(stack, args.rps_seconds, 64)
        print(f"  throughput: {rps['rps']:.0f} req/s", flush=True)
    finally:
        stack.stop()
    stack = start_stack(base / "s2")
    try:
        image = await big_image(stack, args.image_mib)
        print(f"  image: {image['seconds']:.2f} s", flush=True)
    finally:
        stack.stop()
    stack = start_stack(base / "s3")
    try:
        streams = await many_streams(stack, args.streams, args.hold)
    finally:
        stack.stop()
    print_table(latency, rps, streams, image)
    RESULTS.mkdir(exist_ok=True)
    out = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
           "latency": latency, "throughput": rps, "streams": streams, "image": image}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for name in (f"bench-{stamp}.json", "latest.json"):
        (RESULTS / name).write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    print(f"\nwritten to {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n1", type=int, default=200, help="requests at concurrency 1")
    p.add_argument("--n50", type=int, default=1000, help="requests at concurrency 50")
    p.add_argument("--n500", type=int, default=2000, help="requests at concurrency 500")
    p.add_argument("--rps-seconds", type=float, default=10)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--hold", type=int, default=60, help="seconds each held stream lasts")
    p.add_argument("--image-mib", type=int, default=20)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    sys.exit(asyncio.run(main(p.parse_args())))
