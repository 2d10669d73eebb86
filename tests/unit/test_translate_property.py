"""Property tests: random OpenAI requests only ever fail with TranslationError, and Gemini
responses translate (unary and streamed, however chunked) without losing text or tool calls."""
from __future__ import annotations

import base64
import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.edge.translate import (
    ChunkTranslator,
    TranslationError,
    chat_request_to_gemini,
    completion_from_gemini,
    media_urls,
)
from services.edge.translate.openai_to_gemini import SKIP_SIGNATURE
from tests.unit.thinking_ranges import spec_for

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(40)).decode()
MODELS = ["gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-3-pro-preview", "gemini-3-flash-preview",
          "gemini-3.1-pro-preview", "gemini-2.0-pro", "models/gemini-2.5-pro"]
SUFFIXES = ["", "-thinking", "-nothinking", "-maxthinking"]

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
json_object = st.dictionaries(st.text(min_size=1, max_size=8), json_value, max_size=4)
names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
call_ids = st.one_of(st.from_regex(r"call_[A-Za-z0-9]{1,12}", fullmatch=True), st.text(min_size=1, max_size=30))

text_part = st.builds(lambda t: {"type": "text", "text": t}, st.text(max_size=40))
# Mostly valid references, sometimes garbage (which must come back as TranslationError).
media_url = st.sampled_from([f"data:image/png;base64,{PNG}", PNG, "https://example.com/a.png", "http://example.com/b.wav"] * 6
                             + ["data:image/png;base64,!!!", "garbage url", "", "ftp://x/y"])
image_part = st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, media_url)
audio_part = st.builds(lambda d, f: {"type": "input_audio", "input_audio": {"data": d, "format": f}}, media_url, st.sampled_from(["wav", "mp3"]))
content = st.one_of(st.text(min_size=1, max_size=60), st.lists(st.one_of(text_part, image_part, audio_part), max_size=4))
arguments = st.one_of(json_object.map(lambda o: orjson.dumps(o).decode()), st.sampled_from(["", "{}"] * 4 + ["{oops", "[1]"]))
tool_call = st.fixed_dictionaries(
    {"id": call_ids, "type": st.just("function"), "function": st.fixed_dictionaries({"name": names, "arguments": arguments})},
    optional={"extra_content": st.fixed_dictionaries({"google": st.fixed_dictionaries({"thought_signature": st.text(min_size=1, max_size=20)})})},
)


@st.composite
def conversations(draw) -> list[dict]:
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": draw(st.text(max_size=40))})
    for _ in range(draw(st.integers(1, 5))):
        messages.append({"role": "user", "content": draw(content)})
        if draw(st.booleans()):
            calls = draw(st.lists(tool_call, min_size=1, max_size=3, unique_by=lambda c: c["id"]))
            messages.append({"role": "assistant", "content": draw(st.one_of(st.none(), st.text(max_size=30))), "tool_calls": calls})
            for call in calls:
                messages.append({"role": "tool", "tool_call_id": call["id"],
                                 "content": draw(st.one_of(st.text(max_size=30), json_object.map(lambda o: orjson.dumps(o).decode())))})
        elif draw(st.booleans()):
            messages.append({"role": "assistant", "content": draw(st.text(max_size=40))})
    return messages


tool_defs = st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": names},
    optional={"description": st.text(max_size=20), "parameters": st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(names, st.sampled_from(
            [{"type": "string"}, {"type": "integer"}, {"type": ["string", "null"]}, {"type": "array", "items": {"type": "number"}},
             {"type": "object", "additionalProperties": True}, {"enum": ["a", "b"]}, {"$ref": "#/$defs/X"}]), max_size=3),
         "$defs": st.just({"X": {"type": "string"}})},
        optional={"required": st.lists(names, max_size=2), "additionalProperties": st.booleans()})})}),
    max_size=3, unique_by=lambda t: t["function"]["name"])

optional_params = {
    "stream": st.booleans(), "temperature": st.one_of(st.floats(0, 2), st.floats(0, 2), st.text(max_size=3)), "top_p": st.floats(0, 1),
    "max_tokens": st.one_of(st.integers(-5, 5000), st.none()), "max_completion_tokens": st.integers(1, 5000),
    "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=3)), "n": st.integers(0, 3), "seed": st.integers(),
    "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}, {"type": "bogus"}]),
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "bogus"]),
    "thinking": st.one_of(st.booleans(), st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled"])}, optional={"budget_tokens": st.integers(-3, 50000)})),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": "a"}}]),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "extra_body": st.fixed_dictionaries({"google": st.fixed_dictionaries({}, optional={"thinking_config": st.fixed_dictionaries({}, optional={
        "thinking_budget": st.integers(-1, 40000), "include_thoughts": st.booleans()})})}),
    "user": st.text(max_size=5), "unknown_future_field": json_value,
}


@st.composite
def requests(draw) -> dict:
    body = {"model": draw(st.sampled_from(MODELS)) + draw(st.sampled_from(SUFFIXES)), "messages": draw(conversations())}
    tools = draw(tool_defs)
    if tools:
        body["tools"] = tools
    body.update(draw(st.fixed_dictionaries({}, optional=optional_params)))
    return body


