"""A/B of Envoy configurations in front of ONE edge and upstream (`python -m bench.envoy_ab`).

Every variant is its own Envoy process in front of the same edge and upstream; the variants
take turns in blocks (A, B, A, B, ...) so that load from elsewhere on a shared machine weighs
on all of them alike, and each is judged by its own process CPU time (all threads, from
/proc/<pid>/task/*/schedstat) per request and by its RSS, not by wall-clock time. Then each
variant, alone, holds --streams streams open (peak RSS). Tooling for deploy/envoy.yaml
changes, not part of `make bench`.

Variants: `old` is main's template (`git show main:deploy/envoy.yaml`) with Envoy's own
worker count, `new` the working tree's with envoy_flags(); `+token` adds a change (see
MUTATIONS, or cN for N workers), e.g. `--variants old,new,new+nolog,new+c2`.
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import httpx
import orjson
import yaml

from bench.__main__ import MODEL, STREAM_BODY, Clients, PeakRss, rss_mib, start_stack
from bench.worker import stream_http
from deploy.envoy_config import envoy_flags, render
from tests import harness

Mutate = Callable[[dict], None]


def cpu_seconds(pid: int) -> float:
    """CPU time of all the process's threads, in ns resolution (schedstat), not clock ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / 1e9


def rss_parts(pid: int) -> str:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return " ".join(f"{k[3:]}={int(fields[k].split()[0]) / 1024:.1f}" for k in ("RssAnon", "RssFile", "RssShmem"))


def _hcms(cfg: dict) -> list[dict]:
    return [lst["filter_chains"][0]["filters"][0]["typed_config"] for lst in cfg["static_resources"]["listeners"]]


def no_access_log(cfg: dict) -> None:
    for h in _hcms(cfg):
        h.pop("access_log", None)


def no_stats(cfg: dict) -> None:
    cfg["stats_config"] = {"stats_matcher": {"reject_all": True}}


def release_memory(cfg: dict) -> None:
    cfg["memory_allocator_manager"] = {"bytes_to_release": 16 << 20, "memory_release_interval": "1s"}


def _public(cfg: dict) -> dict:
    return _hcms(cfg)[0]


def _edge_route(cfg: dict) -> dict:
    return _public(cfg)["route_config"]["virtual_hosts"][0]["routes"][0]


def no_retry(cfg: dict) -> None:
    _edge_route(cfg)["route"].pop("retry_policy", None)


def no_accounting(cfg: dict) -> None:
    cfg["overload_manager"].pop("buffer_factory_config", None)


def no_overload(cfg: dict) -> None:
    cfg.pop("overload_manager", None)


def no_health_filter(cfg: dict) -> None:
    _public(cfg)["http_filters"] = _public(cfg)["http_filters"][1:]


def no_reqid(cfg: dict) -> None:
    _public(cfg)["generate_request_id"] = False
    _public(cfg).pop("always_set_request_id_in_response", None)


def no_timeouts(cfg: dict) -> None:
    for h in _hcms(cfg):
        h.pop("request_timeout", None)
        h.pop("request_headers_timeout", None)


def small_buffers(cfg: dict) -> None:
    for lst in cfg["static_resources"]["listeners"]:
        lst["per_connection_buffer_limit_bytes"] = 16384
    for c in cfg["static_resources"]["clusters"]:
        c["per_connection_buffer_limit_bytes"] = 16384


def edge_idle_timeout(cfg: dict) -> None:
    edge = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "edge")
    edge["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": "5s"},
        "explicit_http_config": {"http_protocol_options": {}}}}


# A variant is tokens joined by "+": config changes above, or "cN" for --concurrency N.
MUTATIONS: dict[str, Mutate] = {
    "nolog": no_access_log, "nostats": no_stats, "release": release_memory, "noretry": no_retry,
    "noacct": no_accounting, "nooverload": no_overload, "nohc": no_health_filter, "noreqid": no_reqid,
    "notimeouts": no_timeouts, "buf16": small_buffers, "idle": edge_idle_timeout,
}


