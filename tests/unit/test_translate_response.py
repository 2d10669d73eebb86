"""Gemini response → OpenAI chat.completion / chat.completion.chunk, validated with the official
openai SDK's own models and its stream accumulator."""
from __future__ import annotations

import json

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from services.edge.translate import ChunkTranslator, completion_from_gemini, finish_reason, usage_to_openai
from services.edge.translate import tool_ids

MODEL, CID, CREATED = "gemini-2.5-pro", "chatcmpl-test", 1700000000
USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 17, "thoughtsTokenCount": 20, "totalTokenCount": 47,
         "cachedContentTokenCount": 4, "trafficType": "PROVISIONED_THROUGHPUT",
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]}


def cand(*parts, finish=None, index=None) -> dict:
    c: dict = {"content": {"role": "model", "parts": list(parts)}}
    if finish:
        c["finishReason"] = finish
    if index is not None:
        c["index"] = index
    return c


def unary(resp: dict) -> dict:
    out = completion_from_gemini(resp, model=MODEL, completion_id=CID, created=CREATED)
    ChatCompletion.model_validate(out)  # the official SDK accepts the shape
    return out


def stream(chunks: list[dict], include_usage: bool = False) -> list[dict]:
    tr = ChunkTranslator(model=MODEL, completion_id=CID, created=CREATED, include_usage=include_usage)
    out = [c for chunk in chunks for c in tr.feed(chunk)] + tr.finish()
    for c in out:
        ChatCompletionChunk.model_validate(c)
    return out


def accumulate(chunks: list[dict]):
    """What an SDK user gets from client.chat.completions.stream(...).get_final_completion()."""
    state = ChatCompletionStreamState()
    for c in chunks:
        if c["choices"]:
            state.handle_chunk(ChatCompletionChunk.model_validate(c))
    return state.get_final_completion()


