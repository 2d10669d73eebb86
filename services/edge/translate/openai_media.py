"""Media content parts of OpenAI chat messages (image_url, input_audio, file…) → Gemini inlineData.

`media_urls(body)` lists the http(s) URLs the edge must fetch first; `MediaParts(fetched)` then
turns each part into an inlineData part, its type sniffed from the bytes (services.edge.media_sniff).
"""
from __future__ import annotations

import mimetypes
import re
from typing import Any, Mapping

from msgspec import Raw

from ..media_errors import MediaError
from ..media_inline import NOT_MEDIA_URL, decode_inline, is_remote, looks_like_path, spliced_mime
from ..media_sniff import OCTET_STREAM
from ..spliced import Spliced
from .contents_writer import load_message
from .errors import TranslationError

MEDIA_TYPES = ("image_url", "input_audio", "file", "video_url", "audio_url")
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg", "aac": "audio/aac",
                  "aiff": "audio/aiff", "m4a": "audio/mp4", "webm": "audio/webm", "opus": "audio/ogg", "pcm16": "audio/pcm"}

def _media_ref(part: dict) -> tuple[Any, str | None]:
    """(reference, declared mime) of a media content part."""
    kind = part.get("type")
    value = part.get(kind)
    if kind in ("image_url", "video_url", "audio_url"):
        return (value.get("url") if isinstance(value, dict) else value), None
    if kind == "input_audio":
        if not isinstance(value, dict):
            return None, None
        fmt = value.get("format")
        declared = _AUDIO_FORMATS.get(fmt.lower(), f"audio/{fmt.lower()}") if isinstance(fmt, str) and fmt else None
        return value.get("data"), declared
    if kind == "file":
        if not isinstance(value, dict):
            return None, None
        name = value.get("filename")
        declared = mimetypes.guess_type(name)[0] if isinstance(name, str) else None
        return value.get("file_data", value.get("url")), declared
    return None, None


def media_urls(body: dict) -> list[str]:
    """The http(s) URLs in media content parts, deduplicated, in order. Never raises: a malformed
    body yields what it can and chat_request_to_gemini reports the problem."""
    urls: list[str] = []
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return urls
    for i, msg in enumerate(messages):
        if isinstance(msg, Raw):
            if not _URL_MARK.search(memoryview(msg)):
                continue
            try:
                # A throw-away Spliced: inline media beside the URLs is not parsed just to list them.
                msg = load_message(msg, f"messages[{i}]", Spliced())
            except (TranslationError, ValueError):
                continue  # chat_request_to_gemini reports it
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") in MEDIA_TYPES:
                ref, _ = _media_ref(part)
                if isinstance(ref, str) and is_remote(ref.strip()):
                    urls.append(ref.strip())
    return list(dict.fromkeys(urls))


_URL_MARK = re.compile(rb"://")


def inline_media(ref: str, where: str, spliced: Spliced | None = None, *,
                 base64_only: bool = False) -> tuple[str, str]:
    """(mime, base64) of media sent inline (a data: URL or bare base64, see decode_inline), the
    type sniffed from the bytes. When the base64 stayed in the client's body, `ref` ends with a
    token of `spliced` and so does the data returned; it is checked as the text would be."""
    try:
        if spliced is not None and (found := spliced.find(ref)) is not None:
            prefix, pieces = found
            first = bytes(memoryview(pieces[0])[:1024])
            if not prefix and not base64_only and looks_like_path(first[:16].decode("ascii")):
                raise MediaError(NOT_MEDIA_URL)
            return spliced_mime(prefix, first, sum(memoryview(p).nbytes for p in pieces)), ref[len(prefix):]
        inline = decode_inline(ref, base64_only=base64_only)
    except MediaError as exc:
        raise TranslationError(f"{where}: {exc.message}", where) from None
    assert inline is not None
    return inline


class MediaParts:
    """`spliced`: the request's registry of media kept out of its JSON (services/edge/spliced.py),
    whose tokens may stand for inline data here (fetched media are tokens of it already)."""

    def __init__(self, fetched: Mapping[str, tuple[str, str]], spliced: Spliced | None = None) -> None:
        self.fetched = fetched
        self.spliced = spliced

    def part(self, part: dict, param: str) -> dict:
        kind = part["type"]
        ref, declared = _media_ref(part)
        where = f"{param}.{kind}"
        if isinstance(part.get(kind), dict):
            where += {"input_audio": ".data", "file": ".file_data"}.get(kind, ".url")
        if kind == "file" and ref is None and isinstance(part.get(kind), dict) and part[kind].get("file_id"):
            raise TranslationError("file_id references are not supported; send file_data (base64 or a data: URL)", f"{param}.file.file_id")
        if not isinstance(ref, str) or not ref.strip():
            raise TranslationError(f"{where} must be a non-empty string", where)
        ref = ref.strip()
        if is_remote(ref):
            got = self.fetched.get(ref)
            if got is None:
                raise TranslationError(f"media at {ref} could not be fetched", where)
            mime, data = got
        else:
            mime, data = inline_media(ref, where, self.spliced)
        if mime == OCTET_STREAM and declared:
            mime = declared
        return {"inlineData": {"mimeType": mime, "data": data}}

