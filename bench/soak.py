"""`make soak`: does the stack hold steady under hours of ordinary traffic? (issue #16)

Runs the stack of `make bench` (simulator → upstream → edge → Envoy, on loopback) and drives it
through Envoy with CONCURRENCY clients for DURATION seconds, an even mix of four requests:
OpenAI chat streamed, OpenAI chat not streamed, Gemini-native SSE, and a stream the client
abandons after three lines. Half of the requests use one key, the others go round-robin over
`--keys` keys. Every sample prints, per process, RSS and open descriptors, the asyncio task
counts of the edge and the upstream (`kill -USR1` makes them write a stats line to their log)
and the ledger's row count.

Verdict, HOLDS or SHORT on each:
- RSS: after warm-up, each process's RSS stays within 5% (or 10 MiB, whichever is larger) of
  its figure at the end of warm-up;
- descriptors and tasks: once the load stops they return to their idle figures (taken after
  warm-up, with the load paused): tasks exactly, descriptors within the connections that
  Envoy and the edge keep alive between requests (at most the concurrency more);
- ledger: exactly one row per request the gateway answered;
- no request failed.

    python -m bench.soak --duration 180 --concurrency 32 [--keys 200] [--warmup 30]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from bench.__main__ import MODEL, RESULTS, Clients, Stack, rss_mib, start_stack
from services.edge.store import NewKey, SQLiteLicenseStore, generate_key, hash_key, key_prefix

KINDS = ("openai_stream", "openai_unary", "gemini_sse", "abandon")
PROCS = ("edge", "upstream", "envoy")
ABANDON_AFTER_LINES = 3


# --- workload ---------------------------------------------------------------------------------

@dataclass
class Tally:
    requests: int = 0          # answered by the gateway (a status line came back): one ledger row each
    errors: int = 0            # non-200 statuses, broken or incomplete answers
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    last_error: str = ""


def _requests(stack: Stack) -> dict[str, tuple[str, bytes]]:
    base = stack.envoy.url + "/gemini_cli"
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "soak [len=40] [chunks=6]"}]}
    native = {"contents": [{"role": "user", "parts": [{"text": "soak [len=40] [chunks=6]"}]}]}
    # Spread over time, so that the client really leaves in the middle of the answer.
    slow = {"contents": [{"role": "user", "parts": [{"text": "soak [len=40] [chunks=8] [delay=15]"}]}]}
    sse = f"{base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    return {
        "openai_stream": (f"{base}/v1/chat/completions", orjson.dumps({**chat, "stream": True})),
        "openai_unary": (f"{base}/v1/chat/completions", orjson.dumps(chat)),
        "gemini_sse": (sse, orjson.dumps(native)),
        "abandon": (sse, orjson.dumps(slow)),
    }


async def one_request(client: httpx.AsyncClient, kind: str, url: str, body: bytes, key: str, tally: Tally) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    try:
        async with client.stream("POST", url, content=body, headers=headers) as r:
            tally.requests += 1
            tally.by_kind[kind] += 1
            if r.status_code != 200:
                tally.errors += 1
                tally.last_error = f"{kind}: {r.status_code} {(await r.aread())[:200]!r}"
                return
            if kind == "abandon":
                lines = 0
                async for _ in r.aiter_lines():
                    lines += 1
                    if lines >= ABANDON_AFTER_LINES:
                        break  # leaving the block closes the connection mid-answer
                return
            data = await r.aread()
            ok = (data.rstrip().endswith(b"[DONE]") if kind == "openai_stream"
                  else b'"finishReason"' in data if kind == "gemini_sse" else b'"choices"' in data)
            if not ok:
                tally.errors += 1
                tally.last_error = f"{kind}: incomplete answer {data[-200:]!r}"
    except (httpx.HTTPError, OSError) as exc:
        tally.errors += 1
        tally.last_error = f"{kind}: {exc!r}"


async def drive(stack: Stack, keys: list[str], concurrency: int, seconds: float, tally: Tally,
                kinds: tuple[str, ...] = KINDS) -> None:
    """CONCURRENCY workers, each cycling through the four kinds, for `seconds`."""
    reqs = _requests(stack)
    hot, many = keys[0], keys[1:] or keys[:1]
    spread = itertools.count()
    stop = time.monotonic() + seconds
    async with Clients(concurrency, timeout=60) as clients:
        async def worker(i: int) -> None:
            client = clients.for_worker(i)
            for n in itertools.count(i):
                if time.monotonic() >= stop:
                    return
                kind = kinds[n % len(kinds)]
                key = hot if (n // len(kinds) + i) % 2 == 0 else many[next(spread) % len(many)]
                url, body = reqs[kind]
                await one_request(client, kind, url, body, key, tally)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))


# --- what each process holds --------------------------------------------------------------------

def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def stats(proc) -> dict:
    """The stats line the process writes on SIGUSR1 (asyncio tasks, objects, native heap)."""
    size = proc.log_path.stat().st_size
    proc.popen.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(proc.log_path, "rb") as fh:
            fh.seek(size)
            for line in fh.read().splitlines():
                if line.startswith(b"stats "):
                    return orjson.loads(line[6:])
        time.sleep(0.02)
    return {"tasks": -1}


def ledger_rows(stack: Stack) -> int:
    db = stack.edge.extra["env"]["LICENSE_DB"]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]


def sample(stack: Stack, t: float, tally: Tally) -> dict:
    procs = {"edge": stack.edge, "upstream": stack.upstream, "envoy": stack.envoy}
    return {"t": round(t, 1), "requests": tally.requests, "errors": tally.errors,
            "rss_mib": {n: round(rss_mib(p.popen.pid), 1) for n, p in procs.items()},
            "fds": {n: fds(p.popen.pid) for n, p in procs.items()},
            "stats": {"edge": stats(stack.edge), "upstream": stats(stack.upstream)},
            "ledger_rows": ledger_rows(stack)}


def print_header() -> None:
    print(f"{'t s':>6}{'requests':>10}{'err':>5}{'RSS MiB edge/up/envoy':>24}{'fds edge/up/envoy':>20}"
          f"{'tasks edge/up':>15}{'edge C heap':>13}{'ledger':>9}", flush=True)


def print_sample(s: dict, note: str = "") -> None:
    rss = "/".join(f"{s['rss_mib'][n]:.1f}" for n in PROCS)
    fd = "/".join(str(s["fds"][n]) for n in PROCS)
    tk = f"{s['stats']['edge']['tasks']}/{s['stats']['upstream']['tasks']}"
    heap = s["stats"]["edge"].get("native_heap_mib")
    heap_text = f"{heap:.1f}" if isinstance(heap, (int, float)) else "-"
    print(f"{s['t']:>6.0f}{s['requests']:>10}{s['errors']:>5}{rss:>24}{fd:>20}{tk:>15}{heap_text:>13}{s['ledger_rows']:>9}"
          f"  {note}".rstrip(), flush=True)


async def settle(stack: Stack, expect_rows: int, timeout: float = 30.0) -> None:
    """Wait until the ledger has caught up (rows are written in batches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and await asyncio.to_thread(ledger_rows, stack) < expect_rows:
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)  # let cancelled calls and closed connections wind down


