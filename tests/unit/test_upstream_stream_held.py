"""What the upstream keeps of a stream's answer while it waits for the backend's next events:
nothing. Each layer (the transport's reads, the pool's batches, the servicer's messages and
the handler that writes them) lets go of what it handed on; before, the pool held the first
batch for the stream's whole life and every layer held the last one during each wait. A long
answer's events are KBs each, held per open stream.

Counted with sys.getrefcount: once the stream waits for the backend, only this test holds
what it already handed over.
"""
from __future__ import annotations

import asyncio
import sys

from gemini_cli.upstream.v1 import upstream_pb2
from google.api import httpbody_pb2
from services.upstream.code_assist import Chunk
from services.upstream.pool import Pool
from services.upstream.servicer import UpstreamServicer
from services.upstream.backend_stream import BackendStream


class Gate:
    """Items handed out when the test puts them; says when someone waits for one."""

    def __init__(self) -> None:
        self.items: asyncio.Queue = asyncio.Queue()
        self.waiting = asyncio.Event()

    async def get(self):
        self.waiting.set()
        item = await self.items.get()
        self.waiting.clear()
        return item

    async def wait_for_reader(self) -> None:
        await asyncio.wait_for(self.waiting.wait(), 10)
        for _ in range(5):  # whatever else was ready runs first
            await asyncio.sleep(0)


class FakeChunkStream:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def next_batch(self):
        return await self.gate.get()

    async def aclose(self) -> None:
        pass


class FakeCred:
    id, kind = "cred-1", "code_assist"


class FakeEntry:
    cred = FakeCred()
    failures = 0

    def __init__(self, gate: Gate) -> None:
        self.backend = self
        self.gate = gate

    async def open_stream(self, entry, headers, model, body, request_id):
        return FakeChunkStream(self.gate)


class FakePool:
    """The servicer's pool: Pool.stream_batches itself, over a backend the test feeds."""

    def __init__(self, gate: Gate) -> None:
        self.entry = FakeEntry(gate)

    async def run(self, model, op):
        return await op(self.entry, {}), self.entry

    def stream_batches(self, model, body, rid):
        return Pool.stream_batches(self, model, body, rid)  # type: ignore[arg-type]

    def report(self) -> list:
        return []

    def sharing(self) -> None:
        return None


class FakeContext:
    def __init__(self, request: upstream_pb2.GenerateRequest) -> None:
        self.request: upstream_pb2.GenerateRequest | None = request
        self.written: list[upstream_pb2.GenerateResponse] = []

    async def read(self):
        request, self.request = self.request, None
        return request

    async def write(self, msg) -> None:
        self.written.append(msg)

    async def abort_with_status(self, status) -> None:
        raise AssertionError(f"aborted: {status}")


def batch(i: int) -> list[Chunk]:
    return [Chunk(b'{"candidates":[{"content":{"parts":[{"text":"w%d "}]}}]}' % i, None, "trace-1")]


async def test_no_batch_or_message_is_held_while_the_backend_is_awaited() -> None:
    gate = Gate()
    servicer = UpstreamServicer(FakePool(gate), [])  # type: ignore[arg-type]
    request = upstream_pb2.GenerateRequest(model="gemini-2.5-flash", stream=True, coalesce=True,
                                           body=httpbody_pb2.HttpBody(data=b'{"contents":[]}'))
    context = FakeContext(request)
    del request
    handler = asyncio.ensure_future(servicer.generate_call(None, context))  # type: ignore[arg-type]
    try:
        first = batch(1)
        alone = sys.getrefcount(first)
        await gate.wait_for_reader()  # the backend call is open, its first events awaited
        gate.items.put_nowait(first)
        await gate.wait_for_reader()  # sent on; the next events awaited
        assert len(context.written) == 1
        assert sys.getrefcount(first) == alone, "the first batch is still held while the next is awaited"
        # Held by the list and this name (an expression in the assert would be held by pytest).
        written = context.written[-1]
        assert sys.getrefcount(written) == alone + 1, "the message written is still held"
        del written

        second = batch(2)
        gate.items.put_nowait(second)
        await gate.wait_for_reader()
        assert len(context.written) == 2
        assert sys.getrefcount(second) == alone, "the last batch is still held while the next is awaited"
        written = context.written[-1]
        assert sys.getrefcount(written) == alone + 1, "the message written is still held"
        del written

        gate.items.put_nowait(None)
        await asyncio.wait_for(handler, 10)
        datas = [c.data for m in context.written for c in m.chunks]
        assert datas == [first[0].data, second[0].data]
        assert context.written[0].credential_id == "cred-1"
    finally:
        handler.cancel()


class FakeContent:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def readany(self) -> bytes:
        return await self.gate.get()


class FakeResponse:
    status = 200
    headers: dict = {}

    def __init__(self, gate: Gate) -> None:
        self.content = FakeContent(gate)

    def close(self) -> None:
        pass


async def test_the_transport_holds_no_read_while_the_next_is_awaited() -> None:
    gate = Gate()
    batches = BackendStream(FakeResponse(gate), 1 << 20).batches()  # type: ignore[arg-type]
    reader = asyncio.ensure_future(batches.__anext__())
    await gate.wait_for_reader()
    read = b"".join([b"data: ", b'{"a":1}', b"\r\n\r\n"])  # a read of its own, as from a socket
    alone = sys.getrefcount(read)
    gate.items.put_nowait(read)
    events = await reader
    assert events == [b'{"a":1}']
    reader = asyncio.ensure_future(batches.__anext__())
    await gate.wait_for_reader()
    assert sys.getrefcount(read) == alone, "the last read is still held while the next is awaited"
    assert sys.getrefcount(events) == alone, "the events of the last read are still held"
    gate.items.put_nowait(b"")
    try:
        await asyncio.wait_for(reader, 10)
    except StopAsyncIteration:
        pass
    await batches.aclose()
