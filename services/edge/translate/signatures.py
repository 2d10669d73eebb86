"""Gemini thought signatures carried through APIs that have their own opaque fields.

Gemini 3 wants each model turn's thoughtSignature back on the part it came with. Anthropic
clients replay a thinking block's `signature` byte for byte, OpenAI Responses clients replay a
reasoning item's `encrypted_content`; both travel as

    gemini__ts_<base64url(crc32(sig) ‖ sig)>

(the tool_ids encoding with the fixed core "gemini"), so a value that was not made here — a real
Anthropic signature from another provider, an edited or cut value — unpacks to None and is
dropped instead of reaching Gemini as a corrupt signature.

`Pending` applies the replayed order: a signature seen in a thinking block / reasoning item
belongs to the next part of the same model turn.
"""
from __future__ import annotations

from . import tool_ids

CORE = "gemini"
# Gemini's documented value for history whose function calls carry no signature.
SKIP_SIGNATURE = "skip_thought_signature_validator"


def pack(signature: str) -> str:
    return tool_ids.encode(CORE, signature)


def unpack(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    core, sig = tool_ids.decode(value)
    return sig if core == CORE else None


def ensure_first_call_signed(contents: list[dict]) -> None:
    """Gemini 3 rejects a model turn whose first function call carries no thought signature."""
    for turn in contents:
        if turn["role"] != "model":
            continue
        for part in turn["parts"]:
            if "functionCall" in part:
                part.setdefault("thoughtSignature", SKIP_SIGNATURE)
                break


class Pending:
    """The signature waiting for the next part of a model turn."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: str | None = None

    def offer(self, packed: object) -> None:
        sig = unpack(packed)
        if sig:
            self.value = sig

    def attach(self, part: dict, fallback: str | None = None) -> dict:
        sig, self.value = self.value or fallback, None
        if sig:
            part["thoughtSignature"] = sig
        return part

    def reset(self) -> None:
        self.value = None
