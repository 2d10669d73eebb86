"""JSON checked and opened without building the whole document (msgspec skips values it is
not asked to decode, validating their syntax as it goes).

Parsing a body into Python objects costs 6-7× its size when it is made of many tiny values
(1 M messages of `{"role":"user","content":"x"}`), and translating it doubles that. These
helpers let the edge check a body is one JSON object without any copy, and open only the top
level (and the arrays it walks) so that each element is parsed, used and dropped in turn.
"""
from __future__ import annotations

import codecs
import re
from typing import Any, Callable

import msgspec
import orjson
from msgspec import Raw

from services.edge.errors import ApiError

_TOP = msgspec.json.Decoder(dict[str, Raw])
_LIST = msgspec.json.Decoder(list[Raw])
_UTF8_STEP = 1 << 20


def _malformed(detail: str) -> ApiError:
    return ApiError(400, f"malformed JSON in request body: {detail}", code="invalid_json")


def _check_utf8(raw: bytes) -> None:
    # msgspec does not validate the text of strings it skips; a strict decoder over slices does,
    # without a full-size copy. ASCII (most bodies) is valid UTF-8: no decoding at all then.
    if raw.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    view = memoryview(raw)
    try:
        for start in range(0, len(view), _UTF8_STEP):
            decoder.decode(view[start:start + _UTF8_STEP])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _malformed(f"invalid UTF-8 ({exc.reason})") from None


_NON_SPACE = re.compile(rb"[^ \t\r\n\x0b\x0c]")


def first_byte(raw: bytes | bytearray) -> bytes:
    """The first byte that is not white space (b"" for none), found without a stripped copy
    (a bytearray's strip() always copies)."""
    m = _NON_SPACE.search(raw)
    return raw[m.start():m.start() + 1] if m else b""


def top_level(raw: bytes | bytearray) -> dict[str, Raw]:
    """The body's members, each still raw; a 400 unless the body is one valid JSON object."""
    first = first_byte(raw)
    if not first:
        raise ApiError(400, "request body is empty: send a JSON object", code="invalid_json")
    if first != b"{":
        try:
            msgspec.json.decode(raw, type=Raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _malformed(str(exc)) from None
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    try:
        members = _TOP.decode(raw)
    except msgspec.DecodeError as exc:
        raise _malformed(str(exc)) from None
    except RecursionError:
        raise _malformed("nested too deeply") from None
    _check_utf8(raw)
    return members


def is_array(raw: Raw) -> bool:
    return bytes(memoryview(raw)[:1]) == b"["


def elements(raw: Raw) -> list[Raw]:
    """The elements of a raw array, each still raw (the caller checked `is_array`)."""
    return _LIST.decode(raw)


def size(raw: Raw) -> int:
    return memoryview(raw).nbytes


# The members of a chat request that may be long arrays: their elements stay raw until the
# translator takes them one by one. Everything else together must fit in MAX_SMALL_FIELDS.
CHAT_ARRAYS = ("messages", "tools", "functions")
MAX_SMALL_FIELDS = 1 << 20


def open_chat(raw: bytes) -> dict:
    """A chat-completions body with its long arrays left as lists of raw elements (see
    translate.openai_to_gemini, which parses each element when it reaches it)."""
    members = top_level(raw)
    body: dict = {}
    small = 0
    for key, value in members.items():
        if key in CHAT_ARRAYS and is_array(value):
            try:
                body[key] = elements(value)
            except RecursionError:
                raise _malformed("nested too deeply") from None
            continue
        small += size(value)
        if small > MAX_SMALL_FIELDS:
            raise ApiError(400, f"the request's members other than {', '.join(CHAT_ARRAYS)} exceed "
                                f"{MAX_SMALL_FIELDS // 1024} KiB together", param=key, code="invalid_request_error")
        try:
            body[key] = orjson.loads(memoryview(value))
        except orjson.JSONDecodeError as exc:
            raise _malformed(str(exc)) from None
    return body


def open_lazily(raw: bytes | bytearray, array: str, load: Callable[[Raw], Any]) -> dict:
    """A body whose member `array` is opened one element at a time by `load` (the translating
    routes keep inline media out of the parsed conversation this way, see
    routes/translated.spliced_opener); the other members are parsed as they are."""
    members = top_level(raw)
    body: dict = {}
    try:
        for key, value in members.items():
            if key == array and is_array(value):
                body[key] = [load(item) for item in elements(value)]
            else:
                body[key] = orjson.loads(memoryview(value))
    except orjson.JSONDecodeError as exc:
        raise _malformed(str(exc)) from None
    except RecursionError:
        raise _malformed("nested too deeply") from None
    return body


def parsed_members(raw: bytes, names: tuple[str, ...]) -> dict:
    """The body checked to be one JSON object, with only the named members parsed."""
    members = top_level(raw)
    out = {}
    for name in names:
        if name in members:
            if size(members[name]) > MAX_SMALL_FIELDS:
                raise ApiError(400, f"'{name}' is larger than {MAX_SMALL_FIELDS // 1024} KiB", param=name,
                               code="invalid_request_error")
            out[name] = orjson.loads(memoryview(members[name]))
    return out
