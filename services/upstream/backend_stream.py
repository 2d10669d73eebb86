"""A streamed backend answer (Transport.open_stream): its error body, or its server-sent
events as they arrive, each read's events as one batch."""
from __future__ import annotations

from time import perf_counter
from typing import AsyncIterator

import aiohttp

from .backend_wait import add_backend_wait
from .errors import TransportError
from .sse import EventTooLarge, SSEParser
from .transport_failures import describe_failure

MAX_ERROR_BODY = 64 * 1024


def _buffered_before_failure(content: aiohttp.StreamReader) -> bytes:
    """What the backend sent before its connection broke. aiohttp raises a failure that arrives
    in the same read as the last bytes before it hands those bytes over (StreamReader.readany
    checks its exception first), so they are taken here, past that check."""
    failure = content.exception()
    content._exception = None  # noqa: SLF001 — no public way to read past a set exception
    try:
        return content.read_nowait(-1)
    except (RuntimeError, aiohttp.ClientError):
        return b""
    finally:
        content._exception = failure  # noqa: SLF001


class BackendStream:
    """An answer whose body is read as it comes. `status`/`headers` are known; read either
    `error_body()` or `events()`; always `aclose()` (closing before the end drops the
    connection, which is how a caller's cancellation reaches the backend)."""

    __slots__ = ("status", "headers", "_resp", "_max_event")

    def __init__(self, resp: aiohttp.ClientResponse, max_event_bytes: int) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self._max_event = max_event_bytes

    async def error_body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """At most `limit` bytes of the body (enough for any error); what is left is dropped."""
        content = self._resp.content
        parts: list[bytes] = []
        total = 0
        try:
            while total < limit:
                chunk = await content.readany()
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # what arrived is all there is to show
        return b"".join(parts)[:limit]

    async def events(self) -> AsyncIterator[bytes]:
        """The data of each server-sent event, in order, until the body ends. Transport
        failures (and an event over BACKEND_MAX_RESPONSE_BYTES) raise TransportError."""
        batches = self.batches()
        try:
            async for batch in batches:
                for data in batch:
                    yield data
        finally:
            await batches.aclose()

    async def batches(self) -> AsyncIterator[list[bytes]]:
        """As events(), but the events that one read brought (everything the backend had sent
        by then) come as one list: never empty, never waiting for more than is there."""
        parser = SSEParser(self._max_event)
        content = self._resp.content
        try:
            broken: BaseException | None = None
            while True:
                began = perf_counter()
                try:
                    chunk = await content.readany()
                except aiohttp.ClientPayloadError as exc:
                    # The events that arrived with the break are the caller's: hand them on first.
                    chunk, broken = _buffered_before_failure(content), exc
                    if not chunk:
                        raise
                finally:
                    add_backend_wait(began)
                if not chunk:
                    break
                batch = parser.feed(chunk)
                del chunk  # neither the read nor its events are held while the next read waits
                if batch:
                    yield batch
                del batch
                if broken is not None:
                    raise broken
            batch = parser.close()
            if batch:
                yield batch
        except EventTooLarge:
            raise TransportError(f"backend sent an event larger than {self._max_event} bytes", retry=False) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                raise TransportError("backend stream stalled (nothing within the read timeout)", timeout=True) from None
            raise describe_failure(exc, "mid-stream") from None

    async def aclose(self) -> None:
        # A body read to its end already went back to the pool; otherwise this drops it.
        self._resp.close()