def variant(name: str) -> tuple[list[Mutate], list[str]]:
    """`old` (the template of `git show main:deploy/envoy.yaml`, Envoy's own worker count) or
    the working tree's template with envoy_flags(); then config changes, or cN: N workers."""
    muts, flags = [], []
    for tok in name.split("+"):
        if tok in ("old", "new"):
            continue
        if tok[0] == "c" and tok[1:].isdigit():
            flags += ["--concurrency", tok[1:]]
        else:
            muts.append(MUTATIONS[tok])
    return muts, flags


def start_variant(name: str, base: dict, mutations: list[Mutate], args: list[str], log_dir: Path,
                  edge_port: int, upstream_port: int, template: Path | None) -> harness.Proc:
    public, internal, admin = harness.free_port(), harness.free_port(), harness.free_port()
    if name.split("+")[0] == "old":
        template = log_dir / "old-envoy.yaml"
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_text(subprocess.run(["git", "show", "main:deploy/envoy.yaml"], cwd=harness.ROOT,
                                           capture_output=True, text=True, check=True).stdout)
        launch = ["--disable-hot-restart", *args]
    else:
        launch = [*envoy_flags({"ENVOY_CONCURRENCY": args[args.index("--concurrency") + 1]}
                               if "--concurrency" in args else {})]
    text = render(public_port=public, internal_port=internal, admin_port=admin,
                  edge_endpoints=[("127.0.0.1", edge_port)], upstream_endpoints=[("127.0.0.1", upstream_port)],
                  descriptor_path=str(harness.ROOT / "gen" / "upstream.pb"),
                  internal_tokens_file=str(harness.internal_auth().tokens_file),
                  **({"template": template} if template else {}), **base)
    cfg = yaml.safe_load(text)
    for m in mutations:
        m(cfg)
    path = log_dir / f"envoy-{name}.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(cfg), sort_keys=False))
    proc = harness.spawn(f"envoy-{name}", [harness.envoy_binary(), "-c", str(path), *launch, "--log-level", "warn"],
                         public, log_dir, {"INTERNAL_TOKEN": harness.internal_auth().tokens["edge"]})
    proc.extra.update(admin_port=admin)
    harness.wait_until(lambda: httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).status_code == 200, proc)
    return proc


async def _block(n: int, concurrency: int, send) -> int:
    """n requests over `concurrency` clients, each made by `send(client)`; how many got 200."""
    ok = 0
    async with Clients(concurrency, timeout=30) as clients:
        async def worker(i: int, count: int) -> None:
            nonlocal ok
            c = clients.for_worker(i)
            for _ in range(count):
                # Awaited before the sum: `ok += (await ...)` reads `ok` before the await, so
                # concurrent workers overwrote each other's counts (640 answers counted as 10,
                # which made the non-streaming and healthz CPU per request 64x too high).
                r = await send(c)
                ok += r.status_code == 200
        shares = [n // concurrency + (i < n % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(worker(i, k) for i, k in enumerate(shares) if k))
    return ok


async def nonstream_block(url: str, key: str, n: int, concurrency: int) -> int:
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "rps"}]}]})
    hdrs = {"x-goog-api-key": key, "Content-Type": "application/json"}
    full = f"{url}/gemini_cli/v1beta/models/{MODEL}:generateContent"
    return await _block(n, concurrency, lambda c: c.post(full, content=body, headers=hdrs))


async def healthz_block(url: str, n: int, concurrency: int) -> int:
    """Requests Envoy answers itself: what parsing and answering alone cost."""
    return await _block(n, concurrency, lambda c: c.get(f"{url}/healthz"))


async def stream_block(url: str, key: str, n: int) -> tuple[int, list[float]]:
    hdrs = {"x-goog-api-key": key, "Content-Type": "application/json"}
    full = f"{url}/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    ttfc = []
    async with httpx.AsyncClient(timeout=30, trust_env=False) as c:
        for _ in range(n):
            t, _total = await stream_http(c, full, hdrs, orjson.dumps(STREAM_BODY))
            ttfc.append(t * 1000)
    return n, ttfc


