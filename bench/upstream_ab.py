"""The upstream's cost per non-streaming call, compared between source trees (issue #15).

    python -m bench.upstream_ab NAME=TREE[;ENV=VALUE...] ... [--measure cpu|instructions|syscalls]
        [--calls 3000] [--concurrency 64] [--rounds 8]

Each NAME=TREE starts one upstream from the source tree TREE (a directory holding `services/`,
e.g. `git archive <commit> | tar -x -C /tmp/a`; the generated stubs come from this checkout's
gen/), with any ENV=VALUE settings added, all against one simulator with one Code Assist
credential. This process calls them with the edge's UpstreamClient (GenerateUnary, a request id
set as the edge sets one) in blocks, A, B, ..., then B, A, ... and so on, and prints per call:
  cpu           the upstream's CPU time (/proc/PID/stat), median of the rounds: what the bench
                reports, but on a shared machine its rounds swing by ±5%;
  instructions  user-space instructions, counted by valgrind's callgrind (instrumentation on
                for the measured blocks only; ~50x slower, so use --calls 400 --concurrency 16
                --rounds 2): repeatable to ~0.5% whatever else the machine does, so changes of
                1-3% show; kernel time (syscalls, thread wake-ups) is not in it;
  syscalls      the upstream's system calls by name (strace -f -c), one block per tree.
E.g. the tree of HEAD against the work tree, by instructions:
    git archive HEAD | tar -x -C /tmp/head
    python -m bench.upstream_ab head=/tmp/head work=. --measure instructions --calls 400 \\
        --concurrency 16 --rounds 2
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

# As the edge and the upstream run (see services/upstream/__main__.py), before grpc is imported.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

import orjson  # noqa: E402
import uvloop  # noqa: E402

from bench.grpc_hop import cpu_seconds  # noqa: E402
from tests import harness  # noqa: E402

MODEL = "gemini-2.5-flash"
BODY = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "rps"}]}]})


def start(name: str, tree: Path, logs: Path, sim_url: str, creds: Path, env: dict[str, str],
          measure: str) -> harness.Proc:
    """harness.start_upstream's settings, but run from `tree` (its cwd and first on the path)."""
    port = harness.free_port()
    full = harness._base_env()
    full["PYTHONPATH"] = os.pathsep.join([str(tree), str(harness.ROOT / "gen")])
    full.update({"UPSTREAM_LISTEN": f"{harness.LOOPBACK}:{port}", "CODE_ASSIST_ENDPOINT": sim_url,
                 "OAUTH_TOKEN_URL": f"{sim_url}/token", "LOG_LEVEL": "INFO",
                 "INTERNAL_TOKENS_FILE": str(harness.internal_auth().tokens_file),
                 "UPSTREAM_METRICS_PORT": str(harness.free_port()), "GEMINI_CREDENTIALS": str(creds)})
    full.update(env)
    argv = [harness.PY, "-m", "services.upstream"]
    if measure == "instructions":
        argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={logs}/callgrind-{name}.%p"] + argv
    with open(logs / f"{name}.log", "ab") as fh:
        popen = subprocess.Popen(argv, cwd=tree, env=full, stdout=fh, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    proc = harness.Proc(name, popen, port, logs / f"{name}.log")
    harness.wait_until(lambda: harness.grpc_serving(proc.addr), proc)
    return proc


def _callgrind(pid: int, *args: str) -> str:
    return subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True,
                          check=True).stdout


def _instructions(pid: int) -> int:
    """User-space instructions since instrumentation went on, all threads."""
    return sum(int(n.replace(",", "")) for n in re.findall(r"Th\s*\d+\s+([\d,]+)", _callgrind(pid, "-e")))


async def run(args: argparse.Namespace) -> None:
    from services.edge.upstream_client import UpstreamClient

    base = Path(tempfile.mkdtemp(prefix="upstream-ab-"))
    logs = base / "logs"
    logs.mkdir()
    sim = harness.start_simulator(logs)
    harness.write_credential(base / "creds" / "bench.json", "rt-bench")
    procs: dict[str, harness.Proc] = {}
    clients: dict[str, UpstreamClient] = {}
    try:
        for spec in args.trees:
            name, _, rest = spec.partition("=")
            tree, *settings = rest.split(";")
            env = dict(s.split("=", 1) for s in settings)
            procs[name] = start(name, Path(tree).resolve(), logs, sim.url, base / "creds", env, args.measure)
        auth = harness.internal_auth().authorization("edge")
        clients = {n: UpstreamClient.connect(p.addr, authorization=auth) for n, p in procs.items()}

        async def block(client: UpstreamClient, calls: int) -> None:
            left = calls

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await client.generate(MODEL, BODY, request_id=uuid.uuid4().hex)
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))

        for client in clients.values():  # warm up: imports, the token, the project, connections
            await block(client, 300)
        if args.measure == "syscalls":
            for name, proc in procs.items():
                out = logs / f"strace-{name}.txt"
                tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(proc.popen.pid)])
                await asyncio.sleep(1.0)  # attached to every thread
                await block(clients[name], args.calls)
                tracer.terminate()
                tracer.wait()
                print(f"{name}: system calls per call")
                for line in out.read_text().splitlines()[2:]:
                    f = line.split()
                    if len(f) >= 5 and f[3].isdigit() and int(f[3]) >= args.calls // 100:
                        print(f"  {f[-1]:16s} {int(f[3]) / args.calls:6.2f}")
            return
        figures: dict[str, list[float]] = {n: [] for n in procs}
        for r in range(args.rounds):
            for name in (list(procs) if r % 2 == 0 else list(reversed(procs))):
                pid = procs[name].popen.pid
                if args.measure == "instructions":
                    _callgrind(pid, "-i", "on")
                    await block(clients[name], args.calls)
                    figures[name].append(_instructions(pid) / args.calls / 1000)
                    _callgrind(pid, "-i", "off")
                else:
                    before = cpu_seconds(pid)
                    await block(clients[name], args.calls)
                    figures[name].append((cpu_seconds(pid) - before) * 1e6 / args.calls)
        unit = "k instructions" if args.measure == "instructions" else "µs CPU"
        for name, values in figures.items():
            print(f"{name:12s} median {statistics.median(values):8.1f} {unit} per call   "
                  f"rounds {[round(v, 1) for v in values]}", flush=True)
    finally:
        for client in clients.values():
            await client.close()
        for proc in [*procs.values(), sim]:
            proc.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="+", help="NAME=TREE[;ENV=VALUE...]")
    p.add_argument("--measure", choices=("cpu", "instructions", "syscalls"), default="cpu")
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rounds", type=int, default=8)
    uvloop.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
