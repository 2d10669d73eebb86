"""OpenAI chat messages → Gemini contents and systemInstruction (pure).

system/developer → systemInstruction; user → user turns (text and media); assistant → model
turns (text, tool_calls as functionCall with the thought signature from the call id or
extra_content); tool / function results → functionResponse named after their call. Same-role
neighbours are merged, as Gemini wants user/model alternation.
"""
from __future__ import annotations

from typing import Any

import orjson
from msgspec import Raw

from . import tool_ids
from .contents_writer import ContentsWriter, PartsWriter, load_message
from .errors import TranslationError
from .openai_media import MEDIA_TYPES, MediaParts
from .params import json_loads, shallow, string

_IGNORED_ASSISTANT_PARTS = ("thinking", "redacted_thinking", "reasoning")


class Messages:
    def __init__(self, media: MediaParts, writer: ContentsWriter | None = None) -> None:
        self.media = media
        # With a writer (bodies the edge opened lazily) turns and system parts are written as
        # JSON as they come, instead of being kept as objects (see contents_writer).
        self.writer = writer
        self.system: list[dict] | PartsWriter = [] if writer is None else PartsWriter()
        self.contents: list[dict] = []
        self.call_names: dict[str, str] = {}
        self.legacy_call: str | None = None

    def _append(self, role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if self.writer is not None:
            self.writer.append(role, parts)
            return
        # Gemini wants user/model alternation: same-role neighbours become one turn.
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def add(self, i: int, msg: Any) -> None:
        p = f"messages[{i}]"
        if isinstance(msg, Raw):
            msg = load_message(msg, p, self.media.spliced)
        if not isinstance(msg, dict):
            raise TranslationError(f"{p} must be an object", p)
        role = msg.get("role")
        if role in ("system", "developer"):
            self.system.extend(self._text_parts(msg.get("content"), p))
        elif role == "user":
            self._append("user", self._user_parts(msg.get("content"), p))
        elif role == "assistant":
            self._append("model", self._assistant_parts(msg, p))
        elif role == "tool":
            self._append("user", self._tool_parts(msg, p))
        elif role == "function":
            name = msg.get("name") or self.legacy_call
            if not isinstance(name, str) or not name:
                raise TranslationError(f"{p}.name is required for a function message", f"{p}.name")
            self._append("user", [{"functionResponse": {"name": name, "response": self._response(msg.get("content"), p, [])}}])
        else:
            raise TranslationError(f"{p}.role must be one of system, developer, user, assistant, tool", f"{p}.role")

    def _text_parts(self, content: Any, p: str) -> list[dict]:
        if content is None:
            return []
        if isinstance(content, str):
            return [{"text": content}] if content else []
        if not isinstance(content, list):
            raise TranslationError(f"{p}.content must be a string or an array of content parts", f"{p}.content")
        parts = []
        for j, part in enumerate(content):
            pp = f"{p}.content[{j}]"
            if isinstance(part, str):
                text = part
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                text = string(part.get("text"), f"{pp}.text")
            else:
                raise TranslationError(f"{pp} must be a text part here", f"{pp}.type")
            if text:
                parts.append({"text": text})
        return parts

    def _user_parts(self, content: Any, p: str) -> list[dict]:
        if content is None:
            raise TranslationError(f"{p}.content is required", f"{p}.content")
        if isinstance(content, str):
            return [{"text": content}] if content else []
        if not isinstance(content, list):
            raise TranslationError(f"{p}.content must be a string or an array of content parts", f"{p}.content")
        parts = []
        for j, part in enumerate(content):
            pp = f"{p}.content[{j}]"
            if not isinstance(part, dict):
                raise TranslationError(f"{pp} must be an object", pp)
            kind = part.get("type")
            if kind in ("text", "input_text"):
                text = string(part.get("text"), f"{pp}.text")
                if text:
                    parts.append({"text": text})
            elif kind in MEDIA_TYPES:
                parts.append(self.media.part(part, pp))
            else:
                raise TranslationError(f"{pp}.type {kind!r} is not supported", f"{pp}.type")
        return parts

    def _assistant_parts(self, msg: dict, p: str) -> list[dict]:
        parts: list[dict] = []
        content = msg.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                pp = f"{p}.content[{j}]"
                if isinstance(part, dict) and part.get("type") in _IGNORED_ASSISTANT_PARTS:
                    continue  # thoughts never go back to Gemini
                if isinstance(part, dict) and part.get("type") in ("text", "output_text"):
                    text = string(part.get("text"), f"{pp}.text")
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    text = string(part.get("refusal"), f"{pp}.refusal")
                elif isinstance(part, str):
                    text = part
                else:
                    raise TranslationError(f"{pp}.type is not supported in an assistant message", f"{pp}.type")
                if text:
                    parts.append({"text": text})
        elif content is not None:
            parts.extend(self._text_parts(content, p))

        calls = msg.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list):
                raise TranslationError(f"{p}.tool_calls must be an array", f"{p}.tool_calls")
            for k, call in enumerate(calls):
                parts.append(self._call_part(call, f"{p}.tool_calls[{k}]"))
        legacy = msg.get("function_call")
        if legacy is not None and not calls:
            pp = f"{p}.function_call"
            if not isinstance(legacy, dict):
                raise TranslationError(f"{pp} must be an object", pp)
            name = string(legacy.get("name"), f"{pp}.name")
            self.legacy_call = name
            parts.append({"functionCall": {"name": name, "args": self._args(legacy.get("arguments"), f"{pp}.arguments")}})
        return parts

    def _args(self, raw: Any, param: str) -> dict:
        if raw is None or raw == "":
            return {}
        if isinstance(raw, str):
            try:
                raw = json_loads(raw)
            except ValueError:
                raise TranslationError(f"{param} must be a JSON object encoded as a string", param) from None
        if not isinstance(raw, dict):
            raise TranslationError(f"{param} must be a JSON object", param)
        return shallow(raw, param)

    def _call_part(self, call: Any, p: str) -> dict:
        if not isinstance(call, dict):
            raise TranslationError(f"{p} must be an object", p)
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise TranslationError(f"{p}.function must be an object", f"{p}.function")
        name = string(fn.get("name"), f"{p}.function.name")
        if not name:
            raise TranslationError(f"{p}.function.name must not be empty", f"{p}.function.name")
        fc: dict = {"name": name, "args": self._args(fn.get("arguments"), f"{p}.function.arguments")}
        part: dict = {"functionCall": fc}
        call_id = call.get("id")
        signature = None
        if isinstance(call_id, str) and call_id:
            core, signature = tool_ids.decode(call_id)
            fc["id"] = core
            self.call_names[call_id] = name
            self.call_names[core] = name
        extra = call.get("extra_content")
        google = extra.get("google") if isinstance(extra, dict) else None
        explicit = google.get("thought_signature") if isinstance(google, dict) else None
        if isinstance(explicit, str) and explicit:
            signature = explicit
        if signature:
            part["thoughtSignature"] = signature
        return part

    def _tool_parts(self, msg: dict, p: str) -> list[dict]:
        call_id = msg.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise TranslationError(f"{p}.tool_call_id is required for a tool message", f"{p}.tool_call_id")
        core, _ = tool_ids.decode(call_id)
        name = self.call_names.get(call_id) or self.call_names.get(core) or msg.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(
                f"{p}.tool_call_id {call_id!r} does not match a tool call of an earlier assistant message", f"{p}.tool_call_id"
            )
        extra: list[dict] = []
        response = self._response(msg.get("content"), p, extra)
        return [{"functionResponse": {"id": core, "name": name, "response": response}}, *extra]

    def _response(self, content: Any, p: str, extra: list[dict]) -> dict:
        """Tool output as Gemini's `response` object: a JSON object as is, anything else under
        "result". Media parts of the output follow as ordinary parts of the same turn."""
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                pp = f"{p}.content[{j}]"
                if isinstance(part, str):
                    texts.append(part)
                elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                    texts.append(string(part.get("text"), f"{pp}.text"))
                elif isinstance(part, dict) and part.get("type") in MEDIA_TYPES:
                    extra.append(self.media.part(part, pp))
                else:
                    raise TranslationError(f"{pp}.type is not supported in a tool message", f"{pp}.type")
            content = "".join(texts)
        if content is None:
            return {"result": ""}
        if isinstance(content, dict):
            return shallow(content, f"{p}.content")
        if not isinstance(content, str):
            raise TranslationError(f"{p}.content must be a string or an array of content parts", f"{p}.content")
        try:
            parsed = shallow(json_loads(content), f"{p}.content")
        except orjson.JSONDecodeError:
            return {"result": content}
        return parsed if isinstance(parsed, dict) else {"result": parsed}

