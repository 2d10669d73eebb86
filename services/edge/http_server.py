"""The edge's HTTP/1.1 protocol: uvicorn's httptools protocol with three changes.

- A response's status line and headers leave in the same write (one syscall, one TCP segment)
  as its first body bytes, instead of a write of their own: for a unary answer that is one
  write instead of two, for a stream the first chunk travels with the headers. Envoy then
  reads and forwards one segment, not two. The headers are held for at most the rest of the
  current event-loop step (a stream whose first chunk is not ready yet still sends its headers
  at once), and a HEAD response, which has no body, is not held at all.
- A request can be told when its client goes away without awaiting `receive()` in a task of
  its own: the connection lists callbacks (scope["extensions"][DISCONNECT]) and calls them
  when it is lost. services/edge/streaming.py uses that instead of a watcher task per request.
- Less memory per open connection (issue #15: Envoy holds one per open stream): the flow
  control's and each request's events are LightEvents and the pipeline queue a list, where
  uvicorn's asyncio.Events and deque allocate ~0.6 KiB each at creation, unused while a stream
  is held (~2.4 MiB at 1,000 held streams).

Measured against uvicorn+httptools as is and against granian (ASGI): see the commit message.
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# The scope extension naming a request's connection's `DisconnectSignal`.
DISCONNECT = "gateway.disconnect"


class DisconnectSignal:
    """Callbacks to run once when a connection is lost (one per connection)."""

    __slots__ = ("callbacks", "lost")

    def __init__(self) -> None:
        self.callbacks: list[Callable[[], None]] = []
        self.lost = False

    def add(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the connection is lost (at once if it already is)."""
        if self.lost:
            callback()
        else:
            self.callbacks.append(callback)

    def discard(self, callback: Callable[[], None]) -> None:
        try:
            self.callbacks.remove(callback)
        except ValueError:
            pass

    def fire(self) -> None:
        self.lost = True
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            callback()


class LightEvent:
    """What uvicorn needs of an asyncio.Event (set, clear, is_set, wait), without the deque
    asyncio.Event allocates for waiters at creation (~0.6 KiB, issue #15): uvicorn keeps two
    per open request (its flow control's "writable" event and the request's message event),
    and while a stream is held neither has a waiter (the edge learns of a lost client from
    DisconnectSignal, and writes wait only when the transport's buffer is full)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._value = value
        self._waiters: list[asyncio.Future] | None = None  # made by the first wait()

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self._waiters or ():
                if not fut.done():
                    fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
            return True
        finally:
            self._waiters.remove(fut)


class _Pipeline(list):
    """uvicorn's queue of pipelined requests (it appends on the left and pops on the right) as a
    list: an empty deque allocates its first block (~0.6 KiB) at once, one per connection,
    and a request is almost never pipelined behind another."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


# What uvicorn writes before a response starts (the only write that is not the response's head
# or body): never held.
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _HeadHeldTransport:
    """The transport as one request's cycle sees it: the header block (the first write other
    than a 100 Continue) waits for the next write or the end of the loop step.

    It keeps no reference to the cycle (which references it): a cycle would make every
    request's cycle, scope and event cyclic garbage, left for the cyclic GC to find."""

    __slots__ = ("_transport", "_head", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._loop: asyncio.AbstractEventLoop | None = loop  # None once the head went out

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        if self._loop is not None and data != _CONTINUE:
            # uvicorn writes the status line and headers in one call, the first of the response
            # (a 100 Continue is written before that, and not held).
            self._head = data
            self._loop.call_soon(self.flush)
            self._loop = None
            return
        self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class EdgeHttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.disconnect_signal = DisconnectSignal()
        self.flow._is_writable_event = LightEvent(True)  # type: ignore[assignment]
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.disconnect_signal.fire()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app) -> None:
        scope = cycle.scope
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = extensions = {}  # type: ignore[typeddict-unknown-key]
        extensions[DISCONNECT] = self.disconnect_signal
        cycle.message_event = LightEvent(cycle.message_event.is_set())  # type: ignore[assignment]
        if scope["method"] != "HEAD":
            cycle.transport = _HeadHeldTransport(cycle.transport, self.loop)  # type: ignore[assignment]
        super()._start_asgi_task(cycle, app)