# --- usage and finish reasons ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("meta", "usage"),
    [
        (USAGE, {"prompt_tokens": 10, "completion_tokens": 37, "total_tokens": 47,
                 "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 20}}),
        ({}, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
              "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}),
        ({"promptTokenCount": "12", "candidatesTokenCount": 3}, {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                                                                 "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}),
        # code execution / search results count as input
        ({"promptTokenCount": 5, "toolUsePromptTokenCount": 7, "candidatesTokenCount": 2, "totalTokenCount": 14},
         {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14,
          "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}),
    ],
)
def test_usage(meta, usage) -> None:
    assert usage_to_openai(meta) == usage


@pytest.mark.parametrize(
    ("gemini", "tools", "openai"),
    [
        ("STOP", False, "stop"), ("STOP", True, "tool_calls"), (None, True, "tool_calls"), ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "length"), ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
        ("BLOCKLIST", False, "content_filter"), ("PROHIBITED_CONTENT", False, "content_filter"), ("SPII", False, "content_filter"),
        ("IMAGE_SAFETY", False, "content_filter"), ("OTHER", False, "stop"), ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("SOMETHING_NEW", False, "stop"), (None, False, "stop"),
    ],
)
def test_finish_reason(gemini, tools, openai) -> None:
    assert finish_reason(gemini, tools) == openai


# --- unary -----------------------------------------------------------------------------------------

def test_unary_text_thoughts_usage() -> None:
    resp = {"response": {"candidates": [cand({"text": "Let me think.", "thought": True}, {"text": "Hello"}, {"text": " world"},
                                             finish="STOP")], "usageMetadata": USAGE, "modelVersion": "gemini-2.5-pro"},
            "traceId": "abc"}
    out = unary(resp)
    assert out["id"] == CID and out["object"] == "chat.completion" and out["model"] == MODEL and out["created"] == CREATED
    assert out["choices"] == [{"index": 0, "finish_reason": "stop", "logprobs": None,
                               "message": {"role": "assistant", "content": "Hello world", "reasoning_content": "Let me think."}}]
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == 20


def test_unary_parallel_calls() -> None:
    resp = {"candidates": [cand({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig-1"},
                                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                                finish="STOP")]}
    msg = unary(resp)["choices"][0]
    assert msg["finish_reason"] == "tool_calls"
    calls = msg["message"]["tool_calls"]
    assert msg["message"]["content"] is None
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert len({c["id"] for c in calls}) == 2
    assert tool_ids.decode(calls[0]["id"])[1] == "sig-1" and calls[0]["extra_content"] == {"google": {"thought_signature": "sig-1"}}
    assert tool_ids.decode(calls[1]["id"])[1] is None and "extra_content" not in calls[1]
    # deterministic: translating again gives the same ids
    assert [c["id"] for c in unary(resp)["choices"][0]["message"]["tool_calls"]] == [c["id"] for c in calls]


def test_unary_uses_gemini_call_ids() -> None:
    resp = {"candidates": [cand({"functionCall": {"id": "call_1", "name": "f", "args": {}}}, {"functionCall": {"id": "bad id!", "name": "g", "args": {}}})]}
    ids = [c["id"] for c in unary(resp)["choices"][0]["message"]["tool_calls"]]
    assert ids[0] == "call_1" and ids[1].startswith("call_") and ids[1] != "bad id!"


def test_unary_code_execution() -> None:
    resp = {"candidates": [cand(
        {"text": "I will compute it."},
        {"executableCode": {"language": "PYTHON", "code": "print(sum(range(5)))"}},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "10\n"}},
        {"text": "The result is 10."},
        finish="STOP")]}
    content = unary(resp)["choices"][0]["message"]["content"]
    assert content == "I will compute it.\n```python\nprint(sum(range(5)))\n```\n```output\n10\n```\nThe result is 10."


def test_unary_blocked_prompt() -> None:
    out = unary({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}})
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "content_filter", "logprobs": None}]
    assert out["usage"]["prompt_tokens"] == 3


def test_unary_n_candidates_and_empty() -> None:
    out = unary({"candidates": [cand({"text": "b"}, index=1, finish="MAX_TOKENS"), cand({"text": "a"}, index=0, finish="STOP")]})
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [(0, "a", "stop"), (1, "b", "length")]
    assert unary({})["choices"][0]["message"]["content"] == ""


def test_unary_image_output_and_signature_only_parts() -> None:
    resp = {"candidates": [cand({"text": "Here:"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                                {"text": "", "thoughtSignature": "zzz"}, {"fileData": {"fileUri": "gs://x"}})]}
    assert unary(resp)["choices"][0]["message"]["content"] == "Here:![image](data:image/png;base64,iVBORw0KGgo=)"


# --- streaming -------------------------------------------------------------------------------------

def deltas(chunks: list[dict]) -> list[dict]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_stream_text_with_thoughts_and_usage() -> None:
    chunks = [
        {"response": {"candidates": [cand({"text": "Thinking about: hi", "thought": True})]}, "traceId": "t"},
        {"candidates": [cand({"text": "Hel"})]},
        {"candidates": [cand({"text": "lo"})], "usageMetadata": {"promptTokenCount": 1}},
        {"candidates": [cand({"text": "!"}, finish="STOP")], "usageMetadata": USAGE},
    ]
    out = stream(chunks, include_usage=True)
    assert deltas(out) == [{"role": "assistant", "reasoning_content": "Thinking about: hi"}, {"content": "Hel"}, {"content": "lo"},
                           {"content": "!"}, {}]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == CID for c in out)
    assert [c["choices"][0]["finish_reason"] for c in out[:-1]] == [None, None, None, None, "stop"]
    assert all(c["usage"] is None for c in out[:-1])
    assert out[-1]["choices"] == [] and out[-1]["usage"] == usage_to_openai(USAGE)
    final = accumulate(out)
    assert final.choices[0].message.content == "Hello!" and final.choices[0].finish_reason == "stop"


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    out = stream([{"candidates": [cand({"text": "x"}, finish="STOP")], "usageMetadata": USAGE}])
    assert all("usage" not in c for c in out) and out[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_parallel_calls_get_distinct_indexes() -> None:
    chunks = [
        {"candidates": [cand({"text": "Checking both."})]},
        {"candidates": [cand({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "sig-A"},
                             {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}})]},
        {"candidates": [cand({"functionCall": {"name": "get_time", "args": {"tz": "CET"}}}, finish="STOP")]},
    ]
    out = stream(chunks)
    calls = [d["tool_calls"] for d in deltas(out) if "tool_calls" in d]
    assert [len(c) for c in calls] == [1, 1, 1]  # one delta per call, complete
    calls = [c[0] for c in calls]
    assert [c["index"] for c in calls] == [0, 1, 2]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_weather", "get_time"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}, {"tz": "CET"}]
    assert len({c["id"] for c in calls}) == 3
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "sig-A"}}
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # The SDK's own accumulator keeps them apart (peers that send index 0 everywhere fail here).
    final = accumulate(out)
    assert [json.loads(c.function.arguments) for c in final.choices[0].message.tool_calls] == [{"city": "Paris"}, {"city": "Rome"}, {"tz": "CET"}]
    # The same response translated unary gives the same ids and arguments.
    merged = {"candidates": [cand(*[p for ch in chunks for p in ch["candidates"][0]["content"]["parts"]], finish="STOP")]}
    unary_calls = unary(merged)["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["function"]["arguments"]) for c in unary_calls] == [(c["id"], c["function"]["arguments"]) for c in calls]


def test_stream_code_execution_matches_unary() -> None:
    parts = [{"text": "Computing"}, {"executableCode": {"language": "PYTHON", "code": "print(2+2)"}},
             {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "4"}}, {"text": "The result is 4."}]
    out = stream([{"candidates": [cand(p)]} for p in parts] + [{"candidates": [cand(finish="STOP")]}])
    text = "".join(d.get("content", "") for d in deltas(out))
    assert text == unary({"candidates": [cand(*parts)]})["choices"][0]["message"]["content"]
    assert "```python\nprint(2+2)\n```" in text and "```output\n4\n```" in text


