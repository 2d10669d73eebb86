"""Deterministic answers: a Gemini GenerateContentRequest in, response chunks out.

Pure functions (no I/O, no clock, no randomness) so any test can predict every byte of an
answer from its request, and see whether something was lost, reordered or altered on the
way. The rules are spelled out in README.md ("Deterministic answers").
"""
from __future__ import annotations

import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from .request_fields import (RequestError, calling_config, decode_base64, field, function_declarations, gen_config,
                             has_code_execution, last_user_turn, system_text, texts, thinking, word_count)
from .signatures import signature_for

INLINE_TOKENS = 258
DEFAULT_TEXT_CHUNKS = 3
MAX_LEN_WORDS = 1_000_000
MAX_CHUNKS = 10_000
_LEN = re.compile(r"\[len=(\d+)\]")
_CHUNKS = re.compile(r"\[chunks=(\d+)\]")
_DELAY = re.compile(r"\[delay=(\d+(?:\.\d+)?)\]")
_BURST = "[burst]"
_WORD = re.compile(r"\S+")
_MEDIA_MODALITY = {"image": "IMAGE", "audio": "AUDIO", "video": "VIDEO"}


@dataclass
class Answer:
    """One model answer. `parts` is the unary form; `chunks` the same parts as streamed."""
    parts: list[dict[str, Any]]
    chunks: list[list[dict[str, Any]]]
    finish_reason: str
    usage: dict[str, Any]
    chunk_delay: float | None = None  # seconds, from a [delay=MS] directive
    burst: bool = False  # [burst]: every streamed event in one write


# --- small helpers -------------------------------------------------------------------------

def compact(value: Any) -> str:
    return orjson.dumps(value).decode()


def split_words(text: str, pieces: int) -> list[str]:
    """`text` cut at word starts into at most `pieces` non-empty pieces that concatenate to it."""
    starts = [m.start() for m in _WORD.finditer(text)]
    k = max(1, min(pieces, len(starts)))
    if k == 1:
        return [text]
    cuts = [0] + [starts[(i * len(starts)) // k] for i in range(1, k)] + [len(text)]
    return [text[cuts[i]:cuts[i + 1]] for i in range(k)]


def truncate_words(text: str, limit: int) -> tuple[str, bool]:
    """The prefix of `text` holding its first `limit` words, and whether anything was cut."""
    for i, m in enumerate(_WORD.finditer(text)):
        if i == limit:
            return text[:m.start()].rstrip(), True
    return text, False


# --- the answer ----------------------------------------------------------------------------

def _schema_value(prop: str, schema: Any) -> Any:
    if not isinstance(schema, dict):
        return f"sim-{prop}"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            for option in options:
                if isinstance(option, dict) and option.get("type") not in ("null", "NULL"):
                    return _schema_value(prop, option)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), None)
    kind = str(kind).lower() if kind is not None else ("object" if "properties" in schema else "string")
    if kind == "string":
        return f"sim-{prop}"
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return [_schema_value(prop, schema["items"])] if isinstance(schema.get("items"), dict) else []
    if kind == "object":
        return build_args(schema)
    return None


