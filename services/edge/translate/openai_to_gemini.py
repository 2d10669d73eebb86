"""OpenAI chat-completions request → Gemini GenerateContentRequest (pure; no I/O).

The edge calls `media_urls(body)`, fetches those URLs, then `chat_request_to_gemini(body,
fetched)`. Anything the translator cannot honour raises TranslationError naming the parameter;
parameters it does not know are ignored, and nothing the client did not ask for is added
(no forced maxOutputTokens, topK or safety settings).
"""
from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any, Mapping

import orjson
from msgspec import Raw

from ..media import OCTET_STREAM, MediaError, decode_inline, is_remote
from . import tool_ids
from .contents_writer import ContentsWriter, PartsWriter, load_message, load_tool
from .errors import TranslationError
from .schema import SchemaBudget, to_gemini_schema
from .thinking import GENERIC, ThinkingSpec, split_model, thinking_config

# Gemini's documented value for history whose function calls carry no signature (protocol §7).
SKIP_SIGNATURE = "skip_thought_signature_validator"

_MEDIA_TYPES = ("image_url", "input_audio", "file", "video_url", "audio_url")
# "codeExecution", "code_execution", "CodeExecution" … all name the same built-in tool.
_BUILTIN_TOOLS = {
    "codeexecution": "codeExecution",
    "googlesearch": "googleSearch",
    "googlesearchretrieval": "googleSearch",
    "urlcontext": "urlContext",
}
_NATIVE_TOOL_KEYS = ("codeExecution", "googleSearch", "googleSearchRetrieval", "urlContext", "functionDeclarations")
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg", "aac": "audio/aac",
                  "aiff": "audio/aiff", "m4a": "audio/mp4", "webm": "audio/webm", "opus": "audio/ogg", "pcm16": "audio/pcm"}
_IGNORED_ASSISTANT_PARTS = ("thinking", "redacted_thinking", "reasoning")


@dataclass(frozen=True)
class ChatRequest:
    model: str  # bare backend model id (suffix removed)
    gemini: dict  # a Gemini GenerateContentRequest
    stream: bool
    include_usage: bool  # stream_options.include_usage
    include_thoughts: bool


# --- media -----------------------------------------------------------------------------------------

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
            if b"://" not in memoryview(msg).tobytes():
                continue
            try:
                msg = load_message(msg, f"messages[{i}]")
            except (TranslationError, ValueError):
                continue  # chat_request_to_gemini reports it
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") in _MEDIA_TYPES:
                ref, _ = _media_ref(part)
                if isinstance(ref, str) and is_remote(ref.strip()):
                    urls.append(ref.strip())
    return list(dict.fromkeys(urls))


class _Media:
    def __init__(self, fetched: Mapping[str, tuple[str, str]]) -> None:
        self.fetched = fetched

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
            try:
                inline = decode_inline(ref)
            except MediaError as exc:
                raise TranslationError(f"{where}: {exc.message}", where) from None
            assert inline is not None
            mime, data = inline
        if mime == OCTET_STREAM and declared:
            mime = declared
        return {"inlineData": {"mimeType": mime, "data": data}}


# --- scalar parameters -----------------------------------------------------------------------------

def _number(body: dict, key: str) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranslationError(f"{key} must be a number", key)
    if isinstance(value, int) and abs(value) > 2**53:
        raise TranslationError(f"{key} is out of range", key)
    return value


INT32_MAX = 2**31 - 1


def _integer(body: dict, key: str, minimum: int | None = None, maximum: int = INT32_MAX) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TranslationError(f"{key} must be an integer", key)
    if minimum is not None and value < minimum:
        raise TranslationError(f"{key} must be at least {minimum}", key)
    if value > maximum:
        raise TranslationError(f"{key} must be at most {maximum}", key)
    return value


