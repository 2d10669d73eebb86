"""The ASGI response the simulator sends: timing, faults and cancellation detection in one place.

A reply is fully computed before the first byte goes out (answers are pure functions of
the request); this class only decides *how* it is delivered: after a latency, chunk by
chunk with delays, cut off mid-body, or never. When the delivery involves waiting, a
watcher task listens for `http.disconnect` so a client that goes away is noticed at once
and recorded as `cancelled`. The record also says what delivery did: `slept`, the seconds of
delay it waited out (latency, between and before pieces), and `sent`, the body pieces written;
tests prove a delay or an early stop by these, not by timing the client.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .record import RequestLog


class Reply(Response):
    def __init__(self, status: int, pieces: list[bytes], content_type: bytes, *, entry: dict[str, Any],
                 streaming: bool = False, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status_code = status
        self.pieces = pieces
        self.streaming = streaming
        self.entry = entry
        self.raw_headers = [(b"content-type", content_type), *(headers or [])]
        if not streaming:
            self.raw_headers.append((b"content-length", str(sum(map(len, pieces))).encode()))
        self.latency = 0.0        # before the status line
        self.before_each = 0.0    # before every piece (fault "slow")
        self.between: float | None = None  # between pieces; None = the simulator's chunk_delay
        self.cut_after: int | None = None  # pieces sent before the connection is dropped
        self.hold_after: int | None = None  # pieces sent before waiting for a release
        self._holds: set[asyncio.Event] = set()
        self.hang = False
        self._started = False

    def burst(self) -> None:
        """Send the whole body in one write (every event of a stream in one TCP send)."""
        self.pieces = [b"".join(self.pieces)]

    def cut(self, after: int) -> None:
        """Drop the connection after `after` pieces, leaving the body unfinished on the wire."""
        if not self.streaming:
            # One body: send its first half over chunked encoding, then drop the connection.
            body = b"".join(self.pieces)
            self.pieces = [body[: len(body) // 2], body[len(body) // 2:]]
            self.raw_headers = [h for h in self.raw_headers if h[0] != b"content-length"]
            after = 1
        self.cut_after = after

    def hold(self, after: int, holds: set[asyncio.Event]) -> None:
        """Stop after `after` pieces until the test releases every held reply (POST
        /_sim/release): a client that has those pieces got them while the rest was held back."""
        self.hold_after = after
        self._holds = holds

    async def _held(self) -> None:
        gate = asyncio.Event()
        self._holds.add(gate)
        try:
            await gate.wait()
        finally:
            self._holds.discard(gate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        waits = self.hold_after is not None or self.hang or self.latency > 0 or self.before_each > 0 or (bool(self.between) and len(self.pieces) > 1)
        cancelled = False
        try:
            if waits:
                cancelled = await self._watched(receive, send)
            else:
                await self._deliver(send)
        except OSError:  # the transport refused a write: the client is gone
            cancelled = True
        finally:
            RequestLog.finish(self.entry, self.status_code if self._started else None, cancelled)

    async def _watched(self, receive: Receive, send: Send) -> bool:
        sender = asyncio.ensure_future(self._deliver(send))
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((sender, watcher), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            sender.cancel()
            watcher.cancel()
            raise
        watcher.cancel()
        if sender.done():
            sender.result()
            return False
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        return True

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.entry["slept"] = round(self.entry.get("slept", 0.0) + seconds, 6)

    async def _deliver(self, send: Send) -> None:
        self.entry["slept"], self.entry["sent"] = 0.0, 0
        if self.hang:
            await asyncio.Event().wait()  # until the watcher sees the client leave
        if self.latency > 0:
            await self._pause(self.latency)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        self._started = True
        pieces = self.pieces
        last = len(pieces) - 1
        for i, piece in enumerate(pieces):
            if i == self.cut_after:
                return  # returning with the body unfinished makes uvicorn close the socket
            if i == self.hold_after:
                await self._held()
            if i and self.between:
                await self._pause(self.between)
            if self.before_each > 0:
                await self._pause(self.before_each)
            self.entry["sent"] = i + 1  # before the write: a client that has the piece sees it counted
            await send({"type": "http.response.body", "body": piece,
                        "more_body": i != last or self.cut_after is not None})
        if self.cut_after is not None:
            return
        if not pieces:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