# --- verdict ----------------------------------------------------------------------------------

def rss_tolerance(ref: float) -> float:
    return max(0.05 * ref, 10.0)


def slope_kib_per_1000(points: list[tuple[int, float]]) -> float:
    """Least-squares growth of RSS per 1,000 requests (KiB)."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var * 1024 * 1000 if var else float("nan")


def verdict(warm: dict, after: list[dict], idle: dict, final: dict, tally: Tally, concurrency: int) -> dict:
    out: dict[str, tuple[bool, str]] = {}
    for n in PROCS:
        ref = warm["rss_mib"][n]
        peak = max(s["rss_mib"][n] for s in after)
        tol = rss_tolerance(ref)
        slope = slope_kib_per_1000([(s["requests"], s["rss_mib"][n]) for s in [warm, *after]])
        out[f"RSS {n}"] = (peak - ref <= tol, f"{ref:.1f} MiB after warm-up, peak {peak:.1f}, end "
                           f"{after[-1]['rss_mib'][n]:.1f} (allowed +{tol:.1f}); {slope:+.0f} KiB per 1,000 requests")
    for n in PROCS:
        allowed = idle["fds"][n] + concurrency
        out[f"descriptors {n}"] = (final["fds"][n] <= allowed,
                                   f"idle {idle['fds'][n]}, after the load {final['fds'][n]} (allowed {allowed})")
    for n in ("edge", "upstream"):
        out[f"tasks {n}"] = (final["stats"][n]["tasks"] == idle["stats"][n]["tasks"],
                             f"idle {idle['stats'][n]['tasks']}, after the load {final['stats'][n]['tasks']}")
    out["ledger: one row per request"] = (final["ledger_rows"] == tally.requests,
                                          f"{final['ledger_rows']} rows for {tally.requests} requests")
    out["no failed requests"] = (tally.errors == 0, f"{tally.errors} failed" +
                                 (f" (last: {tally.last_error})" if tally.last_error else ""))
    return out


# --- main -------------------------------------------------------------------------------------

async def make_keys(stack: Stack, n: int) -> list[str]:
    """`n` keys written straight into the edge's database (the admin CLI is one process per key)."""
    env = stack.edge.extra["env"]
    secret = env["LICENSE_SECRET"].encode()
    store = SQLiteLicenseStore(env["LICENSE_DB"])
    keys = [stack.key]
    try:
        for i in range(n - 1):
            k = generate_key()
            await store.create_key(hash_key(secret, k), key_prefix(k), NewKey(name=f"soak-{i}", rpm=100_000))
            keys.append(k)
    finally:
        await store.close()
    return keys


