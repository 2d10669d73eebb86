"""Gemini GenerateContentResponse (unary or stream chunks) → OpenAI Responses (pure).

`ResponseStream` turns Gemini parts into the Responses event sequence, every event numbered by
`sequence_number`; the unary answer is the `response` of that sequence's final event
(`response_from_gemini`), so both paths give the same items.

Items, in the order Gemini's parts come:
* `thought: true` parts → a reasoning item, the thought text as its summary;
* a thoughtSignature → the `encrypted_content` of the reasoning item before the part it came
  with (an item with an empty summary when there was no thought text), packed by
  translate.signatures; clients that keep history replay it, and the request side puts it
  back on that part. A function call's signature also rides in its call_id (tool_ids);
* text, code, inline images → one message item with an output_text part;
* functionCall → function_call (arguments as a JSON string), or custom_tool_call for tools the
  request declared as custom (freeform).
Status: completed; MAX_TOKENS → incomplete (max_output_tokens); safety-style reasons →
incomplete (content_filter). An incomplete answer still ends with `response.completed` (whose
response says `status: "incomplete"`), since Codex treats a stream without it as broken.
"""
from __future__ import annotations

from typing import Any

import orjson

from . import signatures, tool_ids
from .gemini_to_openai import _CONTENT_FILTER, GeminiStream, _Content, _count, _is_call, _is_thought, _parts
from .responses_request import CUSTOM_INPUT


def usage_to_responses(usage_metadata: Any) -> dict:
    um = usage_metadata if isinstance(usage_metadata, dict) else {}
    prompt = _count(um, "promptTokenCount") + _count(um, "toolUsePromptTokenCount")
    thoughts = _count(um, "thoughtsTokenCount")
    output = _count(um, "candidatesTokenCount") + thoughts
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": _count(um, "cachedContentTokenCount")},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": thoughts},
            "total_tokens": max(_count(um, "totalTokenCount"), prompt + output)}


