"""Incremental parser for the backend's server-sent events.

Framing as the Gemini CLI reads it (protocol notes §2): lines end with CR, LF or CRLF;
`data:` lines (one optional space after the colon) are buffered; a blank line ends an event,
whose data lines are joined with "\\n"; comment (`:`), `id:`, `event:` and `retry:` lines
are ignored; there is no `[DONE]` sentinel, the stream ends when the connection closes.

Works on bytes as they come off the socket: a line, even a CRLF pair, may be split across
reads.
"""
from __future__ import annotations

import logging
from typing import Any, AsyncIterable, AsyncIterator

import orjson

log = logging.getLogger(__name__)


class SSEParser:
    """Feed raw bytes, get back the data payload of every event completed so far."""

    __slots__ = ("_buf", "_data", "_skip_lf")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data: list[bytes] = []
        # The previous read ended with CR: an LF at the start of the next read belongs to it.
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf
        buf += chunk
        events: list[bytes] = []
        start = 0
        n = len(buf)
        while start < n:
            lf = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, lf if lf >= 0 else n)
            if cr >= 0:
                end, nxt = cr, cr + 1
                if nxt < n:
                    if buf[nxt] == 0x0A:
                        nxt += 1
                else:
                    self._skip_lf = True
            elif lf >= 0:
                end, nxt = lf, lf + 1
            else:
                break
            self._line(bytes(buf[start:end]), events)
            start = nxt
        del buf[:start]
        return events

    def close(self) -> list[bytes]:
        """End of stream: a final event not followed by a blank line still counts."""
        events: list[bytes] = []
        if self._buf:
            self._line(bytes(self._buf), events)
            self._buf.clear()
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[bytes]) -> None:
        if not line:
            if self._data:
                events.append(b"\n".join(self._data))
                self._data = []
            return
        if line.startswith(b"data:"):
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            self._data.append(value.strip())
        # Anything else (":" comments, id:, event:, retry:, unknown fields) carries nothing for us.


async def iter_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[Any]:
    """JSON value of each event in a byte stream; events that are not valid JSON are dropped."""
    parser = SSEParser()
    async for chunk in chunks:
        for data in parser.feed(chunk):
            value = _decode(data)
            if value is not _BAD:
                yield value
    for data in parser.close():
        value = _decode(data)
        if value is not _BAD:
            yield value


_BAD = object()


def _decode(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("dropped an SSE event that is not valid JSON (%d bytes)", len(data))
        return _BAD
