"""The official openai SDK against the full stack: simulator → upstream → edge → Envoy.

Every test asserts on content, and where the translation is the point, on what the
simulator actually received.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import openai
import pytest

from tests import fixtures, harness
from tests.conformance.media import MEDIA, media_server  # noqa: F401  (a fixture)
from tests.stack_fixtures import POOLS, pool_members


@pytest.fixture(scope="module", params=POOLS)
def oai_stack(request: pytest.FixtureRequest, simulator: harness.Proc,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("openai")
    creds, env = pool_members(request.param, simulator, base, "openai", code_assist_accounts=2)
    logs = base / "logs"
    up = harness.start_upstream(logs, simulator.url, creds, env)
    edge = harness.start_edge(logs, up.addr, base / "data", {"MEDIA_ALLOW_PRIVATE": "true"})
    envoy = harness.start_envoy(logs, edge.port, up.port)
    key = harness.create_key(edge, "--name", "openai-sdk")
    try:
        yield {"url": f"{envoy.url}/gemini_cli/v1", "key": key, "edge": edge}
    finally:
        for p in (envoy, edge, up):
            p.stop()


@pytest.fixture
def client(oai_stack: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=oai_stack["url"], api_key=oai_stack["key"], max_retries=0, timeout=30)


def _last_generate(sim) -> dict:
    reqs = [r for r in sim.requests() if r["op"] in ("generate", "stream")]
    assert reqs, "the simulator saw no generate call"
    return harness.sent_request(reqs[-1])


def _stream_text(stream) -> tuple[str, str, list, dict | None, str | None]:
    content, reasoning, tool_deltas, usage, finish = "", "", [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            d = choice.delta
            content += d.content or ""
            reasoning += getattr(d, "reasoning_content", None) or (d.model_extra or {}).get("reasoning_content") or ""
            tool_deltas.extend(d.tool_calls or [])
            finish = choice.finish_reason or finish
    return content, reasoning, tool_deltas, usage, finish


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone",
        "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                       "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
    },
}


def test_non_stream_text(client, sim):
    r = client.chat.completions.create(model="gemini-2.5-pro", messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ])
    assert r.choices[0].message.content == "system: be brief | echo: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens > 0 and r.usage.total_tokens >= r.usage.prompt_tokens
    sent = _last_generate(sim)
    assert sent["systemInstruction"]["parts"][0]["text"] == "be brief"


def test_stream_with_usage(client, sim):
    stream = client.chat.completions.create(
        model="gemini-2.5-flash", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "count [len=40] [chunks=5]"}])
    content, _, _, usage, finish = _stream_text(stream)
    assert content.split() == [f"w{i}" for i in range(1, 41)]
    assert finish == "stop"
    assert usage and usage["completion_tokens"] == 40 and usage["total_tokens"] == usage["prompt_tokens"] + 40


def test_image_data_url_and_bare_base64(client):
    img = fixtures.png()
    for url in (fixtures.data_url("image/png", img), fixtures.b64(img)):
        r = client.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is in the picture"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}])
        assert f"inline: image/png {len(img)} bytes" in r.choices[0].message.content


@pytest.mark.parametrize("path, mime", [("/cat.png", "image/png"), ("/talk.mp3", "audio/mp3"),
                                         ("/clip.mp4", "video/mp4")])
def test_media_by_http_url_is_fetched_and_sniffed(client, media_server, path, mime):
    r = client.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": media_server + path}},
    ]}])
    assert f"inline: {mime} {len(MEDIA[path][1])} bytes" in r.choices[0].message.content


@pytest.mark.parametrize("data, mime", [(fixtures.wav(), "audio/wav"), (fixtures.mp3(), "audio/mp3"),
                                         (fixtures.mp4(), "video/mp4")])
def test_audio_and_video_through_image_url(client, data, mime):
    stream = client.chat.completions.create(model="gemini-2.5-pro", stream=True, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is said"},
        {"type": "image_url", "image_url": {"url": fixtures.b64(data)}},
    ]}])
    content, *_ = _stream_text(stream)
    assert f"inline: {mime} {len(data)} bytes" in content


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["gemini-2.5-pro", "gemini-3-pro-preview"])
def test_two_turn_parallel_function_calling(client, sim, stream, model):
    messages = [{"role": "user", "content": "[parallel] weather in Boston and the time there"}]
    kwargs = dict(model=model, messages=messages, tools=[WEATHER, TIME])
    if stream:
        _, _, deltas, _, finish = _stream_text(client.chat.completions.create(stream=True, **kwargs))
        by_index: dict[int, dict] = {}
        for d in deltas:
            slot = by_index.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            slot["id"] = d.id or slot["id"]
            slot["name"] += d.function.name or ""
            slot["arguments"] += d.function.arguments or ""
        calls = [by_index[i] for i in sorted(by_index)]
        assistant = {"role": "assistant", "content": None, "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls]}
    else:
        r = client.chat.completions.create(**kwargs)
        finish = r.choices[0].finish_reason
        calls = [{"id": t.id, "name": t.function.name, "arguments": t.function.arguments}
                 for t in r.choices[0].message.tool_calls]
        assistant = r.choices[0].message.model_dump(exclude_none=True)
    assert finish == "tool_calls"
    assert [c["name"] for c in calls] == ["get_current_weather", "get_time"]
    assert len({c["id"] for c in calls}) == 2
    assert json.loads(calls[0]["arguments"]) == {"location": "sim-location"}
    assert json.loads(calls[1]["arguments"]) == {"tz": "sim-tz"}

    messages += [assistant,
                 {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp": 21}'},
                 {"role": "tool", "tool_call_id": calls[1]["id"], "content": "10:00"}]
    r2 = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER, TIME])
    text = r2.choices[0].message.content
    assert text.startswith("tool results: get_current_weather=") and "get_time=" in text
    assert "21" in text and "10:00" in text
    # The thought signature the backend gave on the first call came back byte for byte.
    history = _last_generate(sim)["contents"]
    model_turn = next(c for c in history if c["role"] == "model")
    sig = model_turn["parts"][0].get("thoughtSignature", "")
    assert sig.startswith("sig-"), model_turn


def test_code_execution_tool(client, sim):
    stream = client.chat.completions.create(model="gemini-2.5-pro", stream=True, messages=[
        {"role": "user", "content": "What is the sum of the first 50 prime numbers?"}],
        tools=[{"type": "function", "function": {"name": "codeExecution"}}])
    content, *_ = _stream_text(stream)
    assert "```python" in content and "The result is" in content
    assert {"codeExecution": {}} in _last_generate(sim)["tools"]


@pytest.mark.parametrize("model, extra, expected", [
    ("gemini-2.5-pro-thinking", {}, {"includeThoughts": True}),
    ("gemini-2.5-flash-nothinking", {}, {"thinkingBudget": 0}),
    ("gemini-2.5-pro-nothinking", {}, {"thinkingBudget": 128}),
    ("gemini-2.5-pro-maxthinking", {}, {"thinkingBudget": 32768}),
    ("gemini-2.5-flash", {"reasoning_effort": "low"}, {"thinkingBudget": 1024}),
    ("gemini-2.5-flash", {"reasoning_effort": "high"}, {"thinkingBudget": 24576}),
    ("gemini-2.5-flash-thinking", {"reasoning_effort": "low"}, {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini-2.5-pro", {"extra_body": {"thinking": {"type": "enabled", "budget_tokens": 5000}}},
     {"thinkingBudget": 5000, "includeThoughts": True}),
    ("gemini-2.5-flash", {"extra_body": {"thinking": {"type": "enabled", "budget_tokens": 99999}}},
     {"thinkingBudget": 24576}),
    ("gemini-3-pro-preview", {"reasoning_effort": "high"}, {"thinkingLevel": "high"}),
])
def test_thinking_forms(client, sim, model, extra, expected):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "think"}], **extra)
    cfg = _last_generate(sim)["generationConfig"]["thinkingConfig"]
    for k, v in expected.items():
        assert str(cfg.get(k)).lower() == str(v).lower(), cfg
    assert "thinkingLevel" not in cfg or "thinkingBudget" not in cfg
    reasoning = (r.choices[0].message.model_extra or {}).get("reasoning_content")
    if cfg.get("includeThoughts"):
        assert reasoning == "Thinking about: think"
    assert r.choices[0].message.content == "echo: think"


def test_thinking_stream_routes_thoughts_to_reasoning_content(client):
    stream = client.chat.completions.create(model="gemini-2.5-pro-thinking", stream=True,
                                            messages=[{"role": "user", "content": "deep question"}])
    content, reasoning, *_ = _stream_text(stream)
    assert reasoning == "Thinking about: deep question"
    assert content == "echo: deep question"


def test_response_format_json_schema(client, sim):
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"],
              "additionalProperties": False}
    r = client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "json please"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "e", "schema": schema, "strict": True}})
    assert json.loads(r.choices[0].message.content) == {"echo": "json please"}
    assert _last_generate(sim)["generationConfig"]["responseMimeType"] == "application/json"


def test_models_list_has_thinking_variants(client):
    ids = {m.id for m in client.models.list()}
    assert {"gemini-2.5-pro", "gemini-2.5-pro-thinking", "gemini-2.5-flash-nothinking",
            "gemini-3-pro-preview"} <= ids


def test_errors_in_openai_shape(client, oai_stack):
    bad = openai.OpenAI(base_url=oai_stack["url"], api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "x"}],
                                       temperature="hot")
    assert exc.value.body and exc.value.body.get("param") == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_rate_limited_pool_gives_429_with_retry_after(client, sim):
    sim.add_fault(account="*", op="generate", kind="429", times=-1, retry_delay="7s", model="gemini-2.5-flash-lite")
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="gemini-2.5-flash-lite", messages=[{"role": "user", "content": "x"}])
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 8
