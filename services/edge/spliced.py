"""Large media kept out of a request's JSON while it is translated, and spliced back into the
bytes sent to the upstream.

A 20 MiB image is 27 MiB of base64. Every step that held it whole — a Python str parsed from
the client's body or decoded from a fetch, a part's JSON, the joined contents, the serialized
request — was one more copy alive at once. Instead the translators see a short token where the
base64 goes (`Spliced.token`); the request is serialized with the tokens in it, and
`Spliced.pieces` cuts the result at each token and puts the media's own buffers there. The
request then goes on as a list of pieces (the upstream client sends them in parts, see
services.edge.generate_wire), each image held once: as fetched, or where it sits in the
client's body.

Tokens carry a random nonce per request, so text from a client cannot pass for one.
"""
from __future__ import annotations

import re
import secrets
from typing import Sequence

Buffer = bytes | bytearray | memoryview


class Spliced:
    def __init__(self) -> None:
        nonce = secrets.token_hex(8)
        self._prefix = f"@@media-{nonce}-"
        self._pattern = re.compile(rb"@@media-" + nonce.encode() + rb"-(\d+)@@")
        self._values: list[Sequence[Buffer]] = []

    def __len__(self) -> int:
        return len(self._values)

    def token(self, value: Buffer | Sequence[Buffer]) -> str:
        """A stand-in for `value` (JSON string content that needs no escaping: base64) in the
        request's JSON, replaced by the value's bytes when the request is cut into pieces."""
        self._values.append([value] if isinstance(value, (bytes, bytearray, memoryview)) else value)
        return f"{self._prefix}{len(self._values) - 1}@@"

    def find(self, text: str) -> tuple[str, Sequence[Buffer]] | None:
        """(what comes before it, the value) when `text` ends with one of this request's tokens."""
        at = text.rfind(self._prefix)
        if at < 0 or not text.endswith("@@"):
            return None
        index = text[at + len(self._prefix):-2]
        if not index.isdigit() or int(index) >= len(self._values):
            return None
        return text[:at], self._values[int(index)]

    def pieces(self, serialized: bytes) -> bytes | list[Buffer]:
        """The serialized request with every token replaced by its value, as pieces to send one
        after the other (the bytes themselves when there is no token)."""
        if not self._values:
            return serialized
        view = memoryview(serialized)
        out: list[Buffer] = []
        start = 0
        for match in self._pattern.finditer(serialized):
            index = int(match.group(1))
            if index >= len(self._values):
                continue
            out.append(view[start:match.start()])
            out.extend(self._values[index])
            start = match.end()
        if not out:
            return serialized
        out.append(view[start:])
        return out

    def clear(self) -> None:
        """Let go of the values (once the request was handed on)."""
        self._values = []
