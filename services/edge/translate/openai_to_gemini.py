"""OpenAI chat-completions request → Gemini GenerateContentRequest (pure; no I/O).

The edge calls `media_urls(body)`, fetches those URLs, then `chat_request_to_gemini(body,
fetched)`. Anything the translator cannot honour raises TranslationError naming the parameter;
parameters it does not know are ignored, and nothing the client did not ask for is added
(no forced maxOutputTokens, topK or safety settings).

This module holds the entry point and the generation config; messages, media, tools and the
scalar checks live in openai_messages, openai_media, openai_tools and params.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import orjson
from msgspec import Raw

from ..spliced import Spliced
from .contents_writer import ContentsWriter, PartsWriter
from .errors import TranslationError
from .openai_media import MediaParts, media_urls
from .openai_messages import Messages
from .gemini_request import add_generation, add_sampling, add_tools, conversation_request
from .openai_tools import chat_tools
from .params import INT32_MAX, boolean, integer, number, string
from .schema import SchemaBudget, to_gemini_schema
from .signatures import SKIP_SIGNATURE
from .thinking import GENERIC, ThinkingSpec, split_model, thinking_config

__all__ = ["ChatRequest", "SKIP_SIGNATURE", "chat_request_to_gemini", "media_urls"]


@dataclass(frozen=True)
class ChatRequest:
    model: str  # bare backend model id (suffix removed)
    gemini: dict  # a Gemini GenerateContentRequest
    stream: bool
    include_usage: bool  # stream_options.include_usage
    include_thoughts: bool



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
    add_sampling(body, gen)
    top_k = integer(body, "top_k", 1)  # not OpenAI's, but widely sent to Gemini-backed endpoints
    if top_k is not None:
        gen["topK"] = top_k
    max_tokens = integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = integer(body, "max_tokens", 1)
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
    n = integer(body, "n", 1)
    if n is not None:
        gen["candidateCount"] = n
    seed = integer(body, "seed", -(2**63), 2**63 - 1)
    if seed is not None:
        # OpenAI seeds are 64-bit, Gemini's are 32-bit: fold deterministically so that equal
        # seeds still mean equal sampling.
        gen["seed"] = seed if -(2**31) <= seed <= INT32_MAX else (seed & 0xFFFFFFFF) - (2**32 if seed & 0x80000000 else 0)
    for key, target in (("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = number(body, key)
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

def _written(writer: ContentsWriter, conv: Messages) -> dict:
    """The request's contents and system instruction from what the writers wrote (the same
    shape as the list form in chat_request_to_gemini)."""
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
                           thinking: ThinkingSpec | None = None, spliced: Spliced | None = None) -> ChatRequest:
    """`thinking` is the model's range from the upstream's catalogue (None: unknown model).
    With `spliced`, large inline media of messages left raw become its tokens (the caller then
    cuts the serialized request with `spliced.pieces`)."""
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
    conv = Messages(MediaParts(fetched or {}, spliced), writer)
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
        gemini = conversation_request(contents, system, spec)

    budget = SchemaBudget()  # one for all the schemas of the request
    declarations, builtins = chat_tools(body, budget)
    add_tools(gemini, declarations, builtins, body)

    gen = _generation_config(body, budget)
    google = _extra_google(body)
    thinking_cfg = thinking_config(
        spec,
        suffix=suffix,
        reasoning_effort=body.get("reasoning_effort"),
        thinking=body.get("thinking"),
        extra_google=google,
    )
    add_generation(gemini, gen, thinking_cfg)
    if google:
        cached = google.get("cached_content", google.get("cachedContent"))
        if cached is not None:
            gemini["cachedContent"] = string(cached, "extra_body.google.cached_content")
        safety = google.get("safety_settings", google.get("safetySettings"))
        if safety is not None:
            param = "extra_body.google.safety_settings"
            if not isinstance(safety, list) or not all(isinstance(x, dict) for x in safety):
                raise TranslationError(f"{param} must be an array of objects", param)
            gemini["safetySettings"] = [
                {k: v for k, v in x.items() if k in ("category", "threshold", "method") and isinstance(v, str)} for x in safety
            ]

    stream = boolean(body, "stream")
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
