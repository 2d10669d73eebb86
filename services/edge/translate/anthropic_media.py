"""Image and document blocks of Anthropic messages → Gemini parts (pure).

base64 sources go through as sent (whitespace removed); URL sources are fetched by the edge
first (`media_urls`) through the guarded fetcher and arrive here as (mime, base64); plain-text
documents become text.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..media_inline import is_remote
from ..spliced import Spliced
from .errors import TranslationError
from .openai_media import inline_media
from .params import string

_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _source_url(block: Any) -> str | None:
    if isinstance(block, dict) and block.get("type") in ("image", "document"):
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
            return source["url"].strip()
    return None


def _blocks(content: Any) -> list:
    return content if isinstance(content, list) else []


def media_urls(body: dict) -> list[str]:
    """http(s) URLs of image/document blocks (tool results included), deduplicated, in order."""
    urls: list[str] = []
    messages = body.get("messages") if isinstance(body, dict) else None
    for msg in messages if isinstance(messages, list) else []:
        for block in _blocks(msg.get("content") if isinstance(msg, dict) else None):
            url = _source_url(block)
            if url and is_remote(url):
                urls.append(url)
            if isinstance(block, dict) and block.get("type") == "tool_result":
                urls.extend(u for u in map(_source_url, _blocks(block.get("content"))) if u and is_remote(u))
    return list(dict.fromkeys(urls))


def media_part(block: dict, p: str, fetched: Mapping[str, tuple[str, str]], spliced: Spliced | None = None) -> dict:
    """`spliced`: the request's registry of media kept out of its JSON (services/edge/spliced.py),
    whose tokens may stand for inline data here (fetched media are tokens of it already)."""
    source = block.get("source")
    kind = block["type"]
    if not isinstance(source, dict):
        raise TranslationError(f"{p}.source must be an object", f"{p}.source")
    stype = source.get("type")
    if stype == "base64":
        media_type = string(source.get("media_type"), f"{p}.source.media_type")
        data = string(source.get("data"), f"{p}.source.data")
        if not data:
            raise TranslationError(f"{p}.source.data must not be empty", f"{p}.source.data")
        if kind == "image" and media_type not in _IMAGE_TYPES:
            raise TranslationError(f"{p}.source.media_type must be one of {', '.join(_IMAGE_TYPES)}", f"{p}.source.media_type")
        _, data = inline_media(data, f"{p}.source.data", spliced, base64_only=True)  # (normalises whitespace)
        return {"inlineData": {"mimeType": media_type, "data": data}}
    if stype == "url":
        url = string(source.get("url"), f"{p}.source.url").strip()
        if is_remote(url):
            got = fetched.get(url)
            if got is None:
                raise TranslationError(f"media at {url} could not be fetched", f"{p}.source.url")
            mime, data = got
            return {"inlineData": {"mimeType": mime, "data": data}}
        mime, data = inline_media(url, f"{p}.source.url", spliced)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if stype == "text" and kind == "document":
        return {"text": string(source.get("data"), f"{p}.source.data")}
    if stype == "content" and kind == "document":
        texts = [b.get("text") for b in _blocks(source.get("content")) if isinstance(b, dict) and isinstance(b.get("text"), str)]
        return {"text": "\n".join(texts)}
    raise TranslationError(f"{p}.source.type {stype!r} is not supported (base64, url{', text' if kind == 'document' else ''})",
                           f"{p}.source.type")
