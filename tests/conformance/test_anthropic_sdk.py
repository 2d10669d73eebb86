"""The official anthropic SDK against the full stack: simulator → upstream → edge → Envoy.

The SDK is set up as Claude Code sets itself up: base URL = the gateway's root path, the license
key as the API key (sent as x-api-key), Claude model names mapped by ANTHROPIC_MODEL_MAP's
defaults. Assertions are on content the simulator derives from the request, and on what the
simulator received where the translation is the point.
"""
from __future__ import annotations

import anthropic
import httpx
import pytest

from tests import fixtures
from tests.conformance.media import MEDIA, media_server  # noqa: F401  (a fixture)
from tests.simulator.signatures import signature_for
from tests.stack_fixtures import Stack

WEATHER = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"],
    },
}
TIME = {"name": "get_time", "description": "Current time", "input_schema": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}


@pytest.fixture(scope="module")
def key(agent_stack: Stack) -> str:
    return agent_stack.key(name="anthropic-sdk")


@pytest.fixture(scope="module")
def client(agent_stack: Stack, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=agent_stack.public_base, api_key=key, max_retries=0, timeout=30)


def _generate_calls(sim) -> list[dict]:
    return [r for r in sim.requests() if r["op"] in ("generate", "stream")]


def _last(sim) -> dict:
    calls = _generate_calls(sim)
    assert calls, "the simulator saw no generate call"
    return calls[-1]


