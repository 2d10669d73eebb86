"""OpenAI Responses ⇄ Gemini translators, over the request and event shapes Codex CLI uses."""
from __future__ import annotations

import base64

import pytest

from services.edge.translate import signatures, tool_ids
from services.edge.translate.errors import TranslationError
from services.edge.translate.responses_request import media_urls, responses_request_to_gemini
from services.edge.translate.responses_response import ResponseStream, response_from_gemini, usage_to_responses
from tests.unit.test_media import png_1x1
from tests.unit.thinking_ranges import spec_for

PNG = base64.b64encode(png_1x1()).decode()
SIG = "c2lnLXh5eg=="
PACKED = signatures.pack(SIG)
SHELL = {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": False,
         "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                        "required": ["command"], "additionalProperties": False}}
SHELL_DECL = {"name": "shell", "description": "Runs a shell command",
              "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                             "required": ["command"]}}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Apply a patch",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"}}

REQUESTS = {
    "string-input-and-instructions": (
        {"model": "gemini-2.5-pro", "instructions": "be brief", "input": "hi", "store": False},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [{"text": "be brief"}]}},
    ),
    "codex-turn-with-replayed-history": (
        {"model": "gemini-2.5-pro", "instructions": "You are Codex.", "tools": [SHELL], "tool_choice": "auto",
         "parallel_tool_calls": False, "store": False, "stream": True, "include": ["reasoning.encrypted_content"],
         "prompt_cache_key": "conv-1", "reasoning": {"effort": "medium", "summary": "auto"},
         "input": [
             {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>"}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
             {"type": "reasoning", "summary": [{"type": "summary_text", "text": "I will run ls"}], "encrypted_content": PACKED},
             {"type": "function_call", "call_id": "call_1", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
             {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
             {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "There is a.txt."}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
         ]},
        {"contents": [
            {"role": "user", "parts": [{"text": "list files"}]},
            {"role": "model", "parts": [{"functionCall": {"id": "call_1", "name": "shell", "args": {"command": ["ls"]}},
                                         "thoughtSignature": SIG}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_1", "name": "shell", "response": {"output": "a.txt"}}}]},
            {"role": "model", "parts": [{"text": "There is a.txt."}]},
            {"role": "user", "parts": [{"text": "thanks"}]}],
         "systemInstruction": {"parts": [{"text": "You are Codex."}, {"text": "<permissions>"}]},
         "tools": [{"functionDeclarations": [SHELL_DECL]}], "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
         "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192}}},
    ),
    "signature-in-call-id-custom-tool-and-hosted-tools": (
        {"model": "gemini-2.5-flash", "tools": [PATCH, {"type": "local_shell"}, {"type": "web_search", "external_web_access": True}],
         "input": [
             {"role": "user", "content": "patch it"},
             {"type": "custom_tool_call", "call_id": tool_ids.encode("call_9", SIG), "name": "apply_patch", "input": "*** Begin"},
             {"type": "custom_tool_call_output", "call_id": tool_ids.encode("call_9", SIG), "output": "ok"},
         ]},
        {"contents": [
            {"role": "user", "parts": [{"text": "patch it"}]},
            {"role": "model", "parts": [{"functionCall": {"id": "call_9", "name": "apply_patch", "args": {"input": "*** Begin"}},
                                         "thoughtSignature": SIG}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_9", "name": "apply_patch", "response": {"output": "ok"}}}]}],
         "tools": [{"functionDeclarations": [{"name": "apply_patch",
                                              "description": "Apply a patch\n\nThe `input` argument must follow this grammar:\nstart: patch",
                                              "parameters": {"type": "object", "properties": {"input": {"type": "string"}},
                                                             "required": ["input"]}}]},
                   {"googleSearch": {}}]},
    ),
    "media-output-array-and-sampling": (
        {"model": "gemini-2.5-pro", "temperature": 0.2, "top_p": 0.5, "max_output_tokens": 99,
         "text": {"format": {"type": "json_object"}},
         "input": [{"role": "user", "content": [{"type": "input_text", "text": "see"},
                                                {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
                                                {"type": "input_image", "image_url": "https://x.test/a.png"}]}]},
        {"contents": [{"role": "user", "parts": [{"text": "see"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
                                                 {"inlineData": {"mimeType": "image/png", "data": "FETCHED"}}]}],
         "generationConfig": {"temperature": 0.2, "topP": 0.5, "maxOutputTokens": 99, "responseMimeType": "application/json"}},
    ),
}


@pytest.mark.parametrize("name", REQUESTS)
def test_request_translation(name):
    body, expected = REQUESTS[name]
    got = responses_request_to_gemini(body, {"https://x.test/a.png": ("image/png", "FETCHED")},
                                      thinking=spec_for(body["model"]))
    assert got.gemini == expected
    assert got.stream is bool(body.get("stream"))


def test_custom_tools_are_remembered_and_urls_found():
    body = REQUESTS["signature-in-call-id-custom-tool-and-hosted-tools"][0]
    assert responses_request_to_gemini(body).custom_tools == {"apply_patch"}
    assert media_urls(REQUESTS["media-output-array-and-sampling"][0]) == ["https://x.test/a.png"]


def test_json_schema_and_effort_on_gemini3():
    got = responses_request_to_gemini({"model": "gemini-3-pro-preview", "input": "x", "reasoning": {"effort": "high"},
                                       "text": {"format": {"type": "json_schema", "name": "s", "strict": True, "schema": {
                                           "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                                           "additionalProperties": False}}}}, thinking=spec_for("gemini-3-pro-preview"))
    gen = got.gemini["generationConfig"]
    assert gen["thinkingConfig"] == {"thinkingLevel": "HIGH"}
    assert gen["responseSchema"]["properties"] == {"a": {"type": "string"}} and gen["responseMimeType"] == "application/json"


def test_gemini3_unsigned_history_gets_the_bypass():
    got = responses_request_to_gemini({"model": "gemini-3-pro-preview", "input": [
        {"role": "user", "content": "go"}, {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "x"}]}, thinking=spec_for("gemini-3-pro-preview"))
    assert got.gemini["contents"][1]["parts"][0]["thoughtSignature"] == signatures.SKIP_SIGNATURE


@pytest.mark.parametrize("body, param", [
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": []}, "input"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]}, "input[0].arguments"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]}, "input[0].content[0].file_id"),
    ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "tools": [SHELL], "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
])
def test_bad_requests_name_the_parameter(body, param):
    with pytest.raises(TranslationError) as exc:
        responses_request_to_gemini({"model": "gemini-2.5-pro", **body}, thinking=spec_for("gemini-2.5-pro"))
    assert exc.value.param == param


# --- responses ------------------------------------------------------------------------------------

def _chunk(parts, finish=None, usage=None):
    cand = {"content": {"role": "model", "parts": parts}}
    if finish:
        cand["finishReason"] = finish
    resp = {"candidates": [cand]}
    if usage:
        resp["usageMetadata"] = usage
    return {"response": resp}


def _run(chunks, **kw):
    machine = ResponseStream(model="gemini-2.5-pro", response_id="resp_abc", created=1, **kw)
    events = machine.start()
    for c in chunks:
        events += machine.feed(c)
    return events + machine.finish()


def test_stream_sequence_for_reasoning_then_text():
    events = _run([_chunk([{"text": "Thinking", "thought": True}]), _chunk([{"text": " hard", "thought": True}]),
                   _chunk([{"text": "Hello", "thoughtSignature": SIG}]),
                   _chunk([{"text": " world"}], "STOP", {"promptTokenCount": 3, "candidatesTokenCount": 2,
                                                         "thoughtsTokenCount": 2, "totalTokenCount": 7})])
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"] == [
        {"id": "rs_abc_0", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Thinking hard"}],
         "encrypted_content": PACKED},
        {"id": "msg_abc_1", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Hello world", "annotations": [], "logprobs": []}]}]
    assert final["usage"] == {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
                              "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 7}


def test_calls_unary_equals_stream_and_carry_signatures():
    parts = [{"functionCall": {"id": "call_1", "name": "shell", "args": {"command": ["ls"]}}, "thoughtSignature": SIG},
             {"functionCall": {"name": "apply_patch", "args": {"input": "*** Begin Patch"}}}]
    unary = response_from_gemini(_chunk(parts, "STOP"), model="m", response_id="resp_abc", created=1,
                                 custom_tools=frozenset({"apply_patch"}))
    streamed = _run([_chunk(parts[:1]), _chunk(parts[1:], "STOP")], custom_tools=frozenset({"apply_patch"}))
    assert streamed[-1]["response"]["output"] == unary["output"]
    reasoning, call, custom = unary["output"]
    assert reasoning == {"id": "rs_abc_0", "type": "reasoning", "summary": [], "encrypted_content": PACKED}
    assert call["type"] == "function_call" and call["arguments"] == '{"command":["ls"]}'
    assert tool_ids.decode(call["call_id"]) == ("call_1", SIG)
    assert custom["type"] == "custom_tool_call" and custom["input"] == "*** Begin Patch"
    assert custom["call_id"].startswith("call_")
    assert "response.custom_tool_call_input.delta" in [e["type"] for e in streamed]


@pytest.mark.parametrize("finish, status, reason", [("MAX_TOKENS", "incomplete", "max_output_tokens"),
                                                    ("SAFETY", "incomplete", "content_filter"),
                                                    ("STOP", "completed", None)])
def test_status(finish, status, reason):
    r = response_from_gemini(_chunk([{"text": "x"}], finish), model="m", response_id="resp_1", created=1)
    assert r["status"] == status
    assert (r["incomplete_details"] or {}).get("reason") == reason


def test_failed_and_heartbeat_events():
    machine = ResponseStream(model="m", response_id="resp_1", created=1)
    events = machine.start() + machine.feed(_chunk([{"text": "partial"}])) + machine.heartbeat()
    failed = machine.failed("rate_limit_exceeded", "slow down. Please try again in 3s.")
    assert events[-1]["type"] == "response.in_progress"
    assert failed[0]["type"] == "response.failed" and failed[0]["sequence_number"] == len(events)
    assert failed[0]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "slow down. Please try again in 3s."}
    assert machine.finish() == [] and machine.feed(_chunk([{"text": "x"}])) == []


def test_usage_counts_cached_and_tool_prompt():
    assert usage_to_responses({"promptTokenCount": 10, "toolUsePromptTokenCount": 5, "cachedContentTokenCount": 4,
                               "candidatesTokenCount": 2}) == {
        "input_tokens": 15, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 17}
