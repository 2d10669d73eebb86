"""bench/floor_parts.py's RawHttp: which moment of a streamed answer it times."""
from __future__ import annotations

import asyncio

from bench.floor_parts import RawHttp

GAP = 0.2  # between the head and the first event


async def _serve_one_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(GAP)
    event = b"data: {}\r\n\r\n"
    writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
    await writer.drain()
    writer.close()


async def _first(first_body: bool) -> tuple[float, float]:
    server = await asyncio.start_server(_serve_one_stream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await RawHttp("127.0.0.1", port, b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
                             first_body=first_body).one()
    finally:
        server.close()


def test_first_body_times_the_first_event_not_the_head() -> None:
    first, total = asyncio.run(_first(True))
    assert GAP <= first <= total


def test_by_default_the_head_is_timed() -> None:
    first, total = asyncio.run(_first(False))
    assert first < GAP <= total
