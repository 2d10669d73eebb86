"""What the edge↔upstream gRPC hop costs per call and per message, and its floor (issue #15).

    python -m bench.grpc_hop [--calls 2000] [--concurrency 16] [--rounds 5] [--modes a,b,...]

Servers, each a process of its own so that its CPU can be read from /proc:
  - `floor` and `floorB`: a bare grpc.aio server (bytes in and out, no interceptor) with a
    unary-unary and a unary-stream method: what any grpc.aio hop costs on this machine. floorB
    takes --server-options and its channel --client-options (JSON lists of [name, value]; the
    pseudo-option ["interceptor", 1] installs bench/auth_interceptor.py), to weigh gRPC
    settings against the plain floor in the same run;
  - the real upstream (internal auth on) in front of the simulator, called through the edge's
    UpstreamClient.
Modes (the client side is this process: its event loop and gRPC's poller thread):
  floor_unary, floor_stream1        one call answered by one message, unary-unary / unary-stream
  floor_spaced21                    21 messages 2 ms apart (each alone on the wire)
  floor_spaced21_direct / _edge     the same, each message read with call.read() awaited
                                    directly / as the edge reads (UpstreamStream); with
                                    GRPC_HOP_OLD_CLIENT=path/to/upstream_stream.py (or an
                                    older upstream_client.py) also floor_spaced21_old_edge
                                    (that file's UpstreamStream)
  (each floor mode also as floorB_...)
  hop_generate, hop_generate_legacy a non-streaming answer: GenerateUnary / Generate
  hop_stream21                      21 events arriving together (coalesced into one message)
  hop_spaced21                      21 events 2 ms apart (one message each)
Modes run in interleaved blocks (A, B, C, A, B, C, ...); medians of the rounds are printed as
µs of CPU per call and per message, on each side. Spaced modes run at concurrency 1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

# As the edge and the upstream run (see services/edge/__main__.py), before grpc is imported.
os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")

import orjson  # noqa: E402
import uvloop  # noqa: E402

from tests import harness  # noqa: E402

MODEL = "gemini-2.5-flash"
_JSON = orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "w1 w2"}]},
                                       "finishReason": "STOP"}],
                       "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5}})
# The floor's reply: a GenerateResponse in wire form (chunk = HttpBody{data}), so that it can be
# read as the edge reads the upstream's.
def _field(tag: bytes, data: bytes) -> bytes:
    n, out = len(data), bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return tag + bytes(out) + data


_REPLY = _field(b"\x0a", _field(b"\x12", _JSON))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the floor: a bare grpc.aio server --------------------------------------------------------

async def _serve_floor(port_file: str, options: list) -> None:
    import grpc

    async def unary(request: bytes, context) -> bytes:
        return _REPLY

    async def stream(request: bytes, context):
        n = int(request or b"1")
        for i in range(n):
            if i and n > 1:
                await asyncio.sleep(0.002)
            yield _REPLY

    handlers = {"U": grpc.unary_unary_rpc_method_handler(unary),
                "S": grpc.unary_stream_rpc_method_handler(stream)}
    interceptors = []
    if ["interceptor", 1] in options:  # the upstream's internal-auth check as an interceptor, open to all
        from bench.auth_interceptor import AuthInterceptor
        from services.upstream.internal_auth import Verifier

        interceptors.append(AuthInterceptor(Verifier(None)))
        options = [o for o in options if o[0] != "interceptor"]
    server = grpc.aio.server(interceptors=interceptors, options=[tuple(o) for o in options])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Floor", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    Path(port_file).write_text(str(port))
    await server.wait_for_termination()


def start_floor(log_dir: Path, name: str = "floor", options: str = "[]") -> harness.Proc:
    port_file = log_dir / f"{name}.port"
    port_file.unlink(missing_ok=True)
    proc = harness.spawn(name, [harness.PY, "-m", "bench.grpc_hop", "--serve-floor", str(port_file),
                                "--server-options", options], 0, log_dir)
    harness.wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", proc)
    proc.port = int(port_file.read_text())
    return proc


# --- the measured calls -----------------------------------------------------------------------

def _floor_modes(prefix: str, addr: str, options: list) -> dict:
    import grpc

    channel = grpc.aio.insecure_channel(addr, options=[tuple(o) for o in options])
    unary = channel.unary_unary("/floor.Floor/U")
    stream = channel.unary_stream("/floor.Floor/S")

    async def floor_unary() -> int:
        await unary(b"x")
        return 1

    async def floor_stream1() -> int:
        async for _ in stream(b"1"):
            pass
        return 1

    async def floor_spaced() -> int:
        n = 0
        async for _ in stream(b"21"):
            n += 1
        return n

    from gemini_cli.upstream.v1 import upstream_pb2 as pb
    from services.edge.upstream_stream import UpstreamStream

    typed = channel.unary_stream("/floor.Floor/S", response_deserializer=pb.GenerateResponse.FromString)

    async def floor_spaced_edge_reads() -> int:
        """The floor's stream read as the edge reads the upstream's (UpstreamStream)."""
        n = 0
        async for _ in UpstreamStream(typed(b"21"), count_text=True):
            n += 1
        return n

    async def floor_spaced_direct_reads() -> int:
        """The same stream, each message read with call.read() awaited directly."""
        call = typed(b"21")
        n = 0
        while (await call.read()) is not grpc.aio.EOF:
            n += 1
        return n

    old_stream = None
    if os.environ.get("GRPC_HOP_OLD_CLIENT"):  # A/B against another version of the edge's client
        import importlib.util

        spec = importlib.util.spec_from_file_location("old_upstream_client", os.environ["GRPC_HOP_OLD_CLIENT"])
        old = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = old  # dataclasses look their module up
        spec.loader.exec_module(old)
        old_stream = old.UpstreamStream

    async def floor_spaced_old_edge_reads() -> int:
        n = 0
        async for _ in old_stream(typed(b"21"), count_text=True):
            n += 1
        return n

    return {f"{prefix}_spaced21_old_edge": floor_spaced_old_edge_reads,
            f"{prefix}_unary": floor_unary, f"{prefix}_stream1": floor_stream1, f"{prefix}_spaced21": floor_spaced,
            f"{prefix}_spaced21_edge": floor_spaced_edge_reads, f"{prefix}_spaced21_direct": floor_spaced_direct_reads}


def _modes(client) -> dict:
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "rps"}]}]})
    events21 = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "bench [len=42] [chunks=21]"}]}]})
    spaced = orjson.dumps({"contents": [{"role": "user", "parts": [
        {"text": "bench [len=42] [chunks=21] [delay=2]"}]}]})

    async def hop_generate() -> int:
        await client.generate(MODEL, body)
        return 1

    async def hop_generate_legacy() -> int:
        await client.generate_streamed(MODEL, body)
        return 1

    def hop_stream(b: bytes):
        async def run() -> int:
            s = client.stream(MODEL, b)
            n = 0
            async for _ in s:
                n += 1
            return n
        return run

    return {"hop_generate": hop_generate, "hop_generate_legacy": hop_generate_legacy,
            "hop_stream21": hop_stream(events21), "hop_spaced21": hop_stream(spaced)}


async def _block(fn, calls: int, concurrency: int) -> tuple[int, float]:
    left = calls
    messages = 0

    async def worker() -> None:
        nonlocal left, messages
        while left > 0:
            left -= 1
            n = await fn()
            messages += n

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return messages, 0.0


async def run(args: argparse.Namespace) -> dict:
    from services.edge.upstream_client import UpstreamClient

    base = Path(tempfile.mkdtemp(prefix="grpc-hop-"))
    logs = base / "logs"
    sim = harness.start_simulator(logs)
    harness.write_credential(base / "creds" / "bench.json", "rt-bench")
    up = harness.start_upstream(logs, sim.url, base / "creds", {"LOG_LEVEL": "WARNING"})
    floor = start_floor(logs)
    floor_b = start_floor(logs, "floorB", args.server_options)
    procs = [floor, floor_b, up, sim]
    try:
        client = UpstreamClient.connect(up.addr, authorization=harness.internal_auth().authorization("edge"))
        modes = {**_floor_modes("floor", floor.addr, []),
                 **_floor_modes("floorB", floor_b.addr, json.loads(args.client_options)),
                 **_modes(client)}
        chosen = {m: modes[m] for m in args.modes.split(",")}
        server_of = {m: (floor_b if m.startswith("floorB") else floor if m.startswith("floor") else up)
                     for m in chosen}
        for fn in chosen.values():  # warm up: imports, channels, the credential's token
            await _block(fn, 50, 4)
        me = os.getpid()
        figures: dict[str, dict[str, list[float]]] = {m: {"client": [], "server": [], "client_msg": [],
                                                          "server_msg": []} for m in chosen}
        for _ in range(args.rounds):
            for name, fn in chosen.items():
                calls = args.calls if "spaced" not in name else max(args.calls // 10, 20)
                conc = args.concurrency if "spaced" not in name else 1
                srv = server_of[name].popen.pid
                c0, s0 = cpu_seconds(me), cpu_seconds(srv)
                messages, _ = await _block(fn, calls, conc)
                c1, s1 = cpu_seconds(me), cpu_seconds(srv)
                f = figures[name]
                f["client"].append((c1 - c0) * 1e6 / calls)
                f["server"].append((s1 - s0) * 1e6 / calls)
                f["client_msg"].append((c1 - c0) * 1e6 / max(messages, 1))
                f["server_msg"].append((s1 - s0) * 1e6 / max(messages, 1))
        await client.close()
        out = {m: {k: round(statistics.median(v), 1) for k, v in f.items()} for m, f in figures.items()}
        for m, f in out.items():
            print(f"{m:22s} client {f['client']:8.1f} µs/call  server {f['server']:8.1f} µs/call   "
                  f"per message: client {f['client_msg']:7.1f}  server {f['server_msg']:7.1f}", flush=True)
        return out
    finally:
        for p in procs:
            p.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--modes", default="floor_unary,floor_stream1,hop_generate,hop_generate_legacy,"
                                      "hop_stream21,floor_spaced21,hop_spaced21")
    p.add_argument("--server-options", default="[]",
                   help="JSON list of [name, value] gRPC options for the floorB server")
    p.add_argument("--client-options", default="[]",
                   help="JSON list of [name, value] gRPC options for the floorB channel")
    p.add_argument("--serve-floor", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_floor:
        uvloop.run(_serve_floor(args.serve_floor, json.loads(args.server_options)))
        return
    uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