def _boolean(body: dict, key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise TranslationError(f"{key} must be a boolean", key)
    return value


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(f"{param} must be a string", param)
    return value


_MAX_NESTING = 100  # the edge serialises with orjson, which refuses deeper documents


def _json_loads(raw: str) -> Any:
    return orjson.loads(raw)


def _shallow(value: Any, param: str) -> Any:
    """Reject client JSON the request serialiser cannot write: nested too deeply, or holding
    integers beyond 64 bits (a parser such as the stdlib's keeps those as Python ints)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_NESTING:
            raise TranslationError(f"{param} is nested too deeply", param)
        if isinstance(node, int) and not -(2**63) <= node < 2**64:
            raise TranslationError(f"{param} holds an integer beyond 64 bits", param)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return value


# --- messages --------------------------------------------------------------------------------------

class _Messages:
    def __init__(self, media: _Media, writer: ContentsWriter | None = None) -> None:
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
            msg = load_message(msg, p)
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
                text = _text(part.get("text"), f"{pp}.text")
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
                text = _text(part.get("text"), f"{pp}.text")
                if text:
                    parts.append({"text": text})
            elif kind in _MEDIA_TYPES:
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
                    text = _text(part.get("text"), f"{pp}.text")
                elif isinstance(part, dict) and part.get("type") == "refusal":
                    text = _text(part.get("refusal"), f"{pp}.refusal")
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
            name = _text(legacy.get("name"), f"{pp}.name")
            self.legacy_call = name
            parts.append({"functionCall": {"name": name, "args": self._args(legacy.get("arguments"), f"{pp}.arguments")}})
        return parts

    def _args(self, raw: Any, param: str) -> dict:
        if raw is None or raw == "":
            return {}
        if isinstance(raw, str):
            try:
                raw = _json_loads(raw)
            except ValueError:
                raise TranslationError(f"{param} must be a JSON object encoded as a string", param) from None
        if not isinstance(raw, dict):
            raise TranslationError(f"{param} must be a JSON object", param)
        return _shallow(raw, param)

    def _call_part(self, call: Any, p: str) -> dict:
        if not isinstance(call, dict):
            raise TranslationError(f"{p} must be an object", p)
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise TranslationError(f"{p}.function must be an object", f"{p}.function")
        name = _text(fn.get("name"), f"{p}.function.name")
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
                    texts.append(_text(part.get("text"), f"{pp}.text"))
                elif isinstance(part, dict) and part.get("type") in _MEDIA_TYPES:
                    extra.append(self.media.part(part, pp))
                else:
                    raise TranslationError(f"{pp}.type is not supported in a tool message", f"{pp}.type")
            content = "".join(texts)
        if content is None:
            return {"result": ""}
        if isinstance(content, dict):
            return _shallow(content, f"{p}.content")
        if not isinstance(content, str):
            raise TranslationError(f"{p}.content must be a string or an array of content parts", f"{p}.content")
        try:
            parsed = _shallow(_json_loads(content), f"{p}.content")
        except orjson.JSONDecodeError:
            return {"result": content}
        return parsed if isinstance(parsed, dict) else {"result": parsed}


def _ensure_signatures(contents: list[dict]) -> None:
    """Gemini 3 rejects a model turn whose first function call carries no thought signature."""
    for turn in contents:
        if turn["role"] != "model":
            continue
        for part in turn["parts"]:
            if "functionCall" in part:
                part.setdefault("thoughtSignature", SKIP_SIGNATURE)
                break


# --- tools -----------------------------------------------------------------------------------------

def _builtin(name: str) -> str | None:
    return _BUILTIN_TOOLS.get(name.replace("_", "").replace("-", "").lower())


def _has_properties(params: Any) -> bool:
    return isinstance(params, dict) and bool(params.get("properties"))


def _declaration(fn: Any, p: str, budget: SchemaBudget) -> dict:
    if not isinstance(fn, dict):
        raise TranslationError(f"{p} must be an object", p)
    name = _text(fn.get("name"), f"{p}.name")
    if not name:
        raise TranslationError(f"{p}.name must not be empty", f"{p}.name")
    decl: dict = {"name": name}
    desc = fn.get("description")
    if desc is not None:
        decl["description"] = _text(desc, f"{p}.description")
    params = fn.get("parameters")
    if params is not None:
        cleaned = to_gemini_schema(params, param=f"{p}.parameters", budget=budget)
        # Gemini rejects an OBJECT schema without properties: a no-argument function has none.
        if cleaned.get("properties"):
            decl["parameters"] = cleaned
    return decl


def _tools(body: dict, budget: SchemaBudget) -> tuple[list[dict], list[dict]]:
    """(function declarations, built-in tool objects)."""
    declarations: list[dict] = []
    builtins: dict[str, dict] = {}
    raw = body.get("tools")
    if raw is not None:
        if not isinstance(raw, list):
            raise TranslationError("tools must be an array", "tools")
        for j, tool in enumerate(raw):
            p = f"tools[{j}]"
            budget.charge(p, 1)
            if isinstance(tool, Raw):
                tool = load_tool(tool, p)
            if not isinstance(tool, dict):
                raise TranslationError(f"{p} must be an object", p)
            kind = tool.get("type")
            if kind is None and any(k in tool for k in _NATIVE_TOOL_KEYS):
                # A Gemini-native tool object sent as is.
                for key in _NATIVE_TOOL_KEYS:
                    if key == "functionDeclarations" and isinstance(tool.get(key), list):
                        budget.charge(p, len(tool[key]))
                        declarations.extend(_declaration(fn, f"{p}.functionDeclarations[{k}]", budget) for k, fn in enumerate(tool[key]))
                    elif key in tool:
                        builtins[_builtin(key) or key] = tool[key] if isinstance(tool[key], dict) else {}
                continue
            if kind in (None, "function"):
                fn = tool.get("function")
                if not isinstance(fn, dict):
                    raise TranslationError(f"{p}.function must be an object", f"{p}.function")
                name = fn.get("name")
                builtin = _builtin(name) if isinstance(name, str) else None
                # The seed declares Gemini's code execution as a parameterless function; a real
                # client function that happens to share the name keeps its parameters and its role.
                if builtin and not _has_properties(fn.get("parameters")):
                    builtins[builtin] = {}
                else:
                    declarations.append(_declaration(fn, f"{p}.function", budget))
            elif isinstance(kind, str) and _builtin(kind):
                cfg = tool.get(kind)
                builtins[_builtin(kind)] = cfg if isinstance(cfg, dict) else {}
            else:
                raise TranslationError(f"{p}.type {kind!r} is not supported (function, code_execution, google_search, url_context)", f"{p}.type")
    legacy = body.get("functions")
    if legacy is not None:
        if not isinstance(legacy, list):
            raise TranslationError("functions must be an array", "functions")
        for k, fn in enumerate(legacy):
            budget.charge(f"functions[{k}]", 1)
            declarations.append(_declaration(load_tool(fn, f"functions[{k}]") if isinstance(fn, Raw) else fn,
                                            f"functions[{k}]", budget))
    seen: set[str] = set()
    for decl in declarations:
        if decl["name"] in seen:
            raise TranslationError(f"function {decl['name']!r} is declared twice", "tools")
        seen.add(decl["name"])
    return declarations, [{key: cfg} for key, cfg in builtins.items()]


def _named(choice: dict, p: str) -> str:
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError(f"{p}.function.name is required", f"{p}.function.name")
    return name


def _tool_config(body: dict, declarations: list[dict]) -> tuple[dict | None, set[str] | None]:
    """(functionCallingConfig, names to keep when the choice narrows the tools without forcing)."""
    key = "tool_choice"
    choice = body.get(key)
    if choice is None and body.get("function_call") is not None:
        key, choice = "function_call", body.get("function_call")
    if choice is None or not declarations:
        return None, None
    declared = {d["name"] for d in declarations}

    def check(names: list[str]) -> list[str]:
        for n in names:
            if n not in declared:
                raise TranslationError(f"{key} names function {n!r}, which is not among the tools", key)
        return names

    if isinstance(choice, str):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY", "any": "ANY"}.get(choice.lower())
        if mode is None:
            raise TranslationError(f"{key} must be none, auto, required or a named function", key)
        return {"mode": mode}, None
    if not isinstance(choice, dict):
        raise TranslationError(f"{key} must be a string or an object", key)
    kind = choice.get("type", "function")
    if kind == "function":
        return {"mode": "ANY", "allowedFunctionNames": check([_named(choice, key)])}, None
    if kind == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not isinstance(allowed, dict) or not isinstance(allowed.get("tools"), list):
            raise TranslationError(f"{key}.allowed_tools.tools must be an array", f"{key}.allowed_tools.tools")
        names = check([_named(t, f"{key}.allowed_tools.tools[{k}]") for k, t in enumerate(allowed["tools"]) if isinstance(t, dict)])
        if allowed.get("mode", "auto") == "required":
            return {"mode": "ANY", "allowedFunctionNames": names}, None
        # Gemini only restricts names in ANY mode; for auto the other declarations are left out.
        return {"mode": "AUTO"}, set(names)
    raise TranslationError(f"{key}.type {kind!r} is not supported", f"{key}.type")


# --- generation config -----------------------------------------------------------------------------

def _response_format(body: dict, gen: dict, budget: SchemaBudget) -> None:
    rf = body.get("response_format")
    if rf is None:
        return
    if not isinstance(rf, dict):
        raise TranslationError("response_format must be an object", "response_format")
    kind = rf.get("type")
    if kind == "text":
        return
    if kind == "json_object":
        gen["responseMimeType"] = "application/json"
        return
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, dict):
            raise TranslationError("response_format.json_schema must be an object", "response_format.json_schema")
        gen["responseMimeType"] = "application/json"
        schema = spec.get("schema")
        if schema is not None:
            cleaned = to_gemini_schema(schema, param="response_format.json_schema.schema", ordered=True, budget=budget)
            if cleaned and not (cleaned.get("type") == "object" and not cleaned.get("properties")):
                gen["responseSchema"] = cleaned
        return
    raise TranslationError("response_format.type must be text, json_object or json_schema", "response_format.type")


def _generation_config(body: dict, budget: SchemaBudget) -> dict:
    gen: dict = {}
    for key, target in (("temperature", "temperature"), ("top_p", "topP")):
        value = _number(body, key)
        if value is not None:
            gen[target] = value
    top_k = _integer(body, "top_k", 1)  # not OpenAI's, but widely sent to Gemini-backed endpoints
    if top_k is not None:
        gen["topK"] = top_k
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens is not None:
        gen["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        if stop:
            gen["stopSequences"] = [stop]
    elif isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop must be a string or an array of strings", "stop")
        if [s for s in stop if s]:
            gen["stopSequences"] = [s for s in stop if s]
    elif stop is not None:
        raise TranslationError("stop must be a string or an array of strings", "stop")
    n = _integer(body, "n", 1)
    if n is not None:
        gen["candidateCount"] = n
    seed = _integer(body, "seed", -(2**63), 2**63 - 1)
    if seed is not None:
        # OpenAI seeds are 64-bit, Gemini's are 32-bit: fold deterministically so that equal
        # seeds still mean equal sampling.
        gen["seed"] = seed if -(2**31) <= seed <= INT32_MAX else (seed & 0xFFFFFFFF) - (2**32 if seed & 0x80000000 else 0)
    for key, target in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = _number(body, key)
        # 0 is OpenAI's default and many clients always send it; some Gemini models reject any
        # penalty field, so a no-op value is not forwarded.
        if value:
            gen[target] = value
    _response_format(body, gen, budget)
    return gen


def _extra_google(body: dict) -> dict | None:
    extra = body.get("extra_body")
    google = extra.get("google") if isinstance(extra, dict) else None
    if google is None:
        google = body.get("google")  # what the SDK's extra_body={"google": …} puts on the wire
    if google is not None and not isinstance(google, dict):
        raise TranslationError("extra_body.google must be an object", "extra_body.google")
    return google


# --- entry point -----------------------------------------------------------------------------------

def _written(writer: ContentsWriter, conv: _Messages) -> dict:
    """The request's contents and system instruction from what the writers wrote (the same
    shape as the list form below)."""
    system = conv.system
    assert isinstance(system, PartsWriter)
    system_parts = system.finish()
    if not writer.turns:
        if not system.count:
            raise TranslationError("messages contain no content", "messages")
        return {"contents": orjson.Fragment(b'[{"role":"user","parts":' + system_parts + b"}]")}
    gemini: dict = {"contents": orjson.Fragment(writer.finish())}
    if system.count:
        gemini["systemInstruction"] = {"parts": orjson.Fragment(system_parts)}
    return gemini


def chat_request_to_gemini(body: dict, fetched: Mapping[str, tuple[str, str]] | None = None, *,
                           thinking: ThinkingSpec | None = None) -> ChatRequest:
    """`thinking` is the model's range from the upstream's catalogue (None: unknown model)."""
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise TranslationError("model is required and must be a string", "model")
    base, suffix = split_model(model.strip())

    messages = body.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("messages must be an array", "messages")
    if not messages:
        raise TranslationError("messages must not be empty", "messages")
    spec = thinking or GENERIC
    # Messages the edge left raw are parsed one at a time and written out as they are translated.
    writer = ContentsWriter(bool(spec.levels), SKIP_SIGNATURE) if isinstance(messages[0], Raw) else None
    conv = _Messages(_Media(fetched or {}), writer)
    for i in range(len(messages)):
        conv.add(i, messages[i])
        if writer is not None:
            messages[i] = None  # the raw message is no longer needed
    if writer is not None:
        gemini = _written(writer, conv)
    else:
        contents, system = conv.contents, conv.system
        if not contents:
            if not system:
                raise TranslationError("messages contain no content", "messages")
            # A system-only conversation: Gemini needs at least one turn, so the text becomes it.
            contents, system = [{"role": "user", "parts": system}], []
        if spec.levels:
            _ensure_signatures(contents)
        gemini = {"contents": contents}
        if system:
            gemini["systemInstruction"] = {"parts": system}

    budget = SchemaBudget()  # one for all the schemas of the request
    declarations, builtins = _tools(body, budget)
    calling, keep = _tool_config(body, declarations)
    if keep is not None:
        declarations = [d for d in declarations if d["name"] in keep]
    tools = ([{"functionDeclarations": declarations}] if declarations else []) + builtins
    if tools:
        gemini["tools"] = tools
    if calling:
        gemini["toolConfig"] = {"functionCallingConfig": calling}

    gen = _generation_config(body, budget)
    google = _extra_google(body)
    thinking_cfg = thinking_config(
        spec,
        suffix=suffix,
        reasoning_effort=body.get("reasoning_effort"),
        thinking=body.get("thinking"),
        extra_google=google,
    )
    if thinking_cfg:
        gen["thinkingConfig"] = thinking_cfg
    if gen:
        gemini["generationConfig"] = gen
    if google:
        cached = google.get("cached_content", google.get("cachedContent"))
        if cached is not None:
            gemini["cachedContent"] = _text(cached, "extra_body.google.cached_content")
        safety = google.get("safety_settings", google.get("safetySettings"))
        if safety is not None:
            param = "extra_body.google.safety_settings"
            if not isinstance(safety, list) or not all(isinstance(x, dict) for x in safety):
                raise TranslationError(f"{param} must be an array of objects", param)
            gemini["safetySettings"] = [
                {k: v for k, v in x.items() if k in ("category", "threshold", "method") and isinstance(v, str)} for x in safety
            ]

    stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise TranslationError("stream_options must be an object", "stream_options")
    include_usage = False
    if options:
        value = options.get("include_usage")
        if value is not None and not isinstance(value, bool):
            raise TranslationError("stream_options.include_usage must be a boolean", "stream_options.include_usage")
        include_usage = bool(value)
    return ChatRequest(
        model=base,
        gemini=gemini,
        stream=stream,
        include_usage=include_usage,
        include_thoughts=bool(thinking_cfg and thinking_cfg.get("includeThoughts")),
    )