class ResponseStream(GeminiStream):
    """Gemini chunks in, Responses events out. No I/O."""

    def __init__(self, *, model: str, response_id: str, created: int, echo: dict | None = None,
                 custom_tools: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.response_id = response_id
        self.custom_tools = custom_tools
        self._seq = 0
        self._items: list[dict] = []
        self._open: dict | None = None
        self._text = _Content()
        self._reason: str | None = None
        echo = echo or {}
        self._response = {
            "id": response_id, "object": "response", "created_at": created, "status": "in_progress",
            "model": model, "output": [], "error": None, "incomplete_details": None,
            "instructions": echo.get("instructions"), "max_output_tokens": echo.get("max_output_tokens"),
            "metadata": echo.get("metadata") or {}, "parallel_tool_calls": echo.get("parallel_tool_calls", True) is not False,
            "previous_response_id": None, "reasoning": echo.get("reasoning") or {"effort": None, "summary": None},
            "store": False, "temperature": echo.get("temperature"), "text": echo.get("text") or {"format": {"type": "text"}},
            "tool_choice": echo.get("tool_choice") or "auto", "tools": [], "top_p": echo.get("top_p"),
            "truncation": "disabled", "usage": None,
        }

    def _event(self, out: list[dict], kind: str, **fields: Any) -> None:
        out.append({"type": kind, "sequence_number": self._seq, **fields})
        self._seq += 1

    def _snapshot(self) -> dict:
        return {**self._response, "output": [dict(i) for i in self._items]}

    def start(self) -> list[dict]:
        out: list[dict] = []
        self._event(out, "response.created", response=self._snapshot())
        self._event(out, "response.in_progress", response=self._snapshot())
        return out

    def heartbeat(self) -> list[dict]:
        """A real event for a silence (keeps clients' idle timers from firing)."""
        out: list[dict] = []
        if not self._done:
            self._event(out, "response.in_progress", response=self._snapshot())
        return out

    # -- items -----------------------------------------------------------------------------

    def _add(self, out: list[dict], item: dict) -> dict:
        self._close(out)
        self._items.append(item)
        self._event(out, "response.output_item.added", output_index=len(self._items) - 1, item=dict(item))
        return item

    def _item_id(self, prefix: str) -> str:
        return f"{prefix}_{self.response_id.removeprefix('resp_')}_{len(self._items)}"

    def _close(self, out: list[dict]) -> None:
        item, self._open = self._open, None
        if item is None:
            return
        index = len(self._items) - 1
        if item["type"] == "reasoning" and item["summary"]:
            part = item["summary"][0]
            self._event(out, "response.reasoning_summary_text.done", item_id=item["id"], output_index=index,
                        summary_index=0, text=part["text"])
            self._event(out, "response.reasoning_summary_part.done", item_id=item["id"], output_index=index,
                        summary_index=0, part=dict(part))
        elif item["type"] == "message":
            part = item["content"][0]
            self._event(out, "response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                        text=part["text"], logprobs=[])
            self._event(out, "response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                        part=dict(part))
        item["status"] = "completed"
        if item["type"] == "reasoning":
            item.pop("status")
        self._event(out, "response.output_item.done", output_index=index, item=_copy(item))

    def _reasoning(self, out: list[dict]) -> dict:
        if self._open is None or self._open["type"] != "reasoning":
            self._open = self._add(out, {"id": self._item_id("rs"), "type": "reasoning", "summary": []})
        return self._open

    def _sign(self, out: list[dict], signature: object) -> None:
        if not isinstance(signature, str) or not signature:
            return
        if self._open is not None and self._open["type"] == "message":
            return  # a signature on text already under way: Gemini does not need it back
        item = self._reasoning(out)
        item["encrypted_content"] = signatures.pack(signature)
        self._close(out)

    def _thought(self, out: list[dict], part: dict) -> None:
        item = self._reasoning(out)
        index = len(self._items) - 1
        if part["text"]:
            if not item["summary"]:
                item["summary"].append({"type": "summary_text", "text": ""})
                self._event(out, "response.reasoning_summary_part.added", item_id=item["id"], output_index=index,
                            summary_index=0, part={"type": "summary_text", "text": ""})
            item["summary"][0]["text"] += part["text"]
            self._event(out, "response.reasoning_summary_text.delta", item_id=item["id"], output_index=index,
                        summary_index=0, delta=part["text"])
        self._sign(out, part.get("thoughtSignature"))

    def _call(self, out: list[dict], part: dict) -> None:
        fc = part["functionCall"]
        name = fc.get("name") if isinstance(fc.get("name"), str) else ""
        signature = part.get("thoughtSignature")
        self._sign(out, signature)
        calls = sum(1 for i in self._items if i["type"] in ("function_call", "custom_tool_call"))
        core = tool_ids.core_id(fc.get("id"), tool_ids.new_call_id(self.response_id, 0, calls, name))
        call_id = tool_ids.encode(core, signature if isinstance(signature, str) else None)
        args = fc.get("args") if isinstance(fc.get("args"), dict) else {}
        index = len(self._items)
        if name in self.custom_tools:
            text = args.get(CUSTOM_INPUT)
            text = text if isinstance(text, str) else orjson.dumps(args).decode()
            item = self._add(out, {"id": self._item_id("ctc"), "type": "custom_tool_call", "status": "in_progress",
                                   "call_id": call_id, "name": name, "input": ""})
            self._event(out, "response.custom_tool_call_input.delta", item_id=item["id"], output_index=index, delta=text)
            self._event(out, "response.custom_tool_call_input.done", item_id=item["id"], output_index=index, input=text)
            item["input"] = text
        else:
            arguments = orjson.dumps(args).decode()
            item = self._add(out, {"id": self._item_id("fc"), "type": "function_call", "status": "in_progress",
                                   "call_id": call_id, "name": name, "arguments": ""})
            self._event(out, "response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                        delta=arguments)
            self._event(out, "response.function_call_arguments.done", item_id=item["id"], output_index=index,
                        name=name, arguments=arguments)
            item["arguments"] = arguments
        self._open = item
        self._close(out)

    def _output_text(self, out: list[dict], part: dict) -> None:
        self._sign(out, part.get("thoughtSignature"))
        text = self._text.piece(part)
        if not text:
            return
        if self._open is None or self._open["type"] != "message":
            item = self._add(out, {"id": self._item_id("msg"), "type": "message", "role": "assistant",
                                   "status": "in_progress", "content": []})
            self._open = item
            self._event(out, "response.content_part.added", item_id=item["id"], output_index=len(self._items) - 1,
                        content_index=0, part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            item["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        item = self._open
        item["content"][0]["text"] += text
        self._event(out, "response.output_text.delta", item_id=item["id"], output_index=len(self._items) - 1,
                    content_index=0, delta=text, logprobs=[])

    # -- chunks ----------------------------------------------------------------------------

    def _candidate(self, out: list[dict], index: int, candidate: dict) -> bool:
        if index != 0:
            return False  # a response has one output
        for part in _parts(candidate):
            if _is_thought(part):
                self._thought(out, part)
            elif _is_call(part):
                self._call(out, part)
            else:
                self._output_text(out, part)
        return True

    def _finished(self, index: int, reason: str) -> None:
        self._reason = reason

    def _tail(self) -> list[dict]:
        out: list[dict] = []
        self._close(out)
        response = self._snapshot()
        response["usage"] = usage_to_responses(self._usage)
        if self._reason == "MAX_TOKENS":
            response.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
        elif self._reason in _CONTENT_FILTER or (self._blocked and not self._items):
            response.update(status="incomplete", incomplete_details={"reason": "content_filter"})
        else:
            response["status"] = "completed"
        self._event(out, "response.completed", response=response)
        return out

    def failed(self, code: str, message: str) -> list[dict]:
        """The events that end a stream on a backend failure after it began."""
        self._done = True
        out: list[dict] = []
        response = self._snapshot()
        response.update(status="failed", error={"code": code, "message": message}, usage=usage_to_responses(self._usage))
        self._event(out, "response.failed", response=response)
        return out


def _copy(item: dict) -> dict:
    out = dict(item)
    for key in ("summary", "content"):
        if key in out:
            out[key] = [dict(x) for x in out[key]]
    return out


def response_from_gemini(resp: dict, *, model: str, response_id: str, created: int, echo: dict | None = None,
                         custom_tools: frozenset[str] = frozenset()) -> dict:
    machine = ResponseStream(model=model, response_id=response_id, created=created, echo=echo, custom_tools=custom_tools)
    machine.feed(resp)
    return machine.finish()[-1]["response"]
