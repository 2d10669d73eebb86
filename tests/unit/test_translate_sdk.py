"""The official openai SDK against the translators, over a loopback HTTP server.

The server here is not the edge: it only records what the SDK put on the wire, translates it with
chat_request_to_gemini, answers with a scripted Gemini response run through the response
translators, and lets the SDK parse that. So the request shapes are the SDK's real ones
(extra_body placement, strict pydantic tool schemas, structured-output schemas, assistant
messages sent back as SDK objects) and the SDK itself judges the responses.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from typing import Callable

import openai
import orjson
import pytest
import uvicorn
from pydantic import BaseModel

from services.edge.translate import ChunkTranslator, chat_request_to_gemini, completion_from_gemini
from services.edge.translate.openai_to_gemini import ChatRequest
from tests.unit.thinking_ranges import spec_for

SIG = "CiQBVKhc7pQ0-thought+signature/opaque=="


class Capture:
    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.translated: list[ChatRequest] = []
        self.answer: Callable[[ChatRequest], dict] = lambda req: {"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}


CAPTURE = Capture()


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    raw = b""
    while True:
        msg = await receive()
        raw += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    body = orjson.loads(raw)
    CAPTURE.bodies.append(body)
    req = chat_request_to_gemini(body, thinking=spec_for(body["model"]))
    CAPTURE.translated.append(req)
    resp = CAPTURE.answer(req)
    if not req.stream:
        out = orjson.dumps(completion_from_gemini(resp, model=body["model"], completion_id="chatcmpl-sdk", created=1))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    tr = ChunkTranslator(model=body["model"], completion_id="chatcmpl-sdk", created=1, include_usage=req.include_usage)
    # One Gemini chunk per part, as the backend streams them.
    parts = resp["candidates"][0]["content"]["parts"]
    chunks = [{"candidates": [{"content": {"parts": [p]}}]} for p in parts]
    chunks.append({"candidates": [{"content": {"parts": []}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}})
    for chunk in chunks:
        for out in tr.feed(chunk):
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(out) + b"\n\n", "more_body": True})
    for out in tr.finish():
        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(out) + b"\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


@pytest.fixture(scope="module")
def sdk():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    client = openai.OpenAI(api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    yield client
    client.close()
    server.should_exit = True
    thread.join(5)


@pytest.fixture(autouse=True)
def fresh_capture():
    CAPTURE.__init__()


def test_extra_body_google_thinking_config(sdk) -> None:
    CAPTURE.answer = lambda req: {"candidates": [{"content": {"parts": [{"text": "Thinking about: hi", "thought": True}, {"text": "Hello"}]},
                                                  "finishReason": "STOP"}]}
    # Google's documented spelling for the Python SDK.
    out = sdk.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}],
                                      extra_body={"extra_body": {"google": {"thinking_config": {"thinking_budget": 2048, "include_thoughts": True}}}})
    assert CAPTURE.translated[0].gemini["generationConfig"] == {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 2048}}
    assert out.choices[0].message.content == "Hello"
    assert out.choices[0].message.reasoning_content == "Thinking about: hi"  # extra field kept by the SDK model
    sdk.chat.completions.create(model="gemini-3-flash-preview-thinking", messages=[{"role": "user", "content": "hi"}], reasoning_effort="low")
    assert CAPTURE.translated[1].gemini["generationConfig"] == {"thinkingConfig": {"includeThoughts": True, "thinkingLevel": "LOW"}}
    assert CAPTURE.translated[1].model == "gemini-3-flash-preview"


class Weather(BaseModel):
    city: str
    unit: str | None = None


class Clock(BaseModel):
    timezone: str


def test_two_turn_parallel_tool_calls_streamed_with_signature(sdk) -> None:
    tools = [openai.pydantic_function_tool(Weather, name="get_weather"), openai.pydantic_function_tool(Clock, name="get_time")]
    CAPTURE.answer = lambda req: {"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": None}}, "thoughtSignature": SIG},
        {"functionCall": {"name": "get_time", "args": {"timezone": "CET"}}},
    ]}, "finishReason": "STOP"}]}
    messages = [{"role": "user", "content": "Weather and time in Paris? [parallel]"}]
    with sdk.chat.completions.stream(model="gemini-3-pro-preview", messages=messages, tools=tools,
                                     stream_options={"include_usage": True}) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()

    # What the SDK sent for strict pydantic tools is cleaned for Gemini.
    sent_tool = CAPTURE.bodies[0]["tools"][0]["function"]
    assert sent_tool["strict"] is True and sent_tool["parameters"]["additionalProperties"] is False
    decl = CAPTURE.translated[0].gemini["tools"][0]["functionDeclarations"][0]
    assert decl["parameters"] == {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "nullable": True}},
                                  "required": ["city", "unit"]}
    assert CAPTURE.translated[0].include_usage is True

    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.parsed_arguments for c in calls] == [Weather(city="Paris"), Clock(timezone="CET")]
    assert len({c.id for c in calls}) == 2
    assert final.usage.completion_tokens == 5 and final.usage.completion_tokens_details.reasoning_tokens == 2

    # Second turn: the SDK's own message object goes back as history.
    CAPTURE.answer = lambda req: {"candidates": [{"content": {"parts": [{"text": "Sunny, 10:42."}]}, "finishReason": "STOP"}]}
    messages.append(final.choices[0].message)
    messages += [{"role": "tool", "tool_call_id": calls[0].id, "content": json.dumps({"temp": 21})},
                 {"role": "tool", "tool_call_id": calls[1].id, "content": "10:42"}]
    out = sdk.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=tools)
    history = CAPTURE.translated[1].gemini["contents"]
    assert history[1]["parts"][0]["thoughtSignature"] == SIG
    assert "thoughtSignature" not in history[1]["parts"][1]
    assert [p["functionResponse"]["name"] for p in history[2]["parts"]] == ["get_weather", "get_time"]
    assert [p["functionResponse"]["response"] for p in history[2]["parts"]] == [{"temp": 21}, {"result": "10:42"}]
    assert out.choices[0].message.content == "Sunny, 10:42."


class City(BaseModel):
    name: str
    population: int
    landmarks: list[str]


def test_structured_output_parse(sdk) -> None:
    CAPTURE.answer = lambda req: {"candidates": [{"content": {"parts": [
        {"text": json.dumps({"name": "Paris", "population": 2100000, "landmarks": ["Louvre"]})}]}, "finishReason": "STOP"}]}
    out = sdk.chat.completions.parse(model="gemini-2.5-pro", messages=[{"role": "user", "content": "Describe Paris"}], response_format=City)
    gen = CAPTURE.translated[0].gemini["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert gen["responseSchema"] == {"type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"},
                                                                      "landmarks": {"type": "array", "items": {"type": "string"}}},
                                     "required": ["name", "population", "landmarks"], "propertyOrdering": ["name", "population", "landmarks"]}
    assert out.choices[0].message.parsed == City(name="Paris", population=2100000, landmarks=["Louvre"])


def test_code_execution_stream(sdk) -> None:
    CAPTURE.answer = lambda req: {"candidates": [{"content": {"parts": [
        {"executableCode": {"language": "PYTHON", "code": "print(sum([2, 3, 5]))"}},
        {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "10\n"}},
        {"text": "The result is 10."}]}, "finishReason": "STOP"}]}
    stream = sdk.chat.completions.create(model="gemini-2.5-pro", stream=True,
                                         messages=[{"role": "user", "content": "Sum the first 3 primes with code."}],
                                         tools=[{"type": "function", "function": {"name": "codeExecution"}}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert CAPTURE.translated[0].gemini["tools"] == [{"codeExecution": {}}]
    assert text == "```python\nprint(sum([2, 3, 5]))\n```\n```output\n10\n```\nThe result is 10."
