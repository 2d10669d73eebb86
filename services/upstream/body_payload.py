"""A backend request's body as aiohttp sends it: bytes, one view, or several buffers (a
request spliced around inline media, never joined into one copy when large)."""
from __future__ import annotations

from typing import Sequence

from aiohttp import payload as aiohttp_payload

Body = bytes | memoryview | Sequence[bytes | memoryview]


class _Parts(aiohttp_payload.Payload):
    """A body sent as several buffers one after the other (never joined into one copy)."""

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        super().__init__(parts, content_type=None)
        self._size = sum(len(p) for p in parts)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"".join(self._value)

    async def write(self, writer) -> None:  # type: ignore[override]
        for part in self._value:
            if part:
                await writer.write(part)

    async def write_with_length(self, writer, content_length: int | None) -> None:  # type: ignore[override]
        await self.write(writer)


# Up to this size a body given in parts is joined: the copy costs less than the extra send()
# per part (the first write also carries the request head: one syscall for a small request).
_JOIN_BELOW = 128 * 1024


def to_payload(body: Body | None) -> bytes | aiohttp_payload.Payload | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, memoryview):
        return aiohttp_payload.BytesPayload(body, content_type=None)
    if sum(len(p) for p in body) <= _JOIN_BELOW:
        return b"".join(body)
    return _Parts(body)
