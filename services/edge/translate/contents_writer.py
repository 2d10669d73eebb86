"""Gemini `contents` written as JSON while the messages are translated, one part at a time.

A conversation of a million short messages is a million small dicts once translated (14× the
body's size); written as it goes it is about the size of the body, and each message's parsed
and translated objects are dropped as soon as they are written. The result is one bytes value
that `orjson.Fragment` splices into the request.

Same rules as the list form in openai_to_gemini: same-role neighbours share one turn, and with
`signatures` the first function call of each model turn carries a thought signature.
"""
from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson
from msgspec import Raw

from ..spliced import Spliced
from .errors import TranslationError


# A part this large (inline media) is kept as its own piece instead of being copied into the
# growing buffer: media would otherwise exist as the part's JSON, in the buffer, and again in
# the finished bytes, all at once.
_OWN_PIECE = 64 * 1024


class ContentsWriter:
    def __init__(self, signatures: bool, skip_signature: str) -> None:
        self._buf = bytearray(b"[")
        self._pieces: list[bytes] = []
        self._role: str | None = None
        self._first_part = True
        self._signed = False
        self._signatures = signatures
        self._skip = skip_signature
        self.turns = 0

    @property
    def last_role(self) -> str | None:
        return self._role

    def append(self, role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if role != self._role:
            if self._role is not None:
                self._buf += b"]},"
            self._buf += b'{"role":' + orjson.dumps(role) + b',"parts":['
            self._role, self._first_part, self._signed = role, True, False
            self.turns += 1
        for part in parts:
            if self._signatures and role == "model" and not self._signed and "functionCall" in part:
                part.setdefault("thoughtSignature", self._skip)
                self._signed = True
            if not self._first_part:
                self._buf += b","
            data = orjson.dumps(part)
            if len(data) >= _OWN_PIECE:
                self._pieces += [bytes(self._buf), data]
                self._buf = bytearray()
            else:
                self._buf += data
            self._first_part = False

    def finish(self) -> bytes:
        if self._role is not None:
            self._buf += b"]}"
        self._buf += b"]"
        if self._pieces:
            self._pieces.append(bytes(self._buf))
            out = b"".join(self._pieces)
        else:
            out = bytes(self._buf)
        self._buf, self._pieces = bytearray(), []
        return out


class PartsWriter:
    """A JSON array of parts written as it grows (the system instruction's parts)."""

    def __init__(self) -> None:
        self._buf = bytearray(b"[")
        self.count = 0

    def extend(self, parts: list[dict]) -> None:
        for part in parts:
            if self.count:
                self._buf += b","
            self._buf += orjson.dumps(part)
            self.count += 1

    def finish(self) -> bytes:
        self._buf += b"]"
        out = bytes(self._buf)
        self._buf = bytearray()
        return out


# --- elements the edge left raw ------------------------------------------------------------

MAX_ITEM_PARTS = 4096       # content parts or tool calls in one message
MAX_TOOL_BYTES = 1 << 20    # one tool definition
_PEEK_BYTES = 64 * 1024     # messages smaller than this cannot hold MAX_ITEM_PARTS parts worth checking

# Inline base64 at least this long stays where it is in the client's body (see load_message).
SPLICE_BYTES = 64 * 1024

_MEMBERS = msgspec.json.Decoder(dict[str, Raw])
_ELEMENTS = msgspec.json.Decoder(list[Raw])


# A JSON string that is one long run of base64 (inline media), bare or as a data: URL. The
# opening quote is unescaped (no backslash before it) and the run holds neither quotes nor
# backslashes, so in a valid document (the edge checked it) this is always a whole string.
_LONG_BASE64 = re.compile(rb'(?<!\\)"((?:data:[A-Za-z0-9.+/-]{1,100};base64,)?)([A-Za-z0-9+/]{%d,}={0,2})"'
                          % SPLICE_BYTES)


def load_message(raw: Raw, param: str, spliced: Spliced | None = None) -> Any:
    """One message of a body the edge opened lazily, parsed now (and dropped by the caller once
    translated). A large message is first checked not to hold an absurd number of parts, since
    parsing those would cost many times their bytes. With `spliced`, its long base64 strings
    (inline media) are not parsed: each becomes a token for its place in the body itself."""
    view = memoryview(raw)
    if view.nbytes > _PEEK_BYTES and view[:1] == b"{":
        members = _MEMBERS.decode(raw)
        for key in ("content", "tool_calls"):
            value = members.get(key)
            if value is not None and memoryview(value)[:1] == b"[" and len(_ELEMENTS.decode(value)) > MAX_ITEM_PARTS:
                raise TranslationError(f"{param}.{key} has more than {MAX_ITEM_PARTS} elements", f"{param}.{key}")
        if spliced is not None:
            return orjson.loads(_with_tokens(view, spliced))
    return orjson.loads(view)


def load_spliced(raw: Raw, spliced: Spliced) -> Any:
    """An element of a body the edge opened lazily, parsed with its long base64 strings (inline
    media) left where they are in the body: each becomes a token of `spliced`."""
    view = memoryview(raw)
    return orjson.loads(_with_tokens(view, spliced) if view.nbytes > SPLICE_BYTES else view)


def _with_tokens(view: memoryview, spliced: Spliced) -> bytes | memoryview:
    pieces: list[bytes | memoryview] = []
    start = 0
    for match in _LONG_BASE64.finditer(view):
        pieces += [view[start:match.start(2)], spliced.token(view[match.start(2):match.end(2)]).encode()]
        start = match.end(2)
    if not pieces:
        return view
    pieces.append(view[start:])
    return b"".join(pieces)


def load_tool(raw: Raw, param: str) -> Any:
    view = memoryview(raw)
    if view.nbytes > MAX_TOOL_BYTES:
        raise TranslationError(f"{param} is larger than {MAX_TOOL_BYTES // 1024} KiB", param, code="schema_too_complex")
    return orjson.loads(view)