def build_args(schema: Any) -> dict[str, Any]:
    """Arguments holding every required property of a function's parameter schema."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    return {p: _schema_value(p, props.get(p)) for p in required if isinstance(p, str)}


def _function_calls(request: dict[str, Any], prompt: str) -> list[dict[str, Any]] | None:
    decls = function_declarations(request)
    fcc = calling_config(request)
    if not decls or str(fcc.get("mode", "AUTO")).upper() == "NONE":
        return None
    allowed = fcc.get("allowedFunctionNames")
    if isinstance(allowed, list) and allowed:
        decls = [d for d in decls if d["name"] in allowed] or decls
    if "[parallel]" in prompt:
        chosen = decls
    else:
        chosen = [d for d in decls if d["name"] in prompt] or decls[:1]
    prior = sum(1 for c in request["contents"] for p in c["parts"] if "functionCall" in p)
    parts = []
    for i, decl in enumerate(chosen):
        schema = decl.get("parameters", decl.get("parametersJsonSchema"))
        args = build_args(schema)
        part: dict[str, Any] = {"functionCall": {"id": f"call_{prior + i + 1}", "name": decl["name"], "args": args}}
        if i == 0:
            part["thoughtSignature"] = signature_for(decl["name"], args)
        parts.append(part)
    return parts


def _inline_suffix(turn: dict[str, Any] | None) -> str:
    if turn is None:
        return ""
    out = []
    for i, part in enumerate(turn["parts"]):
        inline = field(part, "inlineData")
        if isinstance(inline, dict):
            data = inline.get("data")
            if not isinstance(data, str):
                raise RequestError(f"Invalid value at 'inline_data.data' (part {i}): base64 string required.")
            try:
                raw = decode_base64(data)
            except (binascii.Error, ValueError):
                raise RequestError(f"Invalid value at 'inline_data.data' (TYPE_BYTES), Base64 decoding failed "
                                   f"(part {i}).") from None
            out.append(f" | inline: {field(inline, 'mimeType') or ''} {len(raw)} bytes "
                       f"sha={hashlib.sha256(raw).hexdigest()[:12]}")
        file_data = field(part, "fileData")
        if isinstance(file_data, dict):
            out.append(f" | file: {field(file_data, 'mimeType') or ''} {field(file_data, 'fileUri') or ''}")
    return "".join(out)


def _text_answer(request: dict[str, Any], prompt: str, suffix: str) -> str:
    cfg = gen_config(request)
    mime = cfg.get("responseMimeType")
    if mime == "application/json":
        return compact({"echo": prompt})
    schema = cfg.get("responseSchema") or cfg.get("responseJsonSchema")
    if mime == "text/x.enum" and isinstance(schema, dict) and isinstance(schema.get("enum"), list) \
            and schema["enum"]:
        return str(schema["enum"][0])
    m = _LEN.search(prompt)
    body = " ".join(f"w{i}" for i in range(1, min(int(m.group(1)), MAX_LEN_WORDS) + 1)) if m else f"echo: {prompt}"
    sys_text = system_text(request)
    prefix = f"system: {sys_text} | " if sys_text else ""
    return prefix + body + suffix


def _apply_stop(text: str, request: dict[str, Any]) -> str:
    stops = gen_config(request).get("stopSequences")
    if not isinstance(stops, list):
        return text
    cut = len(text)
    for stop in stops:
        if isinstance(stop, str) and stop:
            pos = text.find(stop)
            if pos != -1:
                cut = min(cut, pos)
    return text[:cut]


def _usage(request: dict[str, Any], answer_words: int, thought_words: int) -> dict[str, Any]:
    text_words = word_count(system_text(request))
    media: dict[str, int] = {}
    for content in request["contents"]:
        for part in content["parts"]:
            if isinstance(part.get("text"), str):
                text_words += word_count(part["text"])
            inline = field(part, "inlineData")
            if isinstance(inline, dict):
                kind = str(field(inline, "mimeType") or "").split("/", 1)[0]
                modality = _MEDIA_MODALITY.get(kind, "DOCUMENT")
                media[modality] = media.get(modality, 0) + INLINE_TOKENS
    prompt_tokens = text_words + sum(media.values())
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": answer_words,
        "totalTokenCount": prompt_tokens + answer_words + thought_words,
        "trafficType": "PROVISIONED_THROUGHPUT",
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": text_words}]
        + [{"modality": m, "tokenCount": n} for m, n in media.items()],
    }
    if thought_words:
        usage["thoughtsTokenCount"] = thought_words
    return usage


def _answer_words(parts: list[dict[str, Any]]) -> int:
    n = 0
    for part in parts:
        if part.get("thought"):
            continue
        if "text" in part:
            n += word_count(part["text"])
        elif "functionCall" in part:
            n += 1
        elif "executableCode" in part:
            n += word_count(part["executableCode"]["code"])
        elif "codeExecutionResult" in part:
            n += word_count(part["codeExecutionResult"]["output"])
    return n


def answer(model: str, request: dict[str, Any]) -> Answer:
    """The answer to a validated request (see validate()); RequestError for undecodable inline data."""
    contents = request["contents"]
    turn = last_user_turn(contents)
    prompt = "\n".join(texts(turn["parts"])) if turn else ""
    suffix = _inline_suffix(turn)  # decodes (and so validates) the last turn's inline data
    think = thinking(request)
    thoughts = bool(think.get("includeThoughts")) and think.get("thinkingBudget") != 0

    m = _CHUNKS.search(prompt)
    n_chunks = min(max(int(m.group(1)), 1), MAX_CHUNKS) if m else DEFAULT_TEXT_CHUNKS
    responses = [p["functionResponse"] for p in (turn["parts"] if turn else [])
                 if isinstance(p.get("functionResponse"), dict)]
    calls = None if responses else _function_calls(request, prompt)
    text: str | None = None
    finish = "STOP"
    if responses:
        text, finish = _limit("tool results: " + "; ".join(
            f"{r.get('name', '')}={compact(r.get('response', {}))}" for r in responses), request)
    elif calls:
        answer_parts = calls
    elif has_code_execution(request):
        n = word_count(prompt)
        output = str(n * n)
        answer_parts = [{"executableCode": {"language": "PYTHON", "code": f"print({n} * {n})"}},
                        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": output}},
                        {"text": f"The result is {output}."}]
    else:
        text, finish = _limit(_text_answer(request, prompt, suffix), request)
    if text is not None:  # one text part, streamed in pieces
        answer_parts = [{"text": text}]
        chunks = [[{"text": piece}] for piece in split_words(text, n_chunks)]
    else:  # every other part is streamed whole, one per event
        chunks = [[part] for part in answer_parts]

    parts = list(answer_parts)
    thought_words = 0
    if thoughts:
        thought = f"Thinking about: {prompt}"
        thought_words = word_count(thought)
        parts.insert(0, {"text": thought, "thought": True})
        chunks[:0] = [[{"text": piece, "thought": True}] for piece in split_words(thought, 2)]

    dm = _DELAY.search(prompt)
    return Answer(parts=parts, chunks=chunks, finish_reason=finish,
                  usage=_usage(request, _answer_words(answer_parts), thought_words),
                  chunk_delay=float(dm.group(1)) / 1000 if dm else None, burst=_BURST in prompt)


def _limit(text: str, request: dict[str, Any]) -> tuple[str, str]:
    text = _apply_stop(text, request)
    limit = gen_config(request).get("maxOutputTokens")
    if isinstance(limit, int) and not isinstance(limit, bool):
        text, cut = truncate_words(text, limit)
        if cut:
            return text, "MAX_TOKENS"
    return text, "STOP"


# --- response shapes -----------------------------------------------------------------------

def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish:
        cand["finishReason"] = finish
    return cand


def unary_response(ans: Answer, model: str, response_id: str, create_time: str) -> dict[str, Any]:
    """The `response` object of a generateContent reply."""
    return {"candidates": [_candidate(ans.parts, ans.finish_reason)], "usageMetadata": ans.usage,
            "modelVersion": model, "createTime": create_time, "responseId": response_id}


def stream_responses(ans: Answer, model: str, response_id: str, create_time: str) -> list[dict[str, Any]]:
    """The `response` objects of a streamGenerateContent reply, one per SSE event."""
    out = []
    last = len(ans.chunks) - 1
    for i, parts in enumerate(ans.chunks):
        chunk: dict[str, Any] = {"candidates": [_candidate(parts, ans.finish_reason if i == last else None)]}
        if i == last:
            chunk["usageMetadata"] = ans.usage
        chunk.update(modelVersion=model, createTime=create_time, responseId=response_id)
        out.append(chunk)
    return out


def count_tokens(request: Any) -> int:
    """totalTokens for a countTokens `request` ({model, contents}); raises RequestError."""
    if not isinstance(request, dict):
        raise RequestError("Invalid JSON payload: 'request' must be an object.")
    contents = request.get("contents")
    if not isinstance(contents, list):
        raise RequestError("* CountTokensRequest.contents: contents is not specified")
    total = word_count(system_text(request))
    for content in contents:
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            raise RequestError("Invalid value at 'request.contents': each content needs parts.")
        for part in content["parts"]:
            if not isinstance(part, dict):
                raise RequestError("Invalid value at 'request.contents.parts': each part must be an object.")
            if isinstance(part.get("text"), str):
                total += word_count(part["text"])
            if isinstance(field(part, "inlineData"), dict):
                total += INLINE_TOKENS
    return total