async def run(args: argparse.Namespace) -> int:
    base = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    stack = start_stack(base)
    try:
        keys = await make_keys(stack, max(1, args.keys))
        await asyncio.sleep(1.0)  # the edge notices new keys within its poll interval
        t0 = time.monotonic()
        tally = Tally()
        fresh = await asyncio.to_thread(sample, stack, 0, tally)
        print(f"soak: {args.duration:g} s at concurrency {args.concurrency}, {len(keys)} keys "
              f"(half the requests on one), warm-up {args.warmup:g} s; logs in {base / 'logs'}\n")
        print_header()
        print_sample(fresh, "idle, before any request")

        await drive(stack, keys, args.concurrency, args.warmup, tally, args.kinds)
        await settle(stack, tally.requests)
        idle = await asyncio.to_thread(sample, stack, time.monotonic() - t0, tally)
        print_sample(idle, "idle after warm-up: the reference")

        samples: list[dict] = []
        stop_at = time.monotonic() + args.duration
        load = asyncio.create_task(drive(stack, keys, args.concurrency, args.duration, tally, args.kinds))
        every = args.interval or min(30.0, max(5.0, args.duration / 12))
        while not load.done():
            await asyncio.wait({load}, timeout=min(every, max(0.1, stop_at - time.monotonic())))
            if load.done():
                break
            s = await asyncio.to_thread(sample, stack, time.monotonic() - t0, tally)
            samples.append(s)
            print_sample(s)
        await load
        samples.append(await asyncio.to_thread(sample, stack, time.monotonic() - t0, tally))
        print_sample(samples[-1], "load stopped")
        await settle(stack, tally.requests)
        final = await asyncio.to_thread(sample, stack, time.monotonic() - t0, tally)
        print_sample(final, "idle after the load")

        verdicts = verdict(idle, samples, idle, final, tally, args.concurrency)
        elapsed = args.warmup + args.duration
        print(f"\n{tally.requests} requests in {elapsed:g} s ({tally.requests / elapsed:.0f}/s): "
              + ", ".join(f"{k} {v}" for k, v in tally.by_kind.items()))
        print("RSS MiB start → end: " + ", ".join(
            f"{n} {fresh['rss_mib'][n]:.1f} → {final['rss_mib'][n]:.1f}" for n in PROCS))
        print("\nVerdict")
        for name, (held, detail) in verdicts.items():
            print(f"  {'HOLDS' if held else 'SHORT':<7}{name}: {detail}")
        holds = all(h for h, _ in verdicts.values())
        print(f"\n{'HOLDS' if holds else 'SHORT'}")
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_bytes(orjson.dumps({
            "duration_s": args.duration, "warmup_s": args.warmup, "concurrency": args.concurrency,
            "keys": len(keys), "requests": tally.requests, "errors": tally.errors, "by_kind": tally.by_kind,
            "samples": [fresh, idle, *samples, final],
            "verdict": {k: {"holds": h, "detail": d} for k, (h, d) in verdicts.items()}, "holds": holds,
        }, option=orjson.OPT_INDENT_2))
        print(f"written to {out}")
        return 0 if holds else 1
    finally:
        stack.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=180, help="seconds of load after warm-up")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--keys", type=int, default=200, help="license keys; half of the requests use the first")
    p.add_argument("--warmup", type=float, default=None, help="seconds (default: a fifth of the run, 20-60)")
    p.add_argument("--interval", type=float, default=0, help="seconds between samples (default: about 12 samples)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"comma-separated subset of {','.join(KINDS)}, to find which one a growth comes with")
    args = p.parse_args()
    args.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not args.kinds or set(args.kinds) - set(KINDS):
        p.error(f"--kinds: choose from {', '.join(KINDS)}")
    if args.warmup is None:
        args.warmup = min(60.0, max(20.0, args.duration / 5))
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
