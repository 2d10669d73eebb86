"""OpenAI tool-call ids that carry Gemini's thoughtSignature.

Gemini 3 rejects multi-turn function calling unless the model's `thoughtSignature` comes back on
the function call it was attached to. OpenAI clients do not know that field, but every one of
them sends the tool-call id back verbatim, so the signature rides inside the id:

    <core>__ts_<base64url(crc32(sig) ‖ sig)>          e.g. call_9f1c…__ts_q2x0AXNpZy1hYmM

* `<core>` is Gemini's `functionCall.id` when it is a plain token, else a deterministic
  `call_<24 hex>`; it is what goes back to Gemini as `functionCall.id` / `functionResponse.id`.
* The payload is unpadded base64url, so the id stays within `[A-Za-z0-9_-]` (clients that
  validate ids against that set, as Anthropic-style bridges do, accept it).
* The CRC makes a truncated or edited id decode to "no signature" instead of a wrong one; the
  request side then falls back to Gemini's documented bypass value rather than earning a 400.
* The core never contains the marker, so decoding splits at the marker's first occurrence.

Google's own OpenAI layer carries the same value in `extra_content.google.thought_signature`;
the translator emits and accepts both.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib

MARKER = "__ts_"
_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_call_id(completion_id: str, choice_index: int, call_index: int, name: str) -> str:
    """A deterministic id for a call Gemini sent without one: unique within the completion,
    identical in the streamed and the unary translation of the same response."""
    digest = hashlib.sha256(f"{completion_id}\0{choice_index}\0{call_index}\0{name}".encode()).hexdigest()
    return f"call_{digest[:24]}"


def core_id(gemini_id: object, fallback: str) -> str:
    """Gemini's own id when it is safe to expose, else the fallback."""
    if isinstance(gemini_id, str) and _PLAIN.fullmatch(gemini_id) and MARKER not in gemini_id:
        return gemini_id
    return fallback


def encode(core: str, signature: str | None) -> str:
    if MARKER in core:
        raise ValueError("tool-call id core must not contain the signature marker")
    if not signature:
        return core
    raw = signature.encode("utf-8")
    payload = zlib.crc32(raw).to_bytes(4, "big") + raw
    return core + MARKER + base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")


def decode(tool_call_id: str) -> tuple[str, str | None]:
    """Split an id into (core, signature or None). Ids made by anyone else come back unchanged."""
    pos = tool_call_id.find(MARKER)
    if pos <= 0:
        return tool_call_id, None
    core, text = tool_call_id[:pos], tool_call_id[pos + len(MARKER):]
    try:
        payload = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return core, None
    if len(payload) < 5 or zlib.crc32(payload[4:]).to_bytes(4, "big") != payload[:4]:
        return core, None
    try:
        return core, payload[4:].decode("utf-8")
    except UnicodeDecodeError:
        return core, None
