"""Anthropic Messages request → Gemini GenerateContentRequest (pure; no I/O).

The edge calls `media_urls(body)`, fetches those URLs, then `messages_request_to_gemini(body,
model, fetched)` with the Gemini model `resolve_model` chose. Unknown fields are ignored
(cache_control, metadata, container…); what cannot be honoured is a TranslationError naming
the parameter, which the edge answers with Anthropic's 400 invalid_request_error.

Mapping (protocol notes, client-apis.md §2.7):
* system (string or text blocks) and role "system" messages → systemInstruction; Claude Code's
  per-conversation attribution line is removed, as it would defeat prompt caching upstream;
* a role "system" message's output_config.effort (per-message effort) sets the effort from the
  turn it applies to on (`_Effort`); the last level in force is the request's;
* user/assistant → user/model turns, same-role neighbours merged;
* tool_use → functionCall (id kept, signature from the id or a preceding thinking block),
  tool_result → functionResponse {output | error} named after its tool_use;
* image / document blocks → inlineData (base64 as sent, URLs through the guarded fetcher),
  plain-text documents → text;
* thinking blocks only give back their signature; redacted_thinking is dropped;
* tools, deferred tools and their tool_reference loads, tool_addition / tool_removal →
  functionDeclarations and googleSearch (anthropic_tools); tool_choice auto/any/tool/none →
  AUTO/ANY/ANY+name/NONE;
* thinking {enabled, budget_tokens} / adaptive / disabled and output_config.effort → thinkingConfig
  (display "omitted" / "updates": no thought text); output_config.format {type: json_schema,
  schema} → structured output;
* `safeguards` (Claude Code's auto mode asking the server to review its tool calls) gets no
  `safeguard_results`: Claude Code 2.1.332 then tells the user auto mode cannot check actions
  here and asks for approval of those that needed the check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from ..spliced import Spliced
from . import signatures, tool_ids
from .anthropic_media import media_part, media_urls
from .anthropic_tools import Toolset, tool_choice
from .errors import TranslationError
from .gemini_request import add_generation, add_sampling, add_tools, conversation_request, stream_flag
from .params import integer, shallow, string
from .schema import SchemaBudget, to_gemini_schema
from .thinking import GENERIC, ThinkingSpec, split_model, thinking_config

__all__ = ["MessagesRequest", "count_tokens_body", "media_urls", "messages_request_to_gemini", "resolve_model"]

ATTRIBUTION = "x-anthropic-billing-header:"
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}
_TOOL_CHANGES = ("tool_addition", "tool_removal")
# thinking.display values that keep the reasoning text out of the answer: "omitted" (signatures
# only), "updates" (thinking-display-updates beta: the model's own progress notes between tool
# calls are the only narration, and they come as text anyway).
_HIDDEN_THINKING = ("omitted", "updates")


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


def _effort(config: Any, p: str) -> str | None:
    """The Gemini-side effort of an output_config's `effort` (None: not given)."""
    if not isinstance(config, dict) or config.get("effort") is None:
        return None
    effort = _EFFORTS.get(str(config["effort"]).lower())
    if effort is None:
        raise TranslationError(f"{p}.effort must be low, medium, high, xhigh or max", f"{p}.effort")
    return effort


# --- messages --------------------------------------------------------------------------------------

class _Effort:
    """Per-message effort (Anthropic's mid-conversation output_config): a role "system" message
    right after a user turn with new input sets the effort of the answer to that turn; anywhere
    else it takes effect at the next user turn with new input (one of tool results only is not
    new input). A level stays until a later one replaces it."""

    def __init__(self) -> None:
        self.level: str | None = None  # in force (None: the request's top-level output_config)
        self._pending: str | None = None
        self._after_new_input = False

    def user(self, content: list) -> None:
        new_input = any(isinstance(b, dict) and b.get("type") != "tool_result" for b in content)
        if new_input and self._pending is not None:
            self.level, self._pending = self._pending, None
        self._after_new_input = new_input

    def assistant(self) -> None:
        self._after_new_input = False

    def system(self, config: Any, p: str) -> None:
        if config is None:
            return
        if not isinstance(config, dict):
            raise TranslationError(f"{p} must be an object", p)
        unknown = sorted(set(config) - {"effort"})
        if unknown:
            raise TranslationError(f"{p}.{unknown[0]} cannot be set per message (only effort can)", f"{p}.{unknown[0]}")
        effort = _effort(config, p)
        if effort is None:
            return
        if self._after_new_input:
            self.level = effort
        else:
            self._pending = effort


