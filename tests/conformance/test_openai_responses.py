"""The official openai SDK's `responses` resource against the full stack (through Envoy).

Requests are shaped as Codex CLI shapes them (store: false, the whole history as input items,
reasoning items replayed with their encrypted_content). Assertions are on content the
simulator derives from the request, and on what it received.
"""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests import fixtures
from tests.conformance.media import media_server  # noqa: F401  (a fixture)
from tests.simulator.signatures import signature_for
from tests.stack_fixtures import Stack

SHELL = {"type": "function", "name": "shell", "description": "Runs a shell command", "strict": False,
         "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}},
                                                         "workdir": {"type": "string"}},
                        "required": ["command"], "additionalProperties": False}}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}},
                                                                "required": ["tz"]}}


@pytest.fixture(scope="module")
def key(agent_stack: Stack) -> str:
    return agent_stack.key(name="responses-sdk")


@pytest.fixture(scope="module")
def client(agent_stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{agent_stack.public_base}/v1", api_key=key, max_retries=0, timeout=30)


def _last(sim) -> dict:
    calls = [r for r in sim.requests() if r["op"] in ("generate", "stream")]
    assert calls, "the simulator saw no generate call"
    return calls[-1]["body"]["request"]


def test_text_with_instructions(client, sim):
    r = client.responses.create(model="gemini-2.5-pro", instructions="be brief", input="hello there", store=False)
    assert r.status == "completed" and r.object == "response"
    assert r.output_text == "system: be brief | echo: hello there"
    assert [i.type for i in r.output] == ["message"]
    assert r.usage.input_tokens == 4 and r.usage.output_tokens == len(r.output_text.split())
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert _last(sim)["systemInstruction"] == {"parts": [{"text": "be brief"}]}


def test_stream_event_sequence(client):
    events = list(client.responses.create(model="gemini-2.5-flash", input="count [len=20] [chunks=4]", stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.split() == [f"w{i}" for i in range(1, 21)]
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == 20


def test_sdk_stream_helper_accumulates(client):
    with client.responses.stream(model="gemini-2.5-flash", input="hi [chunks=2] there") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "echo: hi [chunks=2] there"


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_summary_and_usage(client, sim, stream):
    kwargs = dict(model="gemini-2.5-pro", input="deep question", reasoning={"effort": "low", "summary": "auto"},
                  include=["reasoning.encrypted_content"], store=False)
    if stream:
        events = list(client.responses.create(stream=True, **kwargs))
        types = [e.type for e in events]
        assert types[2:6] == ["response.output_item.added", "response.reasoning_summary_part.added",
                              "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta"]
        r = events[-1].response
    else:
        r = client.responses.create(**kwargs)
    assert [i.type for i in r.output] == ["reasoning", "message"]
    assert r.output[0].summary[0].text == "Thinking about: deep question"
    assert r.output_text == "echo: deep question"
    assert r.usage.output_tokens_details.reasoning_tokens == 4
    assert _last(sim)["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 1024}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("replay_reasoning", [True, False])
def test_function_tools_over_two_turns_keep_signatures(client, sim, stream, replay_reasoning):
    model = "gemini-3-pro-preview"  # its backend checks thought signatures
    history: list = [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "[parallel] run shell and get_time"}]}]
    kwargs = dict(model=model, tools=[SHELL, TIME], tool_choice="auto", parallel_tool_calls=True, store=False,
                  include=["reasoning.encrypted_content"])
    if stream:
        events = list(client.responses.create(input=history, stream=True, **kwargs))
        items = [e.item for e in events if e.type == "response.output_item.done"]
        assert [e.type for e in events].count("response.function_call_arguments.delta") == 2
    else:
        items = client.responses.create(input=history, **kwargs).output
    calls = [i for i in items if i.type == "function_call"]
    assert [c.name for c in calls] == ["shell", "get_time"]
    assert json.loads(calls[0].arguments) == {"command": ["sim-command"]}
    reasoning = [i for i in items if i.type == "reasoning"]
    assert reasoning and reasoning[0].encrypted_content

    # Codex replays items without their ids, reasoning items with their encrypted_content.
    for item in items:
        if item.type == "reasoning" and replay_reasoning:
            history.append({"type": "reasoning", "summary": [], "encrypted_content": item.encrypted_content})
        elif item.type == "function_call":
            history.append({"type": "function_call", "call_id": item.call_id, "name": item.name,
                            "arguments": item.arguments})
    history += [{"type": "function_call_output", "call_id": calls[0].call_id, "output": "file.txt"},
                {"type": "function_call_output", "call_id": calls[1].call_id, "output": "10:00"}]
    r2 = client.responses.create(input=history, **kwargs)
    assert r2.output_text == 'tool results: shell={"output":"file.txt"}; get_time={"output":"10:00"}'
    contents = _last(sim)["contents"]
    model_turn = next(c for c in contents if c["role"] == "model")
    assert model_turn["parts"][0]["thoughtSignature"] == signature_for("shell", {"command": ["sim-command"]})
    assert [p["functionResponse"]["id"] for p in contents[-1]["parts"]] == ["call_1", "call_2"]


def test_json_schema_output(client, sim):
    schema = {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"],
              "additionalProperties": False}
    r = client.responses.create(model="gemini-2.5-flash", input="json please",
                                text={"format": {"type": "json_schema", "name": "codex_output_schema", "schema": schema,
                                                 "strict": True}})
    assert json.loads(r.output_text) == {"echo": "json please"}
    cfg = _last(sim)["generationConfig"]
    assert cfg["responseMimeType"] == "application/json" and cfg["responseSchema"]["required"] == ["echo"]


def test_max_output_tokens_is_incomplete(client):
    r = client.responses.create(model="gemini-2.5-flash", input="[len=50]", max_output_tokens=5)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text.split() == ["w1", "w2", "w3", "w4", "w5"]


def test_images(client, media_server):
    png = fixtures.png()
    r = client.responses.create(model="gemini-2.5-pro", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": fixtures.data_url("image/png", png), "detail": "auto"},
        {"type": "input_image", "image_url": media_server + "/cat.png"},
    ]}])
    assert r.output_text.count(f"inline: image/png {len(png)} bytes") == 2


def test_errors(agent_stack: Stack, client, key):
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="gemini-2.5-pro", input="x", previous_response_id="resp_123")
    assert exc.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="gemini-2.5-pro", input=[{"type": "function_call_output", "call_id": "nope",
                                                                 "output": "x"}])
    assert exc.value.body["param"] == "input[0].call_id"
    bad = openai.OpenAI(base_url=f"{agent_stack.public_base}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="gemini-2.5-pro", input="x")
    r = httpx.post(f"{agent_stack.public_base}/v1/responses", headers={"authorization": f"Bearer {key}"},
                   json={"model": "gemini-2.5-pro", "input": "x", "reasoning": {"effort": "extreme"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reasoning.effort"


def test_failure_mid_stream_is_response_failed(agent_stack: Stack, key, sim):
    sim.add_fault(account="*", op="stream", kind="cut", after_chunks=1, model="gemini-2.5-flash-lite")
    with httpx.stream("POST", f"{agent_stack.public_base}/v1/responses", timeout=30,
                      headers={"authorization": f"Bearer {key}"},
                      json={"model": "gemini-2.5-flash-lite", "input": "[len=30] [chunks=6]", "stream": True}) as r:
        assert r.status_code == 200
        data = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert data[-1]["type"] == "response.failed"
    assert data[-1]["response"]["status"] == "failed" and data[-1]["response"]["error"]["code"]
