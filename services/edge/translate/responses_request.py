"""OpenAI Responses request → Gemini GenerateContentRequest (pure; no I/O).

Stateless, as Codex CLI uses it (`store: false`, the whole history every turn): a
`previous_response_id` or `conversation` is refused, since nothing is stored to continue from.

* `input`: a string, or items — messages (user / assistant / system / developer), function_call
  and function_call_output, custom_tool_call and its output, reasoning items (only their
  `encrypted_content` matters: it gives back the thought signature of the part that follows);
* `instructions` and system/developer messages → systemInstruction;
* tools: flat `function` tools → functionDeclarations; `custom` (freeform) tools → a function
  with one string parameter `input`; web_search → googleSearch; hosted tools Gemini has no
  counterpart for (local_shell, image_generation, …) are left out, as clients such as Codex
  send them unasked; `tool_choice` as for chat completions;
* `reasoning.effort` → thinking (translate/thinking.py), any `reasoning.summary` → thoughts shown;
* `text.format` json_schema / json_object → structured output; `max_output_tokens`,
  `temperature`, `top_p` → generationConfig.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from ..media_inline import is_remote
from ..spliced import Spliced
from . import signatures, tool_ids
from .errors import TranslationError
from .openai_media import MediaParts
from .gemini_request import add_generation, add_sampling, add_tools, conversation_request, stream_flag
from .openai_tools import declaration
from .params import integer, shallow, string
from .schema import SchemaBudget, to_gemini_schema
from .thinking import GENERIC, ThinkingSpec, split_model, thinking_config

CUSTOM_INPUT = "input"  # the one parameter a custom (freeform) tool is declared with
_STATEFUL = ("previous_response_id", "conversation")
_SEARCH_TOOLS = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11")


@dataclass(frozen=True)
class ResponsesRequest:
    model: str  # bare backend model id
    gemini: dict
    stream: bool
    custom_tools: frozenset[str]  # names whose calls go back as custom_tool_call items
    echo: dict  # request fields the response object repeats (tool_choice, reasoning, text…)


# --- media -----------------------------------------------------------------------------------------

def _media_ref(part: dict) -> str | None:
    if part.get("type") == "input_image":
        ref = part.get("image_url")
    elif part.get("type") == "input_file":
        ref = part.get("file_url")
    else:
        return None
    return ref.strip() if isinstance(ref, str) else None


def _content_lists(body: dict) -> list[list]:
    items = body.get("input")
    out: list[list] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        for key in ("content", "output"):
            if isinstance(item.get(key), list):
                out.append(item[key])
    return out


def media_urls(body: dict) -> list[str]:
    """http(s) URLs of input_image / input_file parts, deduplicated, in order; never raises."""
    urls = [ref for content in _content_lists(body) for part in content if isinstance(part, dict)
            for ref in [_media_ref(part)] if ref and is_remote(ref)]
    return list(dict.fromkeys(urls))


def _media_part(media: MediaParts, part: dict, p: str) -> dict:
    if part.get("file_id") is not None:
        raise TranslationError("file_id references are not supported; send the data inline or by URL", f"{p}.file_id")
    if part["type"] == "input_image":
        return media.part({"type": "image_url", "image_url": {"url": part.get("image_url")}}, p)
    if part.get("file_data") is not None:
        return media.part({"type": "file", "file": {"file_data": part.get("file_data"), "filename": part.get("filename")}}, p)
    return media.part({"type": "image_url", "image_url": {"url": part.get("file_url")}}, p)


# --- input items -----------------------------------------------------------------------------------

class _Input:
    def __init__(self, media: MediaParts) -> None:
        self.media = media
        self.system: list[dict] = []
        self.contents: list[dict] = []
        self.call_names: dict[str, str] = {}
        self.pending = signatures.Pending()

    def _append(self, role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if role != "model":
            self.pending.reset()  # a signature belongs to the model turn it was given in
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def add(self, i: int, item: Any) -> None:
        p = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{p} must be an object", p)
        kind = item.get("type", "message")
        if kind == "message":
            self._message(item, p)
        elif kind == "reasoning":
            self.pending.offer(item.get("encrypted_content"))
        elif kind in ("function_call", "custom_tool_call"):
            self._call(item, p, kind)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._output(item, p)
        else:
            raise TranslationError(f"{p}.type {kind!r} is not supported", f"{p}.type")

    def _message(self, item: dict, p: str) -> None:
        role = item.get("role")
        content = item.get("content")
        if isinstance(content, str):
            content = [{"type": "input_text" if role != "assistant" else "output_text", "text": content}]
        if not isinstance(content, list):
            raise TranslationError(f"{p}.content must be a string or an array of content parts", f"{p}.content")
        parts: list[dict] = []
        for j, part in enumerate(content):
            pp = f"{p}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
                text = string(part.get("text"), f"{pp}.text")
                if text:
                    parts.append({"text": text})
            elif kind == "refusal":
                parts.append({"text": string(part.get("refusal"), f"{pp}.refusal")})
            elif kind in ("input_image", "input_file") and role in ("user", "system", "developer"):
                parts.append(_media_part(self.media, part, pp))
            else:
                raise TranslationError(f"{pp}.type {kind!r} is not supported in a {role} message", f"{pp}.type")
        if role in ("system", "developer"):
            self.system.extend(parts)
        elif role == "user":
            self._append("user", parts)
        elif role == "assistant":
            if parts:
                self.pending.attach(parts[0])
            self._append("model", parts)
        else:
            raise TranslationError(f"{p}.role must be user, assistant, system or developer", f"{p}.role")

    def _call(self, item: dict, p: str, kind: str) -> None:
        call_id = string(item.get("call_id"), f"{p}.call_id")
        name = string(item.get("name"), f"{p}.name")
        if not call_id or not name:
            raise TranslationError(f"{p} needs a non-empty call_id and name", p)
        if kind == "custom_tool_call":
            args: Any = {CUSTOM_INPUT: string(item.get(CUSTOM_INPUT, ""), f"{p}.input")}
        else:
            raw = item.get("arguments")
            try:
                args = _json_args(raw) if raw not in (None, "") else {}
            except ValueError:
                raise TranslationError(f"{p}.arguments must be a JSON object encoded as a string", f"{p}.arguments") from None
            if not isinstance(args, dict):
                raise TranslationError(f"{p}.arguments must be a JSON object", f"{p}.arguments")
        core, sig = tool_ids.decode(call_id)
        self.call_names[call_id] = self.call_names[core] = name
        part = {"functionCall": {"id": core, "name": name, "args": shallow(args, f"{p}.arguments")}}
        self._append("model", [self.pending.attach(part, sig)])

    def _output(self, item: dict, p: str) -> None:
        call_id = string(item.get("call_id"), f"{p}.call_id")
        core, _ = tool_ids.decode(call_id)
        name = self.call_names.get(call_id) or self.call_names.get(core)
        if name is None:
            raise TranslationError(f"{p}.call_id {call_id!r} does not match a function_call earlier in input", f"{p}.call_id")
        output = item.get("output")
        extra: list[dict] = []
        if isinstance(output, list):
            texts = []
            for j, part in enumerate(output):
                pp = f"{p}.output[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in ("input_text", "output_text", "text"):
                    texts.append(string(part.get("text"), f"{pp}.text"))
                elif kind in ("input_image", "input_file"):
                    extra.append(_media_part(self.media, part, pp))
                else:
                    raise TranslationError(f"{pp}.type {kind!r} is not supported in a tool output", f"{pp}.type")
            output = "\n".join(texts)
        elif output is None:
            output = ""
        elif not isinstance(output, str):
            raise TranslationError(f"{p}.output must be a string or an array of content parts", f"{p}.output")
        self._append("user", [{"functionResponse": {"id": core, "name": name, "response": {"output": output}}}, *extra])


def _json_args(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise ValueError("arguments must be a string")
    return orjson.loads(raw)


# --- tools -----------------------------------------------------------------------------------------

def _tools(body: dict, budget: SchemaBudget) -> tuple[list[dict], list[dict], frozenset[str]]:
    raw = body.get("tools")
    if raw is None:
        return [], [], frozenset()
    if not isinstance(raw, list):
        raise TranslationError("tools must be an array", "tools")
    declarations: list[dict] = []
    builtins: list[dict] = []
    custom: set[str] = set()
    for j, tool in enumerate(raw):
        p = f"tools[{j}]"
        if not isinstance(tool, dict):
            raise TranslationError(f"{p} must be an object", p)
        kind = tool.get("type")
        if kind == "function":
            declarations.append(declaration({k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}, p, budget))
        elif kind == "custom":
            name = string(tool.get("name"), f"{p}.name")
            fmt = tool.get("format")
            grammar = fmt.get("definition") if isinstance(fmt, dict) and fmt.get("type") == "grammar" else None
            desc = str(tool.get("description") or "")
            if isinstance(grammar, str) and grammar:
                desc += f"\n\nThe `{CUSTOM_INPUT}` argument must follow this grammar:\n{grammar}"
            declarations.append({"name": name, "description": desc.strip(), "parameters": {
                "type": "object", "properties": {CUSTOM_INPUT: {"type": "string"}}, "required": [CUSTOM_INPUT]}})
            custom.add(name)
        elif kind in _SEARCH_TOOLS:
            if {"googleSearch": {}} not in builtins:
                builtins.append({"googleSearch": {}})
        elif not isinstance(kind, str):
            raise TranslationError(f"{p}.type is required", f"{p}.type")
        # Other hosted tools (local_shell, image_generation, file_search…) have no Gemini
        # counterpart; the model simply does not get them.
    if len({d["name"] for d in declarations}) != len(declarations):
        raise TranslationError("a tool name is declared twice", "tools")
    return declarations, builtins, frozenset(custom)


def _text_format(body: dict, gen: dict, budget: SchemaBudget) -> None:
    text = body.get("text")
    if text is None:
        return
    if not isinstance(text, dict):
        raise TranslationError("text must be an object", "text")
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise TranslationError("text.format must be an object", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return
    if kind not in ("json_schema", "json_object"):
        raise TranslationError("text.format.type must be text, json_schema or json_object", "text.format.type")
    gen["responseMimeType"] = "application/json"
    if kind == "json_schema" and fmt.get("schema") is not None:
        cleaned = to_gemini_schema(fmt["schema"], param="text.format.schema", ordered=True, budget=budget)
        if cleaned and not (cleaned.get("type") == "object" and not cleaned.get("properties")):
            gen["responseSchema"] = cleaned


# --- entry point -----------------------------------------------------------------------------------

def responses_request_to_gemini(body: dict, fetched: Mapping[str, tuple[str, str]] | None = None, *,
                                thinking: ThinkingSpec | None = None, spliced: Spliced | None = None) -> ResponsesRequest:
    """`thinking` is the model's range from the upstream's catalogue (None: unknown model). With
    `spliced`, inline media may be its tokens (the caller then cuts the serialized request with
    `spliced.pieces`)."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise TranslationError("model is required and must be a string", "model")
    for key in _STATEFUL:
        if body.get(key) is not None:
            raise TranslationError(f"{key} is not supported: this gateway stores no responses; send the whole "
                                   "conversation in input (as with store: false)", key, code="unsupported_parameter")
    base, suffix = split_model(model.strip())
    budget = SchemaBudget()  # one for all the schemas of the request
    declarations, builtins, custom = _tools(body, budget)

    conv = _Input(MediaParts(fetched or {}, spliced))
    instructions = body.get("instructions")
    if instructions is not None and string(instructions, "instructions"):
        conv.system.append({"text": instructions})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise TranslationError("input must be a non-empty string or array of items", "input")
    for i, item in enumerate(items):
        conv.add(i, item)
    if not conv.contents:
        raise TranslationError("input contains no content", "input")
    spec = thinking or GENERIC
    gemini = conversation_request(conv.contents, conv.system, spec)
    add_tools(gemini, declarations, builtins, {"tool_choice": body.get("tool_choice")})

    gen: dict = {}
    add_sampling(body, gen)
    limit = integer(body, "max_output_tokens", 1)
    if limit is not None:
        gen["maxOutputTokens"] = limit
    _text_format(body, gen, budget)
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise TranslationError("reasoning must be an object", "reasoning")
    reasoning = reasoning or {}
    effort = reasoning.get("effort")
    if effort == "max":
        effort = "xhigh"
    try:
        thinking_cfg = thinking_config(spec, suffix=suffix, reasoning_effort=effort,
                                       thinking=True if reasoning.get("summary") else None, extra_google=None)
    except TranslationError as exc:
        raise TranslationError(exc.message.replace("reasoning_effort", "reasoning.effort"), "reasoning.effort") from None
    add_generation(gemini, gen, thinking_cfg)

    stream = stream_flag(body)
    echo = {k: body.get(k) for k in ("tool_choice", "reasoning", "text", "instructions", "max_output_tokens",
                                     "temperature", "top_p", "parallel_tool_calls", "metadata", "store")}
    return ResponsesRequest(model=base, gemini=gemini, stream=stream, custom_tools=custom, echo=echo)
