"""Gemini GenerateContentResponse (unary or stream chunks) → OpenAI chat completion objects.

Pure: the edge feeds parsed JSON and writes out whatever comes back.

* text → `content`; `thought: true` parts → `reasoning_content` (never mixed into content);
* functionCall → `tool_calls`, ids from tool_ids (Gemini's id or a deterministic one, with the
  thoughtSignature riding along) plus `extra_content.google.thought_signature`;
* executableCode / codeExecutionResult → fenced ```python / ```output blocks in content, each
  on its own lines; inline images → a markdown data-URL image;
* in streams every function call is one delta with its own `index`, id, name and complete
  arguments, so parallel calls never merge on the client;
* the stream's finish_reason is sent once, on the final chunk, from the last finishReason seen.
The unary and streamed translations of the same response give identical content and tool calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from . import tool_ids

_CONTENT_FILTER = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR",
})
_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error"}
_GRPC_TYPES = {"INVALID_ARGUMENT": "invalid_request_error", "FAILED_PRECONDITION": "invalid_request_error",
               "UNAUTHENTICATED": "authentication_error", "PERMISSION_DENIED": "permission_error",
               "NOT_FOUND": "not_found_error", "RESOURCE_EXHAUSTED": "rate_limit_error"}


def finish_reason(gemini_reason: object, has_tool_calls: bool) -> str:
    """Gemini finishReason → OpenAI finish_reason (only ever used for the final chunk)."""
    if gemini_reason == "MAX_TOKENS":
        return "length"
    if gemini_reason in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def _count(usage: dict, key: str) -> int:
    value = usage.get(key)
    if isinstance(value, bool):
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.isdigit():  # proto3 JSON may render int64 as a string
        return int(value)
    return 0


def usage_to_openai(usage_metadata: dict) -> dict:
    um = usage_metadata if isinstance(usage_metadata, dict) else {}
    # Tokens a built-in tool (code execution, search) fed back to the model are input too.
    prompt = _count(um, "promptTokenCount") + _count(um, "toolUsePromptTokenCount")
    thoughts = _count(um, "thoughtsTokenCount")
    completion = _count(um, "candidatesTokenCount") + thoughts
    total = max(_count(um, "totalTokenCount"), prompt + completion)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": _count(um, "cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def _unwrap(resp: dict) -> dict:
    """Accept the Code Assist envelope {"response": …, "traceId": …} as well as the bare response."""
    if isinstance(resp, dict) and "candidates" not in resp and isinstance(resp.get("response"), dict):
        return resp["response"]
    return resp if isinstance(resp, dict) else {}


def _parts(candidate: dict) -> list[dict]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _candidates(resp: dict) -> list[tuple[int, dict]]:
    cands = resp.get("candidates")
    out = []
    for pos, cand in enumerate(cands if isinstance(cands, list) else []):
        if isinstance(cand, dict):
            index = cand.get("index")
            out.append((index if isinstance(index, int) and not isinstance(index, bool) and index >= 0 else pos, cand))
    return out


def _blocked(resp: dict) -> bool:
    feedback = resp.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))


class GeminiStream:
    """What every stream translator (chat chunks, Responses events, Anthropic events) does with
    the backend's chunks: note the usage and a blocked prompt, translate each candidate's parts,
    keep its finish reason; nothing once finished. Subclasses say what a candidate and the end
    become."""

    def __init__(self) -> None:
        self._usage: dict = {}
        self._blocked = False
        self._done = False

    def _candidate(self, out: list, index: int, candidate: dict) -> bool:
        """Translate one candidate's parts into `out`; False when the API has no place for it."""
        raise NotImplementedError

    def _finished(self, index: int, reason: str) -> None:
        """Candidate `index` gave its finish reason."""
        raise NotImplementedError

    def _tail(self) -> list:
        """What follows the last chunk."""
        raise NotImplementedError

    def feed(self, chunk: dict) -> list:
        if self._done:
            return []
        resp = _unwrap(chunk)
        if isinstance(resp.get("usageMetadata"), dict):
            self._usage = resp["usageMetadata"]
        if _blocked(resp):
            self._blocked = True
        out: list = []
        for index, cand in _candidates(resp):
            if not self._candidate(out, index, cand):
                continue
            reason = cand.get("finishReason")
            if isinstance(reason, str) and reason and reason != "FINISH_REASON_UNSPECIFIED":
                self._finished(index, reason)
        return out

    def finish(self) -> list:
        if self._done:
            return []
        self._done = True
        return self._tail()


@dataclass
class _Content:
    """Content text for one choice; shared by both paths so they cannot disagree."""

    last: str = ""

    def _emit(self, text: str) -> str:
        if text:
            self.last = text[-1]
        return text

    def _block(self, fence: str, body: str) -> str:
        lead = "\n" if self.last and self.last != "\n" else ""
        tail = "" if body.endswith("\n") else "\n"
        return self._emit(f"{lead}```{fence}\n{body}{tail}```\n")

    def piece(self, part: dict) -> str:
        if isinstance(part.get("text"), str):
            return self._emit(part["text"])
        code = part.get("executableCode")
        if isinstance(code, dict):
            lang = str(code.get("language") or "python").lower()
            return self._block("python" if lang in ("python", "language_unspecified") else lang, str(code.get("code") or ""))
        result = part.get("codeExecutionResult")
        if isinstance(result, dict):
            return self._block("output", str(result.get("output") or ""))
        inline = part.get("inlineData")
        if isinstance(inline, dict) and str(inline.get("mimeType", "")).startswith("image/"):
            return self._emit(f"![image](data:{inline['mimeType']};base64,{inline.get('data', '')})")
        return ""


