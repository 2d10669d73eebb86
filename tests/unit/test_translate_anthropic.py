"""Anthropic Messages ⇄ Gemini translators, over request and response shapes Claude Code sends."""
from __future__ import annotations

import base64

import pytest

from services.edge.settings import DEFAULT_ANTHROPIC_MODEL_MAP
from services.edge.translate import signatures, tool_ids
from services.edge.translate.anthropic_request import count_tokens_body, media_urls, messages_request_to_gemini, resolve_model
from services.edge.translate.anthropic_response import MessageStream, fold, message_from_gemini, usage_to_anthropic
from services.edge.translate.errors import TranslationError
from tests.unit.test_media import png_1x1
from tests.unit.thinking_ranges import spec_for

PNG = base64.b64encode(png_1x1()).decode()
SIG = "c2lnLWFiYw=="  # Gemini signatures are opaque base64 strings
PACKED = signatures.pack(SIG)
BASH = {"name": "Bash", "description": "Run a command", "input_schema": {
    "type": "object", "$schema": "http://json-schema.org/draft-07/schema#", "additionalProperties": False,
    "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}}, "required": ["command"]}}
BASH_DECL = {"name": "Bash", "description": "Run a command", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}}, "required": ["command"]}}


@pytest.mark.parametrize("name, expected", [
    ("claude-sonnet-4-6", "gemini-2.5-pro"),
    ("claude-opus-4-7", "gemini-2.5-pro"),
    ("claude-haiku-4-5-20251001", "gemini-2.5-flash"),
    ("claude-3-5-haiku-latest", "gemini-2.5-flash"),
    ("haiku", "gemini-2.5-flash"),
    ("claude-instant-1", "gemini-2.5-pro"),
    ("gemini-3-pro-preview", "gemini-3-pro-preview"),
    ("gemini-2.5-flash-thinking", "gemini-2.5-flash-thinking"),
])
def test_resolve_model(name, expected):
    assert resolve_model(name, DEFAULT_ANTHROPIC_MODEL_MAP) == expected


def test_resolve_model_exact_key_and_no_catch_all():
    mapping = {"claude-opus-4-7": "gemini-3-pro-preview", "opus": "gemini-2.5-pro"}
    assert resolve_model("claude-opus-4-7", mapping) == "gemini-3-pro-preview"
    assert resolve_model("claude-opus-4-1", mapping) == "gemini-2.5-pro"
    assert resolve_model("claude-sonnet-4-6", mapping) == "claude-sonnet-4-6"  # no entry: the backend says 404