class _Conversation:
    def __init__(self, tools: Toolset, fetched: Mapping[str, tuple[str, str]], spliced: Spliced | None = None) -> None:
        self.tools = tools
        self.fetched = fetched
        self.spliced = spliced
        self.system: list[dict] = []
        self.contents: list[dict] = []
        self.call_names: dict[str, str] = {}
        self.effort = _Effort()

    def _append(self, role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def system_blocks(self, value: Any, p: str, *, in_messages: bool = False) -> None:
        """The top-level `system`, or (`in_messages`) a role "system" message's content, which may
        also change the tools."""
        if value is None:
            return
        if isinstance(value, str):
            blocks: list = [{"type": "text", "text": value}]
        elif isinstance(value, list):
            blocks = value
        else:
            raise TranslationError(f"{p} must be a string or an array of text blocks", p)
        for j, block in enumerate(blocks):
            if in_messages and isinstance(block, dict) and block.get("type") in _TOOL_CHANGES:
                self.tools.change(block, f"{p}[{j}]")
                continue
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
        if msg.get("output_config") is not None and role != "system":
            raise TranslationError(f"{p}.output_config is only allowed on a system message", f"{p}.output_config")
        if role == "user":
            self._append("user", self._user(content, p))
            self.effort.user(content)
        elif role == "assistant":
            self._append("model", self._assistant(content, p))
            self.effort.assistant()
        elif role == "system":
            self.system_blocks(content, f"{p}.content", in_messages=True)
            self.effort.system(msg.get("output_config"), f"{p}.output_config")
        else:
            raise TranslationError(f"{p}.role must be user, assistant or system", f"{p}.role")

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
                elif kind == "tool_reference":
                    texts.append(self.tools.load(item, ip))
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


# --- entry point -----------------------------------------------------------------------------------

def _conversation(body: dict, fetched: Mapping[str, tuple[str, str]], spliced: Spliced | None = None) -> _Conversation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty array", "messages")
    conv = _Conversation(Toolset(body.get("tools")), fetched, spliced)
    conv.system_blocks(body.get("system"), "system")
    for i, msg in enumerate(messages):
        conv.add(i, msg)
    if not conv.contents:
        raise TranslationError("messages contain no content", "messages")
    return conv


def _thinking(spec: ThinkingSpec, suffix: str | None, body: dict, conv: _Conversation) -> dict | None:
    thinking = body.get("thinking")
    effort = _effort(body.get("output_config"), "output_config")  # validated even when a message overrides it
    effort = conv.effort.level or effort
    cfg = thinking_config(spec, suffix=suffix, reasoning_effort=effort, thinking=thinking, extra_google=None)
    if cfg and isinstance(thinking, dict) and thinking.get("display") in _HIDDEN_THINKING:
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
    add_tools(gemini, conv.tools.declarations(budget), conv.tools.builtins, {"tool_choice": tool_choice(body)})

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
    add_generation(gemini, gen, _thinking(spec, suffix, body, conv))
    asked = body.get("thinking")
    wants_thinking = isinstance(asked, dict) and asked.get("type") in ("enabled", "adaptive")
    return MessagesRequest(model=base, gemini=gemini, stream=stream_flag(body), thinking=wants_thinking)


def count_tokens_body(body: dict, fetched: Mapping[str, tuple[str, str]] | None = None) -> dict:
    """A Gemini countTokens body for /v1/messages/count_tokens. The upstream counts `contents`
    only, so the system prompt and the tool declarations ride along as a leading user turn."""
    conv = _conversation(body, fetched or {})
    lead = list(conv.system)
    declarations = conv.tools.declarations(SchemaBudget())
    if declarations:
        lead.append({"text": orjson.dumps(declarations).decode()})
    return {"contents": [{"role": "user", "parts": lead}, *conv.contents] if lead else conv.contents}
