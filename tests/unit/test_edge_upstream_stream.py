"""UpstreamStream under cancellation, against a real gRPC server (issue #16).

A client that leaves in the middle of a stream reaches the edge as the cancellation of the task
that is waiting for the next message from the upstream. grpc.aio loses the native memory of a
read batch whose awaiting task is cancelled (grpc/grpc#43360), so the edge grew by ~1 KiB per
request in a soak with abandoned streams. The stream's reads must survive that cancellation and
end with the call instead.

The measurement runs in a process of its own (this module, run as a script), so the test
process's allocations do not blur it: the native heap in use (glibc mallinfo2) per abandoned
stream, after a warm-up.
"""
from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from typing import Awaitable, Callable

from services.edge.stats import native_heap_bytes
from tests.harness import ROOT, _base_env

CALLS = 3000
BATCH = 50
# With the leak ~100 bytes per abandoned stream (a read batch), without it 10-15 bytes of noise.
MAX_BYTES_PER_CALL = 48


def heap_in_use() -> int:
    used = native_heap_bytes()
    assert used is not None, "this measurement needs glibc's mallinfo2"
    return used


async def settled_heap(over: Callable[[], bool], deadline_s: float = 60.0) -> int:
    """The native heap in use once the abandoned calls are over: `over()` (every server handler
    has ended: the cancellation crossed the wire, so the client's core is done with those calls),
    then the lowest of samples taken until it stops shrinking. A fixed pause (0.2 s) here let a
    loaded machine count calls whose completions were still on their way as growth."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not over():
        assert loop.time() < end, "the abandoned calls did not end at the server"
        await asyncio.sleep(0.02)
    gc.collect()
    low, calm = heap_in_use(), 0
    while calm < 5 and loop.time() < end:  # a leak stays in every sample; pending work does not
        await asyncio.sleep(0.05)
        gc.collect()
        now = heap_in_use()
        low, calm = (now, 0) if now < low else (low, calm + 1)
    return low


async def heap_growth_per_call(batch: Callable[[], Awaitable[object]], over: Callable[[], bool]) -> float:
    """Native heap growth per call over CALLS calls that `batch()` abandons BATCH at a time,
    measured after a warm-up (channel, pools, first-use caches); `over()`: see settled_heap."""
    async def batches(n: int) -> int:
        for _ in range(n // BATCH):
            await batch()
        return await settled_heap(over)

    before = await batches(10 * BATCH)
    return (await batches(CALLS) - before) / CALLS


async def serve(servicer):
    """A grpc.aio server on a loopback port with `servicer`, and the edge's client to it."""
    import grpc

    from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc
    from services.edge.upstream_client import UpstreamClient

    server = grpc.aio.server()
    pb_grpc.add_UpstreamServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, UpstreamClient.connect(f"127.0.0.1:{port}")


async def _measure() -> float:
    from gemini_cli.upstream.v1 import upstream_pb2 as pb
    from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc

    started = ended = 0

    class Servicer(pb_grpc.UpstreamServicer):
        async def Generate(self, request, context):
            nonlocal started, ended
            started += 1
            try:
                msg = pb.GenerateResponse()
                msg.chunk.data = b'{"candidates": []}'
                yield msg
                await asyncio.Event().wait()  # the next message never comes: the client's read stays pending
            finally:
                ended += 1

    server, client = await serve(Servicer())

    async def abandoned() -> None:
        stream = client.stream("gemini-2.5-flash", b"{}")
        assert await stream.next() is not None
        reader = asyncio.ensure_future(stream.next())
        for _ in range(5):
            await asyncio.sleep(0)  # the read of the second message is under way
        assert not reader.done()
        reader.cancel()  # the client left: the route's task is cancelled, as StreamResponse does
        try:
            await reader
        except asyncio.CancelledError:
            pass
        stream.cancel()

    try:
        return await heap_growth_per_call(lambda: asyncio.gather(*(abandoned() for _ in range(BATCH))),
                                          lambda: ended == started)
    finally:
        await client.close()
        await server.stop(None)


def bytes_per_abandoned_call(module: str) -> float:
    """Runs `module`'s measurement in a fresh interpreter (a clean native heap) and returns the
    native heap growth per abandoned call it printed last."""
    out = subprocess.run([sys.executable, "-m", module], cwd=ROOT,
                         env=_base_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return float(out.stdout.strip().splitlines()[-1])


def test_abandoned_streams_do_not_grow_the_native_heap() -> None:
    per_call = bytes_per_abandoned_call("tests.unit.test_edge_upstream_stream")
    assert per_call < MAX_BYTES_PER_CALL, f"native heap grew {per_call:.0f} bytes per abandoned stream"


async def test_an_open_stream_holds_no_copy_of_its_request() -> None:
    """Once the answer has started, nothing in the edge keeps the request: a streamed answer
    lasts minutes, and a long conversation's request is 100 KB and more per open stream."""
    import tracemalloc

    from gemini_cli.upstream.v1 import upstream_pb2 as pb
    from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc
    from services.edge import generate_wire, upstream_client, upstream_stream

    class Servicer(pb_grpc.UpstreamServicer):
        async def Generate(self, request, context):
            msg = pb.GenerateResponse()
            msg.chunk.data = b'{"candidates": []}'
            yield msg
            await asyncio.Event().wait()

    server, client = await serve(Servicer())
    size = 512 * 1024  # a GenerateRequest of its own (below CHUNKED_ABOVE)
    streams = []
    tracemalloc.start()
    try:
        for _ in range(8):
            stream = client.stream("gemini-2.5-flash", b"{" + b" " * size + b"}")
            assert await stream.next() is not None
            streams.append(stream)
        gc.collect()
        # What the edge's client allocated and still holds (the server runs in this process
        # too, and keeps its own copy of each request: not the edge's business).
        edge = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, m.__file__) for m in (upstream_client, generate_wire, upstream_stream)])
        held = sum(s.size for s in edge.statistics("filename")) / len(streams)
    finally:
        tracemalloc.stop()
        for stream in streams:
            stream.cancel()
        await client.close()
        await server.stop(None)
    assert held < size / 8, f"each open stream holds {held / 1024:.0f} KiB after a {size // 1024} KiB request"


if __name__ == "__main__":
    print(f"{asyncio.run(_measure()):.1f}")