REQUESTS = {
    "system-string-and-text": (
        {"model": "m", "max_tokens": 100, "system": "be brief", "messages": [{"role": "user", "content": "hi"}]},
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "systemInstruction": {"parts": [{"text": "be brief"}]},
         "generationConfig": {"maxOutputTokens": 100}},
    ),
    "claude-code-system-blocks": (
        {"model": "m", "max_tokens": 32000, "temperature": 1, "stream": True,
         "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.f3a; cc_entrypoint=cli; cch=00000;"},
                    {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
         "messages": [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                                   {"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}}]}],
         "metadata": {"user_id": "user_abc_account__session_1234"}},
        {"contents": [{"role": "user", "parts": [{"text": "<system-reminder>x</system-reminder>"}, {"text": "fix the bug"}]}],
         "systemInstruction": {"parts": [{"text": "You are Claude Code."}]},
         "generationConfig": {"maxOutputTokens": 32000, "temperature": 1}},
    ),
    "tools-two-turns": (
        {"model": "m", "max_tokens": 100, "tools": [BASH], "tool_choice": {"type": "auto"},
         "messages": [
             {"role": "user", "content": "list files"},
             {"role": "assistant", "content": [
                 {"type": "thinking", "thinking": "I should run ls", "signature": PACKED},
                 {"type": "text", "text": "Running ls."},
                 {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}}]},
             {"role": "user", "content": [
                 {"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt\nb.txt"},
                 {"type": "text", "text": "now?"}]},
         ]},
        {"contents": [
            {"role": "user", "parts": [{"text": "list files"}]},
            {"role": "model", "parts": [{"text": "Running ls.", "thoughtSignature": SIG},
                                        {"functionCall": {"id": "call_1", "name": "Bash", "args": {"command": "ls"}}}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_1", "name": "Bash", "response": {"output": "a.txt\nb.txt"}}},
                                       {"text": "now?"}]}],
         "tools": [{"functionDeclarations": [BASH_DECL]}], "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
         "generationConfig": {"maxOutputTokens": 100}},
    ),
    "signature-in-tool-id-and-error-result": (
        {"model": "m", "max_tokens": 10, "tools": [BASH], "tool_choice": {"type": "tool", "name": "Bash"},
         "messages": [
             {"role": "user", "content": "go"},
             {"role": "assistant", "content": [{"type": "tool_use", "id": tool_ids.encode("call_7", SIG), "name": "Bash",
                                                "input": {"command": "false"}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_ids.encode("call_7", SIG),
                                           "is_error": True, "content": [{"type": "text", "text": "exit 1"}]}]},
         ]},
        {"contents": [
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": [{"functionCall": {"id": "call_7", "name": "Bash", "args": {"command": "false"}},
                                         "thoughtSignature": SIG}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "call_7", "name": "Bash", "response": {"error": "exit 1"}}}]}],
         "tools": [{"functionDeclarations": [BASH_DECL]}],
         "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["Bash"]}},
         "generationConfig": {"maxOutputTokens": 10}},
    ),
    "foreign-signature-dropped-redacted-ignored": (
        {"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "EqQBCkYIBxgCKkB-real-anthropic"},
                                              {"type": "redacted_thinking", "data": "xyz"},
                                              {"type": "text", "text": "b"}]},
            {"role": "user", "content": "c"}]},
        {"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]},
                      {"role": "user", "parts": [{"text": "c"}]}],
         "generationConfig": {"maxOutputTokens": 10}},
    ),
    "media-and-documents": (
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        ]}]},
        {"contents": [{"role": "user", "parts": [
            {"inlineData": {"mimeType": "image/png", "data": PNG}},
            {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0xLjQK"}},
            {"text": "plain doc"},
            {"inlineData": {"mimeType": "image/png", "data": "FETCHED"}}]}],
         "generationConfig": {"maxOutputTokens": 10}},
    ),
    "structured-output": (
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
         "output_config": {"format": {"type": "json_schema", "schema": {
             "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}}}},
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
         "generationConfig": {"maxOutputTokens": 10, "responseMimeType": "application/json", "responseSchema": {
             "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}},
    ),
    "sampling-and-stops": (
        {"model": "m", "max_tokens": 10, "top_p": 0.9, "top_k": 40, "stop_sequences": ["\n\nHuman:", ""],
         "messages": [{"role": "user", "content": "x"}]},
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
         "generationConfig": {"maxOutputTokens": 10, "topP": 0.9, "topK": 40, "stopSequences": ["\n\nHuman:"]}},
    ),
}


@pytest.mark.parametrize("name", REQUESTS)
def test_request_translation(name):
    body, expected = REQUESTS[name]
    got = messages_request_to_gemini(body, "gemini-2.5-pro", {"https://example.com/cat.png": ("image/png", "FETCHED")})
    assert got.gemini == expected
    assert got.model == "gemini-2.5-pro"
    assert got.stream is bool(body.get("stream"))


@pytest.mark.parametrize("model, thinking, extra, expected", [
    ("gemini-2.5-pro", {"type": "enabled", "budget_tokens": 31999}, {}, {"includeThoughts": True, "thinkingBudget": 31999}),
    ("gemini-2.5-flash", {"type": "enabled", "budget_tokens": 99999}, {}, {"includeThoughts": True, "thinkingBudget": 24576}),
    ("gemini-2.5-flash", {"type": "disabled"}, {}, {"thinkingBudget": 0}),
    ("gemini-2.5-pro", {"type": "enabled", "budget_tokens": 4096, "display": "omitted"}, {}, {"thinkingBudget": 4096}),
    ("gemini-3-pro-preview", {"type": "enabled", "budget_tokens": 1024}, {}, {"includeThoughts": True, "thinkingLevel": "LOW"}),
    ("gemini-3-pro-preview", {"type": "adaptive"}, {"output_config": {"effort": "max"}},
     {"includeThoughts": True, "thinkingLevel": "HIGH"}),
    ("gemini-2.5-flash", None, {"output_config": {"effort": "low"}}, {"thinkingBudget": 1024}),
])
def test_thinking(model, thinking, extra, expected):
    body = {"model": "x", "max_tokens": 40000, "messages": [{"role": "user", "content": "q"}], **extra}
    if thinking is not None:
        body["thinking"] = thinking
    got = messages_request_to_gemini(body, model, thinking=spec_for(model))
    assert got.gemini["generationConfig"]["thinkingConfig"] == expected
    assert got.thinking == (thinking is not None and thinking["type"] != "disabled")


def test_gemini3_history_without_signature_gets_the_bypass():
    body = {"model": "x", "max_tokens": 5, "tools": [BASH], "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "ok"}]}]}
    model_turn = messages_request_to_gemini(body, "gemini-3-pro-preview",
                                            thinking=spec_for("gemini-3-pro-preview")).gemini["contents"][1]
    assert model_turn["parts"][0]["thoughtSignature"] == signatures.SKIP_SIGNATURE


def test_web_search_server_tool_and_media_urls():
    body = {"model": "x", "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://a/x.png"}},
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {"type": "url", "url": "http://b/y"}}]},
                {"type": "image", "source": {"type": "url", "url": "https://a/x.png"}}]}]}
    assert media_urls(body) == ["https://a/x.png", "http://b/y"]
    body["messages"][0]["content"] = "search"
    assert messages_request_to_gemini(body, "gemini-2.5-pro").gemini["tools"] == [{"googleSearch": {}}]


