"""Inline media: `data:` URLs and bare base64, validated and typed from their decoded head."""
from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote_to_bytes

from services.edge.media_errors import MediaError
from services.edge.media_sniff import OCTET_STREAM, SNIFF_BYTES, sniff_mime

_SNIFF_B64 = SNIFF_BYTES // 3 * 4

_DATA_URL = re.compile(r"data:(?P<mime>[^;,]*)(?P<params>(?:;[^;,]*)*),", re.IGNORECASE)
_B64_CHARS = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_WS = re.compile(r"\s+")


def _b64_head(data: str) -> bytes:
    """Decode (and thereby validate) the first bytes of a base64 string."""
    chunk = data[:_SNIFF_B64]
    if not chunk or not _B64_CHARS.fullmatch(chunk) or not _B64_CHARS.fullmatch(data[-4:]):
        raise MediaError("media data is not valid base64")
    if len(data) % 4 == 1:
        raise MediaError("media data is not valid base64 (truncated)")
    chunk = chunk.replace("-", "+").replace("_", "/")
    chunk = chunk[: len(chunk) - len(chunk) % 4] if len(chunk) < len(data) else chunk + "=" * (-len(chunk) % 4)
    try:
        return base64.b64decode(chunk, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError("media data is not valid base64") from exc


def _normalise_b64(data: str) -> str:
    # Only copies when needed: most clients send one unbroken line.
    return _WS.sub("", data) if any(c in data[:_SNIFF_B64] or c in data[-_SNIFF_B64:] for c in "\r\n\t ") else data


def is_remote(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


NOT_MEDIA_URL = "media URL must be http(s), a data: URL or base64"


def looks_like_path(text: str) -> bool:
    """A media URL field holding something that is neither a URL nor base64 (a file path, say)."""
    return "://" in text[:16] or text[:1] in ("/", ".") or " " in text[:_SNIFF_B64]


def decode_inline(url: str, *, base64_only: bool = False) -> tuple[str, str] | None:
    """A `data:` URL or bare base64 → (mime, base64 exactly as sent); None for http(s) URLs.

    The type is sniffed from the decoded head; the declared data-URL type is the fallback, then
    application/octet-stream. Raises MediaError for anything else. `base64_only`: the field
    holds base64 by definition (Anthropic's base64 source), so a leading "/" (all JPEGs) is no
    sign of a path.
    """
    text = url.strip()
    if is_remote(text):
        return None
    if text[:5].lower() == "data:":
        m = _DATA_URL.match(text)
        if not m:
            raise MediaError("malformed data: URL (expected data:<type>;base64,<data>)")
        declared = m.group("mime").strip().lower() or None
        payload = text[m.end():]
        params = [p.strip().lower() for p in m.group("params").split(";") if p.strip()]
        if "base64" in params:
            data = _normalise_b64(payload)
        else:
            # Percent-encoded data URL (rare for media): the one case that needs encoding.
            data = base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
        if not data:
            raise MediaError("data: URL carries no data")
        head = _b64_head(data)
        return sniff_mime(head) or declared or OCTET_STREAM, data
    if not base64_only and looks_like_path(text):
        raise MediaError(NOT_MEDIA_URL)
    data = _normalise_b64(text)
    head = _b64_head(data)
    return sniff_mime(head) or OCTET_STREAM, data


def spliced_mime(prefix: str, first: bytes, total: int) -> str:
    """The type of inline base64 that stayed in the client's body (services/edge/spliced.py):
    `prefix` is what came before it in the string ("" or "data:<type>;base64,"), `first` its
    first bytes, `total` its length. Only runs of the base64 alphabet are left there, so what
    remains to check is the length and the head."""
    declared = None
    if prefix:
        m = _DATA_URL.fullmatch(prefix.strip())
        if not m:
            raise MediaError("malformed data: URL (expected data:<type>;base64,<data>)")
        declared = m.group("mime").strip().lower() or None
    if total % 4 == 1:
        raise MediaError("media data is not valid base64 (truncated)")
    chunk = first[:_SNIFF_B64]
    try:
        head = base64.b64decode(chunk[:len(chunk) // 4 * 4], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError("media data is not valid base64") from exc
    return sniff_mime(head) or declared or OCTET_STREAM
