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

from tests.unit.test_edge_upstream_stream import BATCH, CALLS, bytes_per_abandoned_call, heap_growth_per_call, serve

MAX_BYTES_PER_CALL = 48


async def _measure() -> float:
    from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc

    started = ended = 0

    class Servicer(pb_grpc.UpstreamServicer):
        async def GenerateUnary(self, request, context):
            nonlocal started, ended
            started += 1
            try:
                await asyncio.Event().wait()  # the answer never comes: the client's batch stays pending
            finally:
                ended += 1

    server, client = await serve(Servicer())

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

    try:
        # Every abandoned call is cancelled at the upstream too: its handler ends (settled_heap
        # fails if they do not).
        grown = await heap_growth_per_call(abandoned, lambda: ended == started)
        assert ended == CALLS + 10 * BATCH, f"{ended} of {CALLS + 10 * BATCH} server handlers ended"
        return grown
    finally:
        await client.close()
        await server.stop(None)


def test_abandoned_unary_calls_end_upstream_and_do_not_grow_the_native_heap() -> None:
    per_call = bytes_per_abandoned_call("tests.unit.test_edge_upstream_unary")
    assert per_call < MAX_BYTES_PER_CALL, f"native heap grew {per_call:.0f} bytes per abandoned call"


if __name__ == "__main__":
    print(f"{asyncio.run(_measure()):.1f}")