@pytest.mark.parametrize("body, param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope", "content": "x"}]}]},
     "messages[0].content[0].tool_use_id"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/tiff",
                                                                             "data": PNG}}]}]},
     "messages[0].content[0].source.media_type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     "messages[0].content[0].source.type"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "stop_sequences": "STOP"}, "stop_sequences"),
    ({"messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": "lots"}},
     "thinking.budget_tokens"),
])
def test_bad_requests_name_the_parameter(body, param):
    with pytest.raises(TranslationError) as exc:
        messages_request_to_gemini({"model": "x", "max_tokens": 5, **body}, "gemini-2.5-pro")
    assert exc.value.param == param


def test_count_tokens_body_counts_system_and_tools():
    body = {"model": "x", "system": "sys", "tools": [BASH], "messages": [{"role": "user", "content": "hello"}]}
    got = count_tokens_body(body)
    assert got["contents"][0]["parts"][0] == {"text": "sys"}
    assert '"name":"Bash"' in got["contents"][0]["parts"][1]["text"]
    assert got["contents"][1] == {"role": "user", "parts": [{"text": "hello"}]}


# --- responses ------------------------------------------------------------------------------------

def _resp(parts, finish="STOP", usage=None):
    return {"response": {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish}],
                         "usageMetadata": usage or {"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 13}}}


def test_text_message():
    msg = message_from_gemini(_resp([{"text": "Hello"}, {"text": " there"}]), model="claude-sonnet-4-6",
                              message_id="msg_1", thinking=False)
    assert msg == {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
                   "content": [{"type": "text", "text": "Hello there"}], "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0}}


def test_thinking_and_signed_call():
    parts = [{"text": "Let me look", "thought": True}, {"functionCall": {"id": "call_1", "name": "Bash", "args": {"command": "ls"}},
                                                        "thoughtSignature": SIG}]
    msg = message_from_gemini(_resp(parts), model="m", message_id="msg_2", thinking=True)
    assert msg["content"] == [
        {"type": "thinking", "thinking": "Let me look", "signature": PACKED},
        {"type": "tool_use", "id": tool_ids.encode("call_1", SIG), "name": "Bash", "input": {"command": "ls"}},
    ]
    assert msg["stop_reason"] == "tool_use"
    # Without thinking the signature still rides in the tool_use id; no thinking block is made up.
    msg = message_from_gemini(_resp(parts[1:]), model="m", message_id="msg_2", thinking=False)
    assert [b["type"] for b in msg["content"]] == ["tool_use"]
    assert tool_ids.decode(msg["content"][0]["id"]) == ("call_1", SIG)


def test_signature_without_thought_text_gets_an_empty_thinking_block():
    msg = message_from_gemini(_resp([{"text": "answer", "thoughtSignature": SIG}]), model="m", message_id="x", thinking=True)
    assert msg["content"] == [{"type": "thinking", "thinking": "", "signature": PACKED}, {"type": "text", "text": "answer"}]


@pytest.mark.parametrize("finish, expected", [("MAX_TOKENS", "max_tokens"), ("SAFETY", "refusal"),
                                              ("RECITATION", "refusal"), ("STOP", "end_turn"), ("OTHER", "end_turn")])
def test_stop_reasons(finish, expected):
    assert message_from_gemini(_resp([{"text": "x"}], finish), model="m", message_id="x", thinking=False)["stop_reason"] == expected


def test_usage_is_disjoint_with_cache():
    assert usage_to_anthropic({"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 5,
                               "thoughtsTokenCount": 7}) == {
        "input_tokens": 40, "output_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60}


def test_stream_events_in_order_and_fold_equals_unary():
    chunks = [
        {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Thinking about", "thought": True}]}}]}},
        {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": " it", "thought": True}]}}]}},
        {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi", "thoughtSignature": SIG}]}}]}},
        {"response": {"candidates": [{"content": {"role": "model", "parts": [{"text": " you"}]}, "finishReason": "STOP"}],
                      "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2, "thoughtsTokenCount": 3}}},
    ]
    machine = MessageStream(model="m", message_id="msg_s", thinking=True)
    events = machine.start()
    for c in chunks:
        events += machine.feed(c)
    events += machine.finish()
    names = [n for n, _ in events]
    assert names == ["message_start", "ping",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta", "content_block_stop",
                     "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]
    assert [d["delta"]["type"] for n, d in events if n == "content_block_delta"] == [
        "thinking_delta", "thinking_delta", "signature_delta", "text_delta", "text_delta"]
    assert all(d["type"] == n for n, d in events)
    folded = fold(events)
    assert folded["content"] == [{"type": "thinking", "thinking": "Thinking about it", "signature": PACKED},
                                 {"type": "text", "text": "Hi you"}]
    assert folded["usage"]["output_tokens"] == 5
    assert machine.feed(chunks[0]) == [] and machine.finish() == []