def test_stream_finish_reason_only_on_final_chunk() -> None:
    chunks = [{"candidates": [cand({"text": "a"}, finish="FINISH_REASON_UNSPECIFIED")]},
              {"candidates": [cand({"text": "b"}, finish="MAX_TOKENS")]}]
    out = stream(chunks)
    assert [c["choices"][0]["finish_reason"] for c in out] == [None, None, "length"]


def test_stream_unknown_reason_is_stop_at_the_end() -> None:
    out = stream([{"candidates": [cand({"text": "a"}, finish="BRAND_NEW_REASON")]}])
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_blocked_prompt() -> None:
    out = stream([{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 4}}], include_usage=True)
    assert deltas(out) == [{"role": "assistant", "content": ""}, {}]
    assert out[1]["choices"][0]["finish_reason"] == "content_filter"
    assert out[-1]["usage"]["prompt_tokens"] == 4


def test_stream_safety_stop_mid_answer() -> None:
    out = stream([{"candidates": [cand({"text": "partial"})]}, {"candidates": [cand(finish="SAFETY")]}])
    assert out[-1]["choices"][0]["finish_reason"] == "content_filter"


def test_stream_multiple_candidates() -> None:
    out = stream([{"candidates": [cand({"text": "a"}, index=0), cand({"text": "b"}, index=1)]},
                  {"candidates": [cand(finish="STOP", index=0), cand({"functionCall": {"name": "f", "args": {}}}, finish="STOP", index=1)]}])
    final = accumulate(out)
    assert [(c.index, c.message.content, c.finish_reason) for c in final.choices] == [(0, "a", "stop"), (1, "b", "tool_calls")]
    role_chunks = [c for c in out if c["choices"] and "role" in c["choices"][0]["delta"]]
    assert sorted(c["choices"][0]["index"] for c in role_chunks) == [0, 1]


def test_stream_empty_upstream() -> None:
    out = stream([])
    assert deltas(out) == [{"role": "assistant", "content": ""}, {}]
    assert out[-1]["choices"][0]["finish_reason"] == "stop"


def test_finish_is_idempotent_and_error_ends_the_stream() -> None:
    tr = ChunkTranslator(model=MODEL, completion_id=CID, created=CREATED, include_usage=True)
    assert tr.feed({"candidates": [cand({"text": "x"})]})
    err = tr.error_chunk("upstream went away", 503)
    assert err == {"error": {"message": "upstream went away", "type": "server_error", "param": None, "code": 503}}
    assert tr.feed({"candidates": [cand({"text": "y"})]}) == [] and tr.finish() == []
    tr2 = ChunkTranslator(model=MODEL, completion_id=CID, created=CREATED, include_usage=False)
    assert tr2.finish() and tr2.finish() == []


@pytest.mark.parametrize(
    ("code", "kind"),
    [(429, "rate_limit_error"), ("429", "rate_limit_error"), ("RESOURCE_EXHAUSTED", "rate_limit_error"), (400, "invalid_request_error"),
     (401, "authentication_error"), (403, "permission_error"), ("UNAVAILABLE", "server_error"), (None, "server_error"), (500, "server_error")],
)
def test_error_chunk_types(code, kind) -> None:
    tr = ChunkTranslator(model=MODEL, completion_id=CID, created=CREATED, include_usage=False)
    assert tr.error_chunk("boom", code)["error"]["type"] == kind