async def hold_streams(url: str, key: str, n: int, hold_s: int, procs: dict) -> tuple[int, dict]:
    body = orjson.dumps({"contents": [{"role": "user", "parts": [
        {"text": f"hold [len={hold_s}] [chunks={hold_s}] [delay=1000]"}]}]})
    full = f"{url}/gemini_cli/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    hdrs = {"x-goog-api-key": key, "Content-Type": "application/json"}
    intact = 0
    async with Clients(n, timeout=httpx.Timeout(hold_s * 3, connect=30)) as clients, PeakRss(procs) as peak:
        async def one(i: int) -> None:
            nonlocal intact
            n_data = 0
            async with clients.for_worker(i).stream("POST", full, content=body, headers=hdrs) as r:
                async for line in r.aiter_lines():
                    n_data += line.startswith("data: ")
            intact += n_data == hold_s
        await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    return intact, peak.peak


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="old,new")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=640, help="non-streaming requests per block")
    ap.add_argument("--conc", type=int, default=64)
    ap.add_argument("--ns", type=int, default=50, help="streams per block (concurrency 1)")
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--hold", type=int, default=20)
    ap.add_argument("--template", type=Path)
    args = ap.parse_args()
    names = args.variants.split(",")
    base = Path(tempfile.mkdtemp(prefix="envoy-ab-"))
    stack = start_stack(base)
    envoys = {}
    try:
        for n in names:
            muts, flags = variant(n)
            envoys[n] = start_variant(n, {}, muts, flags, base / "logs", stack.edge.port, stack.upstream.port,
                                      args.template)
        # warm-up, then idle RSS
        for n, p in envoys.items():
            await nonstream_block(p.url, stack.key, 64, 16)
            await stream_block(p.url, stack.key, 5)
        await asyncio.sleep(2)
        idle = {n: rss_mib(p.popen.pid) for n, p in envoys.items()}
        for n, p in envoys.items():
            print(n, "idle", rss_parts(p.popen.pid), "threads", len(list(Path(f"/proc/{p.popen.pid}/task").iterdir())))
        ns = {n: [] for n in names}
        st = {n: [] for n in names}
        edge_ns = {n: [] for n in names}
        ttfc = {n: [] for n in names}
        hz = {n: [] for n in names}
        for _ in range(args.rounds):
            for n, p in envoys.items():
                c0, e0 = cpu_seconds(p.popen.pid), cpu_seconds(stack.edge.popen.pid)
                ok = await nonstream_block(p.url, stack.key, args.n, args.conc)
                ns[n].append((cpu_seconds(p.popen.pid) - c0) * 1000 / max(ok, 1))
                edge_ns[n].append((cpu_seconds(stack.edge.popen.pid) - e0) * 1000 / max(ok, 1))
            for n, p in envoys.items():
                c0 = cpu_seconds(p.popen.pid)
                ok = await healthz_block(p.url, args.n, args.conc)
                hz[n].append((cpu_seconds(p.popen.pid) - c0) * 1000 / max(ok, 1))
            for n, p in envoys.items():
                c0 = cpu_seconds(p.popen.pid)
                k, t = await stream_block(p.url, stack.key, args.ns)
                st[n].append((cpu_seconds(p.popen.pid) - c0) * 1000 / k)
                ttfc[n] += t
        print(f"{'variant':20} {'idle MiB':>9} {'ns cpu ms':>10} {'edge ns':>8} {'stream cpu ms':>14} {'ttfc p50':>9} {'healthz':>8}")
        for n in names:
            print(f"{n:20} {idle[n]:9.1f} {statistics.median(ns[n]):10.4f} {statistics.median(edge_ns[n]):8.4f} "
                  f"{statistics.median(st[n]):14.4f} {statistics.median(ttfc[n]):9.3f} {statistics.median(hz[n]):8.4f}   ns={[round(x, 3) for x in ns[n]]}")
        if args.streams:
            for n, p in envoys.items():
                before = rss_mib(p.popen.pid)
                t0 = time.perf_counter()
                intact, peak = await hold_streams(p.url, stack.key, args.streams, args.hold, {n: p, "edge": stack.edge})
                await asyncio.sleep(3)
                print(f"{n:20} hold {args.streams}: intact {intact}, before {before:.1f}, peak {peak[n]:.1f} MiB, "
                      f"after {rss_mib(p.popen.pid):.1f}, edge peak {peak['edge']:.1f}, {time.perf_counter() - t0:.0f}s",
                      flush=True)
    finally:
        for p in envoys.values():
            p.stop()
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