def _is_thought(part: dict) -> bool:
    return part.get("thought") is True and isinstance(part.get("text"), str)


def _tool_call(part: dict, *, completion_id: str, choice: int, call_index: int) -> dict:
    fc = part["functionCall"]
    name = fc.get("name") if isinstance(fc.get("name"), str) else ""
    core = tool_ids.core_id(fc.get("id"), tool_ids.new_call_id(completion_id, choice, call_index, name))
    signature = part.get("thoughtSignature") if isinstance(part.get("thoughtSignature"), str) else None
    args = fc.get("args") if isinstance(fc.get("args"), dict) else {}
    call = {
        "id": tool_ids.encode(core, signature),
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(args).decode()},
    }
    if signature:
        call["extra_content"] = {"google": {"thought_signature": signature}}
    return call


def _is_call(part: dict) -> bool:
    return isinstance(part.get("functionCall"), dict)


def completion_from_gemini(resp: dict, *, model: str, completion_id: str, created: int) -> dict:
    """A `chat.completion` object: one choice per candidate."""
    resp = _unwrap(resp)
    choices = []
    for index, cand in sorted(_candidates(resp), key=lambda c: c[0]):
        text = _Content()
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[dict] = []
        for part in _parts(cand):
            if _is_thought(part):
                reasoning.append(part["text"])
            elif _is_call(part):
                calls.append(_tool_call(part, completion_id=completion_id, choice=index, call_index=len(calls)))
            else:
                content.append(text.piece(part))
        joined = "".join(content)
        message: dict = {"role": "assistant", "content": joined if joined or not calls else None}
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        if calls:
            message["tool_calls"] = calls
        choices.append({
            "index": index,
            "message": message,
            "finish_reason": finish_reason(cand.get("finishReason"), bool(calls)),
            "logprobs": None,
        })
    if not choices:
        # No candidate: a blocked prompt (promptFeedback.blockReason) or an empty answer.
        choices.append({
            "index": 0,
            "message": {"role": "assistant", "content": ""},
            "finish_reason": "content_filter" if _blocked(resp) else "stop",
            "logprobs": None,
        })
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_to_openai(resp.get("usageMetadata") or {}),
    }


@dataclass
class _ChoiceState:
    text: _Content = field(default_factory=_Content)
    role_sent: bool = False
    calls: int = 0
    reason: str | None = None


class ChunkTranslator(GeminiStream):
    """Gemini stream chunks → `chat.completion.chunk` objects. Pure state machine, no I/O."""

    def __init__(self, *, model: str, completion_id: str, created: int, include_usage: bool) -> None:
        super().__init__()
        self.model = model
        self.completion_id = completion_id
        self.created = created
        self.include_usage = include_usage
        self._choices: dict[int, _ChoiceState] = {}

    @property
    def usage(self) -> dict:
        """The latest usage in OpenAI form (Gemini repeats cumulative usage; the last one counts)."""
        return usage_to_openai(self._usage)

    def _chunk(self, choices: list[dict]) -> dict:
        chunk = {"id": self.completion_id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "choices": choices}
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI does: null on every chunk but the usage chunk
        return chunk

    def _delta(self, state: _ChoiceState, index: int, delta: dict) -> dict:
        if not state.role_sent:
            delta = {"role": "assistant", **delta}
            state.role_sent = True
        return self._chunk([{"index": index, "delta": delta, "finish_reason": None, "logprobs": None}])

    def _candidate(self, out: list[dict], index: int, candidate: dict) -> bool:
        state = self._choices.setdefault(index, _ChoiceState())
        kind: str | None = None
        buf: list[str] = []

        def flush() -> None:
            text = "".join(buf)
            if kind and text:
                out.append(self._delta(state, index, {kind: text}))
            buf.clear()

        for part in _parts(candidate):
            if _is_call(part):
                flush()
                call = _tool_call(part, completion_id=self.completion_id, choice=index, call_index=state.calls)
                out.append(self._delta(state, index, {"tool_calls": [{"index": state.calls, **call}]}))
                state.calls += 1
                kind = None
                continue
            if _is_thought(part):
                this, text = "reasoning_content", part["text"]
            else:
                this, text = "content", state.text.piece(part)
            if this != kind:
                flush()
                kind = this
            buf.append(text)
        flush()
        return True

    def _finished(self, index: int, reason: str) -> None:
        self._choices[index].reason = reason

    def _tail(self) -> list[dict]:
        """The final chunk per choice (with finish_reason), then the usage chunk if asked for."""
        if not self._choices:
            self._choices[0] = _ChoiceState()
        out = []
        for index in sorted(self._choices):
            state = self._choices[index]
            if not state.role_sent:
                out.append(self._delta(state, index, {"content": ""}))
            if self._blocked and state.reason is None:
                reason = "content_filter"
            else:
                reason = finish_reason(state.reason, state.calls > 0)
            out.append(self._chunk([{"index": index, "delta": {}, "finish_reason": reason, "logprobs": None}]))
        if self.include_usage:
            usage_chunk = self._chunk([])
            usage_chunk["usage"] = self.usage
            out.append(usage_chunk)
        return out

    def error_chunk(self, message: str, code: str | int | None = None) -> dict:
        """The SSE error event for an upstream failure after the stream began; ends the stream
        (later feed/finish calls return nothing)."""
        self._done = True
        if isinstance(code, int) and not isinstance(code, bool):
            kind = _STATUS_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error")
        elif isinstance(code, str) and code.isdigit():
            kind = _STATUS_TYPES.get(int(code), "server_error" if int(code) >= 500 else "invalid_request_error")
        else:
            kind = _GRPC_TYPES.get(str(code).upper(), "server_error") if code is not None else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
