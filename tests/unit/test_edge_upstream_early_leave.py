"""A stream whose client leaves before its first chunk: the edge's client against the upstream's
real gRPC servicer (its backend never answers), in one process.

Until a call's response headers arrive, grpc.aio keeps a batch open that receives them. A call
cancelled while it waits fails that batch, and grpc.aio never frees a batch that fails or whose
task is cancelled (grpc/grpc#43360): the edge grew ~110 bytes of native heap per stream whose
client left before the first chunk (~200 for a GenerateChunked call), for good. No way of
cancelling avoids it on the client, so the edge asks the upstream to send the headers at once
(GenerateRequest.early_headers): the batch then completes long before the first chunk, and a
client that leaves finds only the read of the first message pending, which the edge ends
cleanly (tests/unit/test_edge_upstream_stream.py).

Measured in a process of its own (this module run as a script, the call kind as argument), as
test_edge_upstream_stream.py does: native heap growth per abandoned stream after a warm-up.
"""
from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from tests.harness import ROOT, _base_env
from tests.unit.test_edge_upstream_stream import BATCH, CALLS, heap_growth_per_call

# With the leak ~110 bytes per abandoned stream (~200 chunked), without it 10-15 bytes of noise.
MAX_BYTES_PER_CALL = 48


class SilentBackend:
    """The upstream's pool with a backend that has not answered yet (and never will)."""

    def __init__(self) -> None:
        self.started = self.ended = 0

    def report(self) -> list:
        return []

    def sharing(self) -> None:
        return None

    async def stream_batches(self, model: str, body, rid: str):
        self.started += 1
        try:
            await asyncio.Event().wait()
            yield  # never reached
        finally:
            self.ended += 1


async def _measure(kind: str) -> float:
    import grpc

    from services.edge.generate_wire import chunked_parts
    from services.edge.upstream_client import UpstreamClient
    from services.edge.upstream_stream import UpstreamStream
    from services.upstream.internal_auth import Verifier
    from services.upstream.server import add_servicer
    from services.upstream.servicer import UpstreamServicer

    backend = SilentBackend()
    server = grpc.aio.server()
    add_servicer(UpstreamServicer(backend, []), server, Verifier(None))  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = UpstreamClient.connect(f"127.0.0.1:{port}")

    def open_stream() -> UpstreamStream:
        if kind == "chunked":  # the call a large body goes with (GenerateChunked), with a small body
            parts = chunked_parts("gemini-2.5-flash", b"{}", True, "", "")
            return UpstreamStream(client._generate_chunked(parts, timeout=600.0))
        return client.stream("gemini-2.5-flash", b"{}")

    async def abandoned() -> None:
        expected = backend.started + BATCH
        streams = [open_stream() for _ in range(BATCH)]
        readers = [asyncio.ensure_future(s.next()) for s in streams]
        end = asyncio.get_running_loop().time() + 60.0
        while backend.started < expected:  # every call waits for the backend: the first reads wait
            assert asyncio.get_running_loop().time() < end, [r.exception() for r in readers if r.done()][:1]
            await asyncio.sleep(0.001)
        for reader in readers:
            assert not reader.done()
            reader.cancel()  # the client left: the route's task is cancelled (unless_disconnected)
        for stream, reader in zip(streams, readers):
            try:
                await reader
            except asyncio.CancelledError:
                pass
            stream.cancel()  # as every stream route does when its first read fails

    try:
        # Every abandoned call is cancelled at the upstream too: its backend stream ends
        # (settled_heap fails if they do not).
        grown = await heap_growth_per_call(abandoned, lambda: backend.ended == backend.started)
        assert backend.ended == CALLS + 10 * BATCH, f"{backend.ended} of {CALLS + 10 * BATCH} backend calls ended"
        return grown
    finally:
        await client.close()
        await server.stop(None)


@pytest.mark.parametrize("kind", ["generate", "chunked"])
def test_streams_abandoned_before_the_first_chunk_do_not_grow_the_native_heap(kind: str) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.unit.test_edge_upstream_early_leave", kind], cwd=ROOT,
                         env=_base_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    per_call = float(out.stdout.strip().splitlines()[-1])
    assert per_call < MAX_BYTES_PER_CALL, f"native heap grew {per_call:.0f} bytes per stream abandoned early"


if __name__ == "__main__":
    print(f"{asyncio.run(_measure(sys.argv[1])):.1f}")