def check_gemini_request(gemini: dict, model: str) -> None:
    orjson.dumps(gemini)  # serialisable as the edge will send it
    contents = gemini["contents"]
    assert contents
    roles = [c["role"] for c in contents]
    assert all(a != b for a, b in zip(roles, roles[1:])), roles  # alternation
    for turn in contents:
        assert turn["parts"]
        for part in turn["parts"]:
            assert "thought" not in part
            assert part.get("text", "x") != ""
            if "functionResponse" in part:
                assert part["functionResponse"]["name"]
            if "functionCall" in part:
                assert isinstance(part["functionCall"]["args"], dict)
        if model.startswith("gemini-3") and turn["role"] == "model":
            calls = [p for p in turn["parts"] if "functionCall" in p]
            if calls:
                assert calls[0].get("thoughtSignature")
    cfg = gemini.get("generationConfig", {}).get("thinkingConfig", {})
    assert not ("thinkingLevel" in cfg and "thinkingBudget" in cfg)


@given(body=requests())
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_random_requests_only_fail_with_translation_error(body: dict) -> None:
    urls = media_urls(body)
    fetched = {u: ("image/png", PNG) for u in urls}
    try:
        req = chat_request_to_gemini(body, fetched, thinking=spec_for(body["model"]))
    except TranslationError as exc:
        assert exc.param is None or isinstance(exc.param, str)
        return
    check_gemini_request(req.gemini, req.model)


# --- responses -------------------------------------------------------------------------------------

gemini_part = st.one_of(
    st.builds(lambda t: {"text": t}, st.text(max_size=30)),
    st.builds(lambda t: {"text": t, "thought": True}, st.text(max_size=30)),
    st.builds(lambda n, a, s: {"functionCall": {"name": n, "args": a}, **({"thoughtSignature": s} if s else {})},
              names, json_object, st.one_of(st.none(), st.text(min_size=1, max_size=40))),
    st.builds(lambda n, a, i: {"functionCall": {"id": i, "name": n, "args": a}}, names, json_object, st.from_regex(r"call_[0-9]{1,4}", fullmatch=True)),
    st.builds(lambda c: {"executableCode": {"language": "PYTHON", "code": c}}, st.text(max_size=20)),
    st.builds(lambda o: {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": o}}, st.text(max_size=20)),
)


@given(parts=st.lists(gemini_part, max_size=12), cuts=st.lists(st.integers(0, 12), max_size=5),
       finish=st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "OTHER", None]), model=st.sampled_from(["gemini-3-pro-preview", "gemini-2.5-pro"]))
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_responses_lose_nothing_and_round_trip(parts: list[dict], cuts: list[int], finish: str | None, model: str) -> None:
    # Unique Gemini ids within one response, as the backend would send them.
    seen: set[str] = set()
    for p in parts:
        fc = p.get("functionCall")
        if fc and "id" in fc:
            if fc["id"] in seen:
                del fc["id"]
            seen.add(fc.get("id", ""))
    resp = {"candidates": [{"content": {"role": "model", "parts": parts}, **({"finishReason": finish} if finish else {})}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5}}
    unary = completion_from_gemini(resp, model=model, completion_id="chatcmpl-p", created=1)
    message = unary["choices"][0]["message"]

    # Every text and every call is there, in order.
    texts = [p["text"] for p in parts if "text" in p and not p.get("thought")]
    position = 0
    for t in texts:
        found = (message["content"] or "").find(t, position)
        assert found >= 0
        position = found + len(t)
    assert message.get("reasoning_content", "") == "".join(p["text"] for p in parts if p.get("thought"))
    calls = [p for p in parts if "functionCall" in p]
    got = message.get("tool_calls", [])
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got] == \
           [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in calls]
    assert len({c["id"] for c in got}) == len(got)

    # Streamed in arbitrary pieces: the same content, reasoning and calls.
    bounds = sorted({0, len(parts), *[min(c, len(parts)) for c in cuts]})
    chunks = [{"candidates": [{"content": {"role": "model", "parts": parts[a:b]}}]} for a, b in zip(bounds, bounds[1:])]
    chunks.append({"candidates": [{"content": {"role": "model", "parts": []}, **({"finishReason": finish} if finish else {})}],
                   "usageMetadata": resp["usageMetadata"]})
    tr = ChunkTranslator(model=model, completion_id="chatcmpl-p", created=1, include_usage=True)
    out = [c for ch in chunks for c in tr.feed(ch)] + tr.finish()
    deltas = [c["choices"][0] for c in out if c["choices"]]
    assert "".join(d["delta"].get("content") or "" for d in deltas) == (message["content"] or "")
    assert "".join(d["delta"].get("reasoning_content") or "" for d in deltas) == message.get("reasoning_content", "")
    streamed = [tc for d in deltas for tc in d["delta"].get("tool_calls", [])]
    assert [tc["index"] for tc in streamed] == list(range(len(got)))
    assert [{k: v for k, v in tc.items() if k != "index"} for tc in streamed] == got
    assert [d["finish_reason"] for d in deltas if d["finish_reason"]] == [unary["choices"][0]["finish_reason"]]
    assert out[-1]["usage"] == unary["usage"]

    # The assistant message goes back as history: calls, arguments and signatures restored.
    if got:
        history = {"model": model, "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": message["content"], "tool_calls": got},
            *({"role": "tool", "tool_call_id": c["id"], "content": "done"} for c in got),
        ]}
        g = chat_request_to_gemini(history, thinking=spec_for(model)).gemini
        model_parts = [p for p in g["contents"][1]["parts"] if "functionCall" in p]
        assert [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in model_parts] == \
               [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in calls]
        for sent, original in zip(model_parts, calls):
            expected = original.get("thoughtSignature")
            if expected is None and sent is model_parts[0] and model.startswith("gemini-3"):
                expected = SKIP_SIGNATURE
            assert sent.get("thoughtSignature") == expected
        responses = [p["functionResponse"] for p in g["contents"][2]["parts"]]
        assert [r["id"] for r in responses] == [p["functionCall"]["id"] for p in model_parts]
