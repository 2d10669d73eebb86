"""Anthropic Messages request → Gemini GenerateContentRequest (pure; no I/O).

The edge calls `media_urls(body)`, fetches those URLs, then `messages_request_to_gemini(body,
model, fetched)` with the Gemini model `resolve_model` chose. Unknown fields are ignored
(cache_control, metadata, container…); what cannot be honoured is a TranslationError naming
the parameter, which the edge answers with Anthropic's 400 invalid_request_error.

Mapping (protocol notes, client-apis.md §2.7):
* system (string or text blocks) and role "system" messages → systemInstruction; Claude Code's
  per-conversation attribution line is removed, as it would defeat prompt caching upstream;
* user/assistant → user/model turns, same-role neighbours merged;
* tool_use → functionCall (id kept, signature from the id or a preceding thinking block),
  tool_result → functionResponse {output | error} named after its tool_use;
* image / document blocks → inlineData (base64 as sent, URLs through the guarded fetcher),
  plain-text documents → text;
* thinking blocks only give back their signature; redacted_thinking is dropped;
* tools[].input_schema → functionDeclarations (schema cleaned), web_search server tools →
  googleSearch; tool_choice auto/any/tool/none → AUTO/ANY/ANY+name/NONE;
* thinking {enabled, budget_tokens} / adaptive / disabled and output_config.effort → thinkingConfig;
  output_config.format {type: json_schema, schema} → structured output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from ..spliced import Spliced
from . import signatures, tool_ids
from .anthropic_media import media_part, media_urls
from .errors import TranslationError
from .gemini_request import add_generation, add_sampling, add_tools, conversation_request, stream_flag
from .openai_tools import declaration
from .params import integer, shallow, string
from .schema import SchemaBudget, to_gemini_schema
from .thinking import GENERIC, ThinkingSpec, split_model, thinking_config

__all__ = ["MessagesRequest", "count_tokens_body", "media_urls", "messages_request_to_gemini", "resolve_model"]

ATTRIBUTION = "x-anthropic-billing-header:"
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}


@dataclass(frozen=True)
class MessagesRequest:
    model: str  # the Gemini model (suffix removed)
    gemini: dict
    stream: bool
    thinking: bool  # the client asked for thinking: signatures may ride on thinking blocks


def resolve_model(requested: str, mapping: Mapping[str, str]) -> str:
    """The Gemini model for a name a Claude client sent.

    Names that are not Claude's pass through. A Claude name goes to the mapping entry whose key
    it contains, the longest key first ("haiku" in claude-haiku-4-5-20251001), else to the
    entry "claude" when there is one."""
    name = requested.strip()
    lower = name.lower()
    if lower in mapping:
        return mapping[lower]
    if not (lower.startswith(("claude", "anthropic")) or lower in ("opus", "sonnet", "haiku", "default")):
        return name
    for key in sorted(mapping, key=len, reverse=True):
        if key != "claude" and key in lower:
            return mapping[key]
    return mapping.get("claude", name)


# --- messages --------------------------------------------------------------------------------------

class _Conversation:
    def __init__(self, fetched: Mapping[str, tuple[str, str]], spliced: Spliced | None = None) -> None:
        self.fetched = fetched
        self.spliced = spliced
        self.system: list[dict] = []
        self.contents: list[dict] = []
        self.call_names: dict[str, str] = {}

    def _append(self, role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def system_blocks(self, value: Any, p: str) -> None:
        if value is None:
            return
        if isinstance(value, str):
            blocks: list = [{"type": "text", "text": value}]
        elif isinstance(value, list):
            blocks = value
        else:
            raise TranslationError(f"{p} must be a string or an array of text blocks", p)
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise TranslationError(f"{p}[{j}] must be a text block", f"{p}[{j}]")
            text = _strip_attribution(string(block.get("text"), f"{p}[{j}].text"))
            if text:
                self.system.append({"text": text})

    def add(self, i: int, msg: Any) -> None:
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise TranslationError(f"{p} must be an object", p)
        role = msg.get("role")
        content = msg.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        elif not isinstance(content, list):
            raise TranslationError(f"{p}.content must be a string or an array of content blocks", f"{p}.content")
        if role == "user":
            self._append("user", self._user(content, p))
        elif role == "assistant":
            self._append("model", self._assistant(content, p))
        elif role == "system":
            self.system_blocks(content, f"{p}.content")
        else:
            raise TranslationError(f"{p}.role must be user or assistant", f"{p}.role")

    def _user(self, content: list, p: str) -> list[dict]:
        parts: list[dict] = []
        for j, block in enumerate(content):
            bp = f"{p}.content[{j}]"
            if not isinstance(block, dict):
                raise TranslationError(f"{bp} must be an object", bp)
            kind = block.get("type")
            if kind == "text":
                text = string(block.get("text"), f"{bp}.text")
                if text:
                    parts.append({"text": text})
            elif kind in ("image", "document"):
                parts.append(media_part(block, bp, self.fetched, self.spliced))
            elif kind == "tool_result":
                parts.extend(self._tool_result(block, bp))
            elif kind in ("thinking", "redacted_thinking"):
                continue
            else:
                raise TranslationError(f"{bp}.type {kind!r} is not supported in a user message", f"{bp}.type")
        # Gemini wants a turn's function responses before anything else in it.
        return sorted(parts, key=lambda part: "functionResponse" not in part)

    def _tool_result(self, block: dict, p: str) -> list[dict]:
        call_id = block.get("tool_use_id")
        if not isinstance(call_id, str) or not call_id:
            raise TranslationError(f"{p}.tool_use_id is required", f"{p}.tool_use_id")
        core, _ = tool_ids.decode(call_id)
        name = self.call_names.get(call_id) or self.call_names.get(core)
        if name is None:
            raise TranslationError(f"{p}.tool_use_id {call_id!r} does not match a tool_use block of an earlier "
                                   "assistant message", f"{p}.tool_use_id")
        content = block.get("content")
        texts: list[str] = []
        extra: list[dict] = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for k, item in enumerate(content):
                ip = f"{p}.content[{k}]"
                kind = item.get("type") if isinstance(item, dict) else None
                if kind == "text":
                    texts.append(string(item.get("text"), f"{ip}.text"))
                elif kind in ("image", "document"):
                    extra.append(media_part(item, ip, self.fetched, self.spliced))
                else:
                    raise TranslationError(f"{ip}.type {kind!r} is not supported in a tool_result", f"{ip}.type")
        elif content is not None:
            raise TranslationError(f"{p}.content must be a string or an array of blocks", f"{p}.content")
        key = "error" if block.get("is_error") is True else "output"
        return [{"functionResponse": {"id": core, "name": name, "response": {key: "\n".join(texts)}}}, *extra]

    def _assistant(self, content: list, p: str) -> list[dict]:
        parts: list[dict] = []
        pending = signatures.Pending()
        for j, block in enumerate(content):
            bp = f"{p}.content[{j}]"
            if not isinstance(block, dict):
                raise TranslationError(f"{bp} must be an object", bp)
            kind = block.get("type")
            if kind == "thinking":
                pending.offer(block.get("signature"))
            elif kind == "redacted_thinking":
                continue
            elif kind == "text":
                text = string(block.get("text"), f"{bp}.text")
                if text:
                    parts.append(pending.attach({"text": text}))
            elif kind == "tool_use":
                parts.append(self._tool_use(block, bp, pending))
            else:
                raise TranslationError(f"{bp}.type {kind!r} is not supported in an assistant message", f"{bp}.type")
        return parts

    def _tool_use(self, block: dict, p: str, pending: signatures.Pending) -> dict:
        call_id = string(block.get("id"), f"{p}.id")
        name = string(block.get("name"), f"{p}.name")
        if not call_id or not name:
            raise TranslationError(f"{p} needs a non-empty id and name", p)
        args = block.get("input", {})
        if not isinstance(args, dict):
            raise TranslationError(f"{p}.input must be an object", f"{p}.input")
        core, sig = tool_ids.decode(call_id)
        self.call_names[call_id] = self.call_names[core] = name
        return pending.attach({"functionCall": {"id": core, "name": name, "args": shallow(args, f"{p}.input")}}, sig)


def _strip_attribution(text: str) -> str:
    if not text.startswith(ATTRIBUTION):
        return text
    _, _, rest = text.partition("\n")
    return rest.lstrip("\n")


# --- tools -----------------------------------------------------------------------------------------

def _tools(body: dict, budget: SchemaBudget) -> tuple[list[dict], list[dict]]:
    raw = body.get("tools")
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        raise TranslationError("tools must be an array", "tools")
    declarations: list[dict] = []
    builtins: list[dict] = []
    for j, tool in enumerate(raw):
        p = f"tools[{j}]"
        if not isinstance(tool, dict):
            raise TranslationError(f"{p} must be an object", p)
        kind = tool.get("type")
        if kind in (None, "custom"):
            fn = {"name": tool.get("name"), "description": tool.get("description"), "parameters": tool.get("input_schema")}
            declarations.append(declaration({k: v for k, v in fn.items() if v is not None}, p, budget))
        elif isinstance(kind, str) and kind.startswith("web_search"):
            if {"googleSearch": {}} not in builtins:
                builtins.append({"googleSearch": {}})
        else:
            raise TranslationError(f"{p}.type {kind!r}: server tools other than web_search are not supported", f"{p}.type")
    if len({d["name"] for d in declarations}) != len(declarations):
        raise TranslationError("a tool name is declared twice", "tools")
    return declarations, builtins


def _tool_choice(body: dict) -> Any:
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise TranslationError("tool_choice must be an object like {\"type\": \"auto\"}", "tool_choice")
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "name": choice.get("name")}
    mapped = {"auto": "auto", "any": "required", "none": "none"}.get(kind)  # type: ignore[arg-type]
    if mapped is None:
        raise TranslationError("tool_choice.type must be auto, any, tool or none", "tool_choice.type")
    return mapped


# --- entry point -----------------------------------------------------------------------------------

def _conversation(body: dict, fetched: Mapping[str, tuple[str, str]], spliced: Spliced | None = None) -> _Conversation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty array", "messages")
    conv = _Conversation(fetched, spliced)
    conv.system_blocks(body.get("system"), "system")
    for i, msg in enumerate(messages):
        conv.add(i, msg)
    if not conv.contents:
        raise TranslationError("messages contain no content", "messages")
    return conv


def _thinking(spec: ThinkingSpec, suffix: str | None, body: dict) -> dict | None:
    thinking = body.get("thinking")
    effort = None
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and output_config.get("effort") is not None:
        effort = _EFFORTS.get(str(output_config["effort"]).lower())
        if effort is None:
            raise TranslationError("output_config.effort must be low, medium, high, xhigh or max", "output_config.effort")
    cfg = thinking_config(spec, suffix=suffix, reasoning_effort=effort, thinking=thinking, extra_google=None)
    if cfg and isinstance(thinking, dict) and thinking.get("display") == "omitted":
        cfg.pop("includeThoughts", None)
    return cfg or None


def _output_format(body: dict, gen: dict, budget: SchemaBudget) -> None:
    config = body.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise TranslationError('output_config.format must be {"type": "json_schema", "schema": {...}}', "output_config.format")
    gen["responseMimeType"] = "application/json"
    schema = to_gemini_schema(fmt.get("schema"), param="output_config.format.schema", ordered=True, budget=budget)
    if not (schema.get("type") == "object" and not schema.get("properties")):
        gen["responseSchema"] = schema


def messages_request_to_gemini(body: dict, model: str, fetched: Mapping[str, tuple[str, str]] | None = None, *,
                               thinking: ThinkingSpec | None = None, spliced: Spliced | None = None) -> MessagesRequest:
    """`model` is the Gemini model resolve_model chose (a -thinking style suffix allowed);
    `thinking` its range from the upstream's catalogue (None: unknown model). With `spliced`,
    inline media may be its tokens (the caller then cuts the serialized request with
    `spliced.pieces`)."""
    base, suffix = split_model(model)
    spec = thinking or GENERIC
    conv = _conversation(body, fetched or {}, spliced)
    gemini = conversation_request(conv.contents, conv.system, spec)

    budget = SchemaBudget()  # one for all the schemas of the request
    declarations, builtins = _tools(body, budget)
    add_tools(gemini, declarations, builtins, {"tool_choice": _tool_choice(body)})

    gen: dict = {}
    max_tokens = integer(body, "max_tokens", 1)
    if max_tokens is not None:
        gen["maxOutputTokens"] = max_tokens
    add_sampling(body, gen)
    top_k = integer(body, "top_k", 1)
    if top_k is not None:
        gen["topK"] = top_k
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise TranslationError("stop_sequences must be an array of strings", "stop_sequences")
        if any(stops):
            gen["stopSequences"] = [s for s in stops if s]
    _output_format(body, gen, budget)
    add_generation(gemini, gen, _thinking(spec, suffix, body))
    asked = body.get("thinking")
    wants_thinking = isinstance(asked, dict) and asked.get("type") in ("enabled", "adaptive")
    return MessagesRequest(model=base, gemini=gemini, stream=stream_flag(body), thinking=wants_thinking)


def count_tokens_body(body: dict, fetched: Mapping[str, tuple[str, str]] | None = None) -> dict:
    """A Gemini countTokens body for /v1/messages/count_tokens. The upstream counts `contents`
    only, so the system prompt and the tool declarations ride along as a leading user turn."""
    conv = _conversation(body, fetched or {})
    lead = list(conv.system)
    declarations, _ = _tools(body, SchemaBudget())
    if declarations:
        lead.append({"text": orjson.dumps(declarations).decode()})
    return {"contents": [{"role": "user", "parts": lead}, *conv.contents] if lead else conv.contents}
