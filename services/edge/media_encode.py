"""Base64 of a fetched body, encoded as it arrives (the one copy of the media the edge keeps)."""
from __future__ import annotations

import base64

from services.edge.media_sniff import SNIFF_BYTES


class Encoded(list):
    """Base64 text in pieces (bytes or bytearray, sent one after the other); `text()` joins them."""

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self)

    def text(self) -> str:
        return b"".join(self).decode("ascii")


class Encoder:
    """Base64 of a body: encoded as it arrives into one buffer of the final size when the size
    is declared; without a declared length the raw chunks are kept as they come (the cheapest
    way to hold bytes that a budget may still refuse) and encoded into one buffer at the end.
    Keeps the first SNIFF_BYTES raw bytes."""

    def __init__(self, size: int | None) -> None:
        self._buf: bytearray | None = bytearray((size + 2) // 3 * 4) if size else None
        self._pos = 0
        self._raw: list[bytes] = []  # without a declared length, or past it
        self._carry = b""
        self.head = b""

    def feed(self, chunk: bytes) -> None:
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[:SNIFF_BYTES - len(self.head)]
        if self._buf is None or self._raw:
            self._raw.append(chunk)
            return
        data = self._carry + chunk if self._carry else chunk
        whole = len(data) - len(data) % 3
        encoded = base64.b64encode(memoryview(data)[:whole]) if whole else b""
        end = self._pos + len(encoded)
        if end > len(self._buf) or (end == len(self._buf) and len(data) > whole):
            # More than declared (the client library normally refuses it): the rest as raw.
            self._raw.append(chunk)
            return
        self._carry = bytes(data[whole:])
        self._buf[self._pos:end] = encoded
        self._pos = end

    def finish(self) -> Encoded:
        out = Encoded()
        if self._buf is not None:
            if not self._raw:
                if self._carry:
                    tail = base64.b64encode(self._carry)
                    self._buf[self._pos:self._pos + len(tail)] = tail
                    self._pos += len(tail)
                if self._pos < len(self._buf):
                    del self._buf[self._pos:]
                out.append(self._buf)
                self._buf = None
                return out
            # Past the declared length: what was encoded so far goes on with the rest below.
            self._raw.insert(0, self._carry)
            out.append(self._buf[:self._pos])
            self._buf = None
        total = sum(len(c) for c in self._raw)
        buf = bytearray((total + 2) // 3 * 4)
        pos, carry = 0, b""
        raw, self._raw = self._raw, []
        for i in range(len(raw)):
            data = carry + raw[i] if carry else raw[i]
            raw[i] = b""  # each raw chunk is let go once encoded
            whole = len(data) - len(data) % 3
            carry = bytes(data[whole:])
            encoded = base64.b64encode(memoryview(data)[:whole])
            buf[pos:pos + len(encoded)] = encoded
            pos += len(encoded)
        if carry:
            tail = base64.b64encode(carry)
            buf[pos:pos + len(tail)] = tail
            pos += len(tail)
        del buf[pos:]
        out.append(buf)
        return out
