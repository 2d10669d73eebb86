"""Incremental parser for the backend's server-sent events.

Framing as the Gemini CLI reads it (protocol notes §2): lines end with CR, LF or CRLF;
`data:` lines (one optional space after the colon) are buffered; a blank line ends an event,
whose data lines are joined with "\\n"; comment (`:`), `id:`, `event:` and `retry:` lines
are ignored; there is no `[DONE]` sentinel, the stream ends when the connection closes.

Works on bytes as they come off the socket: a line, even a CRLF pair, may be split across
reads. The usual read (events of one `data:` line, CRLF or LF line ends) is split per read, not
per line in Python; anything else goes through the line parser. `max_event_bytes` bounds what
one event (and one line) may buffer, so a backend that never ends a line cannot grow it without
limit.
"""
from __future__ import annotations

import logging
from typing import Any, AsyncIterable, AsyncIterator

import orjson

log = logging.getLogger(__name__)


class EventTooLarge(ValueError):
    """One event (or one line) is larger than the parser's `max_event_bytes`."""


# Past this much buffered, a long event goes on line by line (its complete lines are moved out of
# the buffer) instead of copying the growing buffer on every read.
_BLOCKS_BELOW = 64 * 1024
_CR = ord("\r")
_LF = ord("\n")


class SSEParser:
    """Feed raw bytes, get back the data payload of every event completed so far."""

    __slots__ = ("_buf", "_data", "_data_size", "_skip_lf", "_max")

    def __init__(self, max_event_bytes: int | None = None) -> None:
        self._buf = bytearray()
        self._data: list[bytes] = []
        self._data_size = 0
        self._max = max_event_bytes
        # The previous read ended with CR: an LF at the start of the next read belongs to it.
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return []
        if not self._data and not self._skip_lf and len(self._buf) < _BLOCKS_BELOW:
            events = self._feed_blocks(chunk)
            if events is not None:
                return events
        return self._feed_lines(chunk)

    def _feed_blocks(self, chunk: bytes) -> list[bytes] | None:
        """The common case, per read rather than per line: the complete events of a read that
        holds nothing but `data: …` lines, one per event, all ending in CRLF or all in LF (what
        backends send). None: the line parser takes this read."""
        buf = self._buf
        text = bytes(buf) + chunk if buf else chunk
        crlf = _CR in text  # an int: `b"\r" in` would build and drop a formatted TypeError first
        if crlf and text.endswith(b"\r"):
            return None  # maybe the CR of a blank line: its event is complete now
        end = b"\r\n\r\n" if crlf else b"\n\n"
        cut = text.rfind(end)
        events: list[bytes] = []
        if cut >= 0:
            done = text[:cut]
            if not done.startswith(b"data: "):
                return None
            events = done[6:].split(b"\r\n\r\ndata: " if crlf else b"\n\ndata: ")
            # No line end but the separators': each event was one data line. (A memchr per
            # event, not done.count(), which walked every byte: ~2.6% of the upstream's
            # instructions per streamed answer.)
            for value in events:
                if _LF in value or (crlf and _CR in value):
                    return None
            events = [value.strip() for value in events]
            if self._max is not None and len(done) > self._max and max(map(len, events)) + 1 > self._max:
                raise EventTooLarge(f"a server-sent event is larger than {self._max} bytes")
            text = text[cut + len(end):]
        if crlf and text and (text.find(b"\n\n") >= 0 or text.find(b"\r\r") >= 0 or text.find(b"\n\r") >= 0):
            return None  # mixed line ends: what is left may hold a complete event
        buf.clear()
        if text:
            buf += text
            if self._max is not None and len(buf) > self._max:
                raise EventTooLarge(f"a server-sent event is larger than {self._max} bytes")
        return events

    def _feed_lines(self, chunk: bytes) -> list[bytes]:
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
        if self._max is not None and len(buf) + self._data_size > self._max:
            raise EventTooLarge(f"a server-sent event is larger than {self._max} bytes")
        return events

    def close(self) -> list[bytes]:
        """End of stream: a final event not followed by a blank line still counts."""
        events: list[bytes] = []
        if self._buf:
            # The per-read path may have left whole lines in the buffer: the line parser takes them.
            pending = bytes(self._buf)
            self._buf.clear()
            events = self._feed_lines(pending)
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
                self._data_size = 0
            return
        if line.startswith(b"data:"):
            value = line[5:]
            if value.startswith(b" "):
                value = value[1:]
            value = value.strip()
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._max is not None and self._data_size > self._max:
                raise EventTooLarge(f"a server-sent event is larger than {self._max} bytes")
        # Anything else (":" comments, id:, event:, retry:, unknown fields) carries nothing for us.


async def iter_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[Any]:
    """JSON value of each event in a byte stream; events that are not valid JSON are dropped."""
    parser = SSEParser()
    async for chunk in chunks:
        for data in parser.feed(chunk):
            value = decode(data)
            if value is not BAD:
                yield value
    for data in parser.close():
        value = decode(data)
        if value is not BAD:
            yield value


BAD = object()  # what decode() returns for an event that is not JSON


def decode(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("dropped an SSE event that is not valid JSON (%d bytes)", len(data))
        return BAD
