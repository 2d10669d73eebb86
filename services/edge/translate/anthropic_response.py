"""Gemini GenerateContentResponse (unary or stream chunks) → Anthropic Messages (pure).

One state machine, `MessageStream`, turns Gemini parts into Anthropic's stream events
(message_start, content_block_start/delta/stop, message_delta, message_stop); the unary answer
is those same events folded into a Message (`message_from_gemini`), so both paths give the
same blocks.

* `thought: true` parts → a thinking block (thinking_delta);
* a thoughtSignature → `signature_delta` on the thinking block before the part it came with
  (an empty thinking block when there was no thought text), packed by translate.signatures —
  only when the client asked for thinking; a function call's signature also rides in its
  tool_use id (tool_ids), so tool round trips keep working without thinking blocks;
* functionCall → tool_use (input_json_delta with the complete arguments);
* text, code and code results, inline images → text (text_delta);
* finishReason → stop_reason: tool_use when calls were made, MAX_TOKENS → max_tokens,
  safety-style reasons → refusal, else end_turn;
* usage: input = prompt − cached, cache_read = cached, output = candidates + thoughts.
"""
from __future__ import annotations

from typing import Any

import orjson

from . import signatures, tool_ids
from .gemini_to_openai import _CONTENT_FILTER, GeminiStream, _Content, _count, _is_call, _is_thought, _parts

Event = tuple[str, dict]


def usage_to_anthropic(usage_metadata: Any) -> dict:
    um = usage_metadata if isinstance(usage_metadata, dict) else {}
    cached = _count(um, "cachedContentTokenCount")
    prompt = _count(um, "promptTokenCount") + _count(um, "toolUsePromptTokenCount")
    return {
        "input_tokens": max(0, prompt - cached),
        "output_tokens": _count(um, "candidatesTokenCount") + _count(um, "thoughtsTokenCount"),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def stop_reason(gemini_reason: object, called: bool, blocked: bool) -> str:
    if called:
        return "tool_use"
    if gemini_reason == "MAX_TOKENS":
        return "max_tokens"
    if gemini_reason in _CONTENT_FILTER or blocked:
        return "refusal"
    return "end_turn"


class MessageStream(GeminiStream):
    """Gemini chunks in, Anthropic stream events out. No I/O."""

    def __init__(self, *, model: str, message_id: str, thinking: bool) -> None:
        super().__init__()
        self.model = model
        self.message_id = message_id
        self.thinking = thinking
        self._index = -1
        self._open: str | None = None  # type of the open content block
        self._text = _Content()
        self._calls = 0
        self._reason: str | None = None

    def start(self) -> list[Event]:
        message = {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                   "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage_to_anthropic({})}
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    # -- blocks ----------------------------------------------------------------------------

    def _begin(self, out: list[Event], block: dict) -> None:
        self._close(out)
        self._index += 1
        self._open = block["type"]
        out.append(("content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}))

    def _delta(self, out: list[Event], delta: dict) -> None:
        out.append(("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}))

    def _close(self, out: list[Event]) -> None:
        if self._open is not None:
            out.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
            self._open = None

    def _sign(self, out: list[Event], signature: object) -> None:
        """Put a part's signature on the thinking block before it (see module doc)."""
        if not (self.thinking and isinstance(signature, str) and signature):
            return
        if self._open == "text" or self._open == "tool_use":
            return  # a text part's signature after its text began: Gemini does not need it back
        if self._open != "thinking":
            self._begin(out, {"type": "thinking", "thinking": "", "signature": ""})
        self._delta(out, {"type": "signature_delta", "signature": signatures.pack(signature)})
        self._close(out)

    def _part(self, out: list[Event], part: dict) -> None:
        signature = part.get("thoughtSignature")
        if _is_thought(part):
            if self._open != "thinking":
                self._begin(out, {"type": "thinking", "thinking": "", "signature": ""})
            if part["text"]:
                self._delta(out, {"type": "thinking_delta", "thinking": part["text"]})
            if isinstance(signature, str) and signature and self.thinking:
                self._delta(out, {"type": "signature_delta", "signature": signatures.pack(signature)})
                self._close(out)
            return
        if _is_call(part):
            self._sign(out, signature)
            fc = part["functionCall"]
            name = fc.get("name") if isinstance(fc.get("name"), str) else ""
            core = tool_ids.core_id(fc.get("id"), tool_ids.new_call_id(self.message_id, 0, self._calls, name))
            sig = signature if isinstance(signature, str) else None
            args = fc.get("args") if isinstance(fc.get("args"), dict) else {}
            self._calls += 1
            self._begin(out, {"type": "tool_use", "id": tool_ids.encode(core, sig), "name": name, "input": {}})
            self._delta(out, {"type": "input_json_delta", "partial_json": orjson.dumps(args).decode()})
            self._close(out)
            return
        self._sign(out, signature)
        text = self._text.piece(part)
        if not text:
            return
        if self._open != "text":
            self._begin(out, {"type": "text", "text": ""})
        self._delta(out, {"type": "text_delta", "text": text})

    # -- chunks ----------------------------------------------------------------------------

    def _candidate(self, out: list[Event], index: int, candidate: dict) -> bool:
        if index != 0:
            return False  # Anthropic has one answer per message
        for part in _parts(candidate):
            self._part(out, part)
        return True

    def _finished(self, index: int, reason: str) -> None:
        self._reason = reason

    def _tail(self) -> list[Event]:
        out: list[Event] = []
        self._close(out)
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop_reason(self._reason, self._calls > 0, self._blocked),
                                                "stop_sequence": None},
                                      "usage": usage_to_anthropic(self._usage)}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def stop(self) -> None:
        """No more events (after an error event)."""
        self._done = True


def fold(events: list[Event]) -> dict:
    """The Message that a stream of events describes (what the SDKs' accumulators do)."""
    message: dict = {}
    content: list[dict] = []
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = dict(data["message"])
        elif name == "content_block_start":
            content.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = content[data["index"]], data["delta"]
            kind = delta["type"]
            if kind == "text_delta":
                block["text"] += delta["text"]
            elif kind == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] += delta["signature"]
            elif kind == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            content[data["index"]]["input"] = orjson.loads(partial.pop(data["index"]) or "{}")
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"] = data["usage"]
    message["content"] = content
    return message


def message_from_gemini(resp: dict, *, model: str, message_id: str, thinking: bool) -> dict:
    machine = MessageStream(model=model, message_id=message_id, thinking=thinking)
    return fold(machine.start() + machine.feed(resp) + machine.finish())
