"""One streamed Generate call as the edge reads it (UpstreamStream), what its messages carry
(events, usage) and the output a stream cut before its usage is billed by."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import AsyncIterator

import grpc
import orjson

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from services.edge.upstream_errors import from_rpc_error
from services.future_exceptions import mark_retrieved


@dataclass(slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    thoughts: int = 0
    total: int = 0
    cached: int = 0

    @classmethod
    def from_proto(cls, u: pb.Usage) -> "Usage":
        total = u.total_tokens or (u.prompt_tokens + u.candidates_tokens + u.thoughts_tokens)
        return cls(u.prompt_tokens, u.candidates_tokens, u.thoughts_tokens, total, u.cached_tokens)


def output_chars(chunk: bytes) -> int:
    """Characters of generated output in one Gemini response chunk: text (thoughts included)
    and the JSON of function calls. Chunks that carry usage are not counted (their usage is)."""
    try:
        data = orjson.loads(chunk)
    except orjson.JSONDecodeError:
        return len(chunk)
    n = 0
    cands = data.get("candidates") if isinstance(data, dict) else None
    for cand in cands if isinstance(cands, list) else ():
        content = cand.get("content") if isinstance(cand, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                n += len(text)
            elif "functionCall" in part:
                n += len(orjson.dumps(part["functionCall"]))
    return n


def events_of(msg: pb.GenerateResponse) -> list[bytes]:
    """The backend events a message carries, in order: several in `chunks` (a coalesced
    stream: the events that reached the upstream together), else the one in `chunk`."""
    if msg.chunks:
        return [c.data for c in msg.chunks if c.data]
    data = msg.chunk.data
    return [data] if data else []


# Output of a stream that carried no usage yet is counted (parsed) only when it is needed, or
# when this much of it waits: a cut stream is billed by it, a whole one never needs it. Backends
# send usage only with the last event, so each open stream holds up to this much: 4 KiB (it was
# 64, then 16: 1,000 long answers held 16 MiB). A real answer's events (a few hundred bytes
# each, JSON around the text) pass 16 KiB within a few dozen events, so nearly every answer
# is parsed anyway; a lower bound only parses sooner, not more (orjson, ~1 µs per event), and
# a short answer (the bench's 21 events: ~3 KiB) still never is.
_UNCOUNTED_BYTES = 4 * 1024
# ... or as soon as the oldest of it has waited this long: a stream held open for minutes (a
# slow answer, events seconds apart) is then counted as it goes and keeps about one event
# between two, not 4 KiB each (1,000 held streams: ~4 MiB of the edge's peak). An answer that
# streams within a second is still never parsed: one clock read per message is its whole cost.
_UNCOUNTED_SECONDS = 1.0
_clock = time.monotonic  # the clock of that age (a test sets its own)


def _forget_request(call: grpc.aio.UnaryStreamCall) -> None:
    """grpc.aio's UnaryStreamCall keeps the request it sent (here the serialized body) for as
    long as the call object lives, though it only needs it to send it once. An answer's first
    message means it was sent; a streamed answer then lasts up to minutes, and each open stream
    held a copy of its request (a long conversation's: 100 KB and more)."""
    if getattr(call, "_request", None) is not None:
        call._request = None


class _Waiter:
    """The future a pending read hands its outcome to: the future `next()` awaits (None
    while nobody waits). No reference back to the stream or the read's task: no cycle."""

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: asyncio.Future | None = None


async def _read_into(call: grpc.aio.UnaryStreamCall, box: _Waiter):
    """One read of `call`, its outcome also handed to whoever waits in `box` at that moment.

    As asyncio.shield(read) would, but the waiter is woken by the read's own last step rather
    than by a callback of the read's end, which woke it one event-loop step later: one loop
    step less between a message's arrival and its first byte leaving, for every message."""
    try:
        msg = await call.read()
    except BaseException as exc:
        waiter = box.waiter
        if waiter is not None and not waiter.done():
            if isinstance(exc, asyncio.CancelledError):
                waiter.cancel()
            else:
                waiter.set_exception(exc)
                waiter.add_done_callback(mark_retrieved)  # its awaiter may be cancelled meanwhile
        raise
    waiter = box.waiter
    if waiter is not None and not waiter.done():
        waiter.set_result(msg)
    return msg


class UpstreamStream:
    """One streamed Generate call, read with `next()` (or iterated).

    Reads survive the cancellation of whoever awaits them: each runs in a task of its own that
    `next()` waits for without awaiting it (_read_into: a cancelled waiter leaves the read
    alone), and `cancel()` ends the call, which ends that read. Cancelling the
    task that awaits a gRPC read directly (how a client that leaves reaches the edge) loses the
    read batch's native memory in grpc.aio (grpc/grpc#43360: about 150 bytes per call, never
    freed; the edge grew in a straight line under a soak with abandoned streams).
    Before the first message, what is pending is the batch that receives the response headers,
    and cancelling the call fails it, whichever way (grpc/grpc#43360 again: ~110 bytes per
    stream whose client left before its first chunk): streams ask the upstream to send its
    headers at once (GenerateRequest.early_headers), so that batch is over long before."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, *, count_text: bool = False) -> None:
        self._call = call
        self._read: asyncio.Future | None = None
        self._box: _Waiter | None = None  # where the pending read hands its outcome
        self.usage: Usage | None = None
        self.trace_id = ""
        # Which credential (kind, id) served the call: sent with the first message.
        self.credential_kind = ""
        self.credential_id = ""
        # perf_counter() at the first message (it carries the credential): time to first chunk.
        self.first_at: float | None = None
        self.messages = 0
        self._counted_chars = 0
        self._uncounted: list[bytes] = []
        self._uncounted_bytes = 0
        self._uncounted_since = 0.0  # _clock() when the oldest of them came
        self._count_text = count_text

    @property
    def text_chars(self) -> int:
        """Characters of output streamed in messages without usage: what a stream cut before
        the backend's usage is billed by (see Meter.finish_stream)."""
        if self._uncounted:
            self._counted_chars += sum(map(output_chars, self._uncounted))
            self._uncounted, self._uncounted_bytes = [], 0
        return self._counted_chars

    def _seen(self, msg: pb.GenerateResponse) -> pb.GenerateResponse:
        self.messages += 1
        if self.messages == 1:
            _forget_request(self._call)
        if msg.HasField("usage"):
            # usageMetadata is cumulative in Gemini streams: the last one is the total (and
            # once there is one, the text count is never read).
            self.usage = Usage.from_proto(msg.usage)
            self._count_text = False
            self._uncounted, self._uncounted_bytes = [], 0
        elif self._count_text:
            now = _clock()
            if not self._uncounted:
                self._uncounted_since = now
            for data in events_of(msg):
                self._uncounted.append(data)
                self._uncounted_bytes += len(data)
            if self._uncounted_bytes > _UNCOUNTED_BYTES or now - self._uncounted_since >= _UNCOUNTED_SECONDS:
                _ = self.text_chars
        if msg.trace_id and not self.trace_id:
            self.trace_id = msg.trace_id
        if msg.credential_kind and not self.credential_kind:
            self.credential_kind, self.credential_id = msg.credential_kind, msg.credential_id
            self.first_at = time.perf_counter()
        return msg

    async def next(self) -> pb.GenerateResponse | None:
        read = self._read
        if read is None:
            self._box = _Waiter()
            # create_task, not ensure_future: that asks isfuture() first, which answers False for
            # a coroutine only after raising and dropping an AttributeError.
            read = self._read = asyncio.get_running_loop().create_task(_read_into(self._call, self._box))
            read.add_done_callback(mark_retrieved)
        box = self._box
        assert box is not None
        try:
            if read.done():  # it came while the last one was written: no wait
                msg = read.result()
            else:
                box.waiter = read.get_loop().create_future()
                msg = await box.waiter
        except asyncio.CancelledError:
            box.waiter = None
            if read.done():  # the call itself was cancelled (ours, by cancel())
                self._read = self._box = None
            raise  # else our caller was cancelled: the read goes on until cancel() or its message
        except grpc.aio.AioRpcError as exc:
            self._read = self._box = None
            raise from_rpc_error(exc) from None
        # Neither the read nor its waiter keeps the message once it is handed on.
        self._read = self._box = None
        box.waiter = None
        if msg is grpc.aio.EOF:
            return None
        return self._seen(msg)

    async def __aiter__(self) -> AsyncIterator[pb.GenerateResponse]:
        while (msg := await self.next()) is not None:
            yield msg

    def cancel(self) -> None:
        # Safe to call at any time; tells the upstream to stop working (and free its backend call).
        if not self._call.done():
            self._call.cancel()
