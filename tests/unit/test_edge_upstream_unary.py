"""The edge's non-streaming call (GenerateUnary) when its client leaves, against a real gRPC
server: the call ends at the upstream, and no native memory is lost per abandoned call.

A client that leaves reaches the edge as the cancellation of the task awaiting
`UpstreamClient.generate`. grpc.aio loses the native memory of a batch whose awaiting task is
cancelled (grpc/grpc#43360); the edge cancels the call in gRPC's core instead and lets the
call's own task end with it. Measured in a process of its own (this module run as a script), as
tests/unit/test_edge_upstream_stream.py does for streams.
"""
from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

from services.edge.stats import native_heap_bytes
from tests.harness import ROOT, _base_env

CALLS = 3000
BATCH = 50
MAX_BYTES_PER_CALL = 48


async def _measure() -> float:
    import grpc

    from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc
    from services.edge.upstream_client import UpstreamClient

    started = ended = 0

    class Servicer(pb_grpc.UpstreamServicer):
        async def GenerateUnary(self, request, context):
            nonlocal started, ended
            started += 1
            try:
                await asyncio.Event().wait()  # the answer never comes: the client's batch stays pending
            finally:
                ended += 1

    server = grpc.aio.server()
    pb_grpc.add_UpstreamServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = UpstreamClient.connect(f"127.0.0.1:{port}")

    async def abandoned() -> None:
        expected = started + BATCH
        waiters = [asyncio.ensure_future(client.generate("gemini-2.5-flash", b"{}")) for _ in range(BATCH)]
        while started < expected:  # every call reached the upstream's handler
            await asyncio.sleep(0.001)
        for waiter in waiters:
            assert not waiter.done()
            waiter.cancel()  # the client left: the route's task is cancelled
        for waiter in waiters:
            try:
                await waiter
            except asyncio.CancelledError:
                pass

    async def batches(n: int) -> None:
        for _ in range(n // BATCH):
            await abandoned()
        gc.collect()
        await asyncio.sleep(0.2)  # let the cancelled calls' completions arrive

    try:
        await batches(10 * BATCH)  # warm-up: channel, pools, first-use caches
        used = native_heap_bytes()
        assert used is not None, "this measurement needs glibc's mallinfo2"
        before = used
        await batches(CALLS)
        grown = (native_heap_bytes() - before) / CALLS
        for _ in range(50):
            if ended == CALLS + 10 * BATCH:
                break
            await asyncio.sleep(0.1)
        # Every abandoned call was cancelled at the upstream too (its handler ended).
        assert ended == CALLS + 10 * BATCH, f"{ended} of {CALLS + 10 * BATCH} server handlers ended"
        return grown
    finally:
        await client.close()
        await server.stop(None)


def test_abandoned_unary_calls_end_upstream_and_do_not_grow_the_native_heap() -> None:
    out = subprocess.run([sys.executable, "-m", "tests.unit.test_edge_upstream_unary"], cwd=ROOT,
                         env=_base_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    per_call = float(out.stdout.strip().splitlines()[-1])
    assert per_call < MAX_BYTES_PER_CALL, f"native heap grew {per_call:.0f} bytes per abandoned call"


if __name__ == "__main__":
    print(f"{asyncio.run(_measure()):.1f}")