def test_text_with_system_and_model_mapping(client, sim):
    msg = client.messages.create(model="claude-sonnet-4-6", max_tokens=256, system="be brief",
                                 messages=[{"role": "user", "content": "hello there"}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == "claude-sonnet-4-6"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "system: be brief | echo: hello there"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 4 and msg.usage.output_tokens == len(msg.content[0].text.split())
    call = _last(sim)
    assert call["model"] == "gemini-2.5-pro"
    assert call["body"]["request"]["generationConfig"]["maxOutputTokens"] == 256


def test_haiku_goes_to_flash_and_attribution_is_stripped(client, sim):
    msg = client.messages.create(
        model="claude-haiku-4-5-20251001", max_tokens=64,
        system=[{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.0.abc; cc_entrypoint=cli; cch=1;"},
                {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert msg.content[0].text == "system: You are Claude Code. | echo: hi"
    assert _last(sim)["model"] == "gemini-2.5-flash"


def test_stream_event_sequence(client):
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=512,
                                messages=[{"role": "user", "content": "count [len=30] [chunks=5]"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start"
    assert events[-1] == "message_stop" and events[-2] == "message_delta"
    assert events.count("content_block_start") == 1 and events.count("content_block_stop") == 1
    assert final.content[0].text.split() == [f"w{i}" for i in range(1, 31)]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 30


def test_raw_stream_has_named_events_and_ping(agent_stack: Stack, key: str):
    with httpx.stream("POST", f"{agent_stack.public_base}/v1/messages?beta=true", timeout=30,
                      headers={"x-api-key": key, "anthropic-version": "2023-06-01",
                               "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"},
                      json={"model": "claude-opus-4-7", "max_tokens": 100, "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        names = [line[len("event: "):] for line in r.iter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_blocks(client, sim, stream):
    kwargs = dict(model="claude-opus-4-7", max_tokens=4096, thinking={"type": "enabled", "budget_tokens": 2048},
                  messages=[{"role": "user", "content": "deep question"}])
    if stream:
        with client.messages.stream(**kwargs) as s:
            deltas = {e.delta.type for e in s if e.type == "content_block_delta"}
            msg = s.get_final_message()
        assert {"thinking_delta", "text_delta"} <= deltas
    else:
        msg = client.messages.create(**kwargs)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == "Thinking about: deep question"
    assert msg.content[1].text == "echo: deep question"
    cfg = _last(sim)["body"]["request"]["generationConfig"]["thinkingConfig"]
    assert cfg == {"includeThoughts": True, "thinkingBudget": 2048}
    assert msg.usage.output_tokens == 3 + 4  # answer words + thought words


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("thinking", [False, True])
def test_tools_over_two_turns_keep_signatures(client, sim, stream, thinking):
    extra = {"thinking": {"type": "enabled", "budget_tokens": 1024}} if thinking else {}
    messages = [{"role": "user", "content": "[parallel] weather in Boston and the time there"}]
    # A Gemini 3 model, whose backend checks signatures; Gemini names pass the model map unchanged.
    kwargs = dict(model="gemini-3-pro-preview", max_tokens=2048, tools=[WEATHER, TIME], messages=messages, **extra)
    if stream:
        with client.messages.stream(**kwargs) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(**kwargs)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [u.name for u in uses] == ["get_current_weather", "get_time"]
    assert uses[0].input == {"location": "sim-location"} and uses[1].input == {"tz": "sim-tz"}
    thinking_blocks = [b for b in first.content if b.type == "thinking"]
    assert bool(thinking_blocks) == thinking
    if thinking:
        assert all(b.signature for b in thinking_blocks)

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": '{"temp": 21}'},
            {"type": "tool_result", "tool_use_id": uses[1].id, "content": [{"type": "text", "text": "10:00"}]},
        ]},
    ]
    second = client.messages.create(**{**kwargs, "messages": messages})
    text = "".join(b.text for b in second.content if b.type == "text")
    assert text.startswith("tool results: get_current_weather=") and "10:00" in text and "21" in text
    assert second.stop_reason == "end_turn"
    history = _last(sim)["body"]["request"]["contents"]
    model_turn = next(c for c in history if c["role"] == "model")
    # The signature the backend issued came back byte for byte (not the bypass value).
    assert model_turn["parts"][0]["thoughtSignature"] == signature_for("get_current_weather", {"location": "sim-location"})
    responses = [p["functionResponse"] for p in history[-1]["parts"]]
    assert [r["name"] for r in responses] == ["get_current_weather", "get_time"]
    assert [r["id"] for r in responses] == ["call_1", "call_2"]


def test_per_message_effort(client, sim):
    # Claude Code 2.1.332 puts its environment in a role "system" message right after the user's
    # turn, with the effort for the answer to that turn (per-turn-control beta).
    msg = client.beta.messages.create(
        model="gemini-3-pro-preview", max_tokens=1024, thinking={"type": "adaptive"}, output_config={"effort": "high"},
        betas=["per-turn-control-2026-07-01"], messages=[
            {"role": "user", "content": "plan it"},
            {"role": "system", "content": [{"type": "text", "text": "# Environment"}], "output_config": {"effort": "low"}}])
    assert msg.stop_reason == "end_turn"
    request = _last(sim)["body"]["request"]
    assert request["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "LOW"}
    assert request["systemInstruction"] == {"parts": [{"text": "# Environment"}]}


def test_thinking_display_updates_hides_the_reasoning(client, sim):
    # Claude Code 2.1.332's interactive sessions: the reasoning stays hidden, its signature does not
    msg = client.beta.messages.create(model="gemini-3-pro-preview", max_tokens=1024,
                                      thinking={"type": "adaptive", "display": "updates"}, output_config={"effort": "low"},
                                      betas=["thinking-display-updates-2026-08-18"],
                                      messages=[{"role": "user", "content": "deep question"}])
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "echo: deep question"
    assert _last(sim)["body"]["request"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW"}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_search_loads_a_deferred_tool(client, sim, stream):
    # Claude Code 2.1.332's tool search: deferred tools are declared once a tool_result
    # references them, and the model reads their definition in that result.
    search = {"name": "ToolSearch", "description": "Fetches deferred tools", "input_schema": {
        "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
    deferred = [{**WEATHER, "defer_loading": True}, {**TIME, "defer_loading": True}]
    kwargs = dict(model="gemini-3-pro-preview", max_tokens=1024, tools=[search, *deferred],
                  betas=["advanced-tool-use-2025-11-20"], messages=[{"role": "user", "content": "use ToolSearch"}])
    first = client.beta.messages.create(**kwargs)
    assert [d["name"] for d in _last(sim)["body"]["request"]["tools"][0]["functionDeclarations"]] == ["ToolSearch"]
    use = next(b for b in first.content if b.type == "tool_use")
    kwargs["messages"] += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": [
            {"type": "tool_reference", "tool_name": "get_time"}]}]}]
    if stream:
        with client.beta.messages.stream(**kwargs) as s:
            second = s.get_final_message()
    else:
        second = client.beta.messages.create(**kwargs)
    text = "".join(b.text for b in second.content if b.type == "text")
    assert text.startswith("tool results: ToolSearch=") and '"name":"get_time"' in text.replace("\\", "")
    declared = _last(sim)["body"]["request"]["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declared] == ["ToolSearch", "get_time"]


def test_tools_changed_mid_conversation(client, sim):
    # The mid-conversation-tool-changes beta (Claude Code 2.1.332, the SDK's tool runner): a role
    # "system" message adds a tool and removes another; the model sees the list as changed.
    msg = client.beta.messages.create(
        model="gemini-3-pro-preview", max_tokens=1024, tools=[WEATHER], betas=["mid-conversation-tool-changes-2026-07-01"],
        messages=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"},
                  {"role": "system", "content": [
                      {"type": "tool_addition", "tool": {"type": "tool_definition", "definition": TIME}},
                      {"type": "tool_removal", "tool": {"type": "tool_reference", "name": "get_current_weather"}}]},
                  {"role": "user", "content": "call get_time"}])
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_time"]
    declared = _last(sim)["body"]["request"]["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declared] == ["get_time"]


def test_tool_choice_forces_a_named_tool(client, sim):
    msg = client.messages.create(model="claude-sonnet-4-6", max_tokens=100, tools=[WEATHER, TIME],
                                 tool_choice={"type": "tool", "name": "get_time"},
                                 messages=[{"role": "user", "content": "anything"}])
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["get_time"]
    sent = _last(sim)["body"]["request"]
    assert sent["toolConfig"]["functionCallingConfig"] == {"mode": "ANY", "allowedFunctionNames": ["get_time"]}


def test_images_base64_and_url_and_pdf(client, media_server):
    png = fixtures.png()
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    msg = client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": fixtures.b64(png)}},
        {"type": "image", "source": {"type": "url", "url": media_server + "/cat.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": fixtures.b64(pdf)}},
        {"type": "text", "text": "what are these"},
    ]}])
    text = msg.content[0].text
    assert text.count(f"inline: image/png {len(png)} bytes") == 1 + (len(MEDIA["/cat.png"][1]) == len(png))
    assert f"inline: application/pdf {len(pdf)} bytes" in text


def test_count_tokens(client):
    got = client.messages.count_tokens(model="claude-sonnet-4-6", system="two words",
                                       messages=[{"role": "user", "content": "alpha beta gamma delta"}])
    assert got.input_tokens == 6


def test_error_shapes(agent_stack: Stack, client, sim):
    bad = anthropic.Anthropic(base_url=agent_stack.public_base, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as exc:
        bad.messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["type"] == "error" and exc.value.body["error"]["type"] == "authentication_error"

    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=10,
                               messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}])
    assert exc.value.body["error"]["type"] == "invalid_request_error"
    assert "tool_use_id" in exc.value.body["error"]["message"]

    with pytest.raises(anthropic.NotFoundError) as exc:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["error"]["type"] == "not_found_error"

    # Models no other test here uses: the pool cools a model down after a 429.
    sim.add_fault(account="*", op="generate", kind="429", times=-1, retry_delay="7s", model="gemini-3-flash-preview")
    with pytest.raises(anthropic.RateLimitError) as exc:
        client.messages.create(model="gemini-3-flash-preview", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= 8

    sim.add_fault(account="*", op="generate", kind="503", times=-1, model="gemini-3.1-pro-preview")
    with pytest.raises(anthropic.InternalServerError) as exc:
        client.messages.create(model="gemini-3.1-pro-preview", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code == 529 and exc.value.body["error"]["type"] == "overloaded_error"


def test_missing_max_tokens_and_bad_json(agent_stack: Stack, key: str):
    url = f"{agent_stack.public_base}/v1/messages"
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    r = httpx.post(url, headers=headers, json={"model": "claude-sonnet-4-6",
                                                "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: field required"}}
    r = httpx.post(url, headers={**headers, "content-type": "application/json"}, content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(url, json={"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
