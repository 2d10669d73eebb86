"""OpenAI chat-completions request → Gemini request, over real request shapes."""
from __future__ import annotations

import base64
import copy

import pytest

from services.edge.translate import TranslationError, chat_request_to_gemini, completion_from_gemini, media_urls
from services.edge.translate.openai_to_gemini import SKIP_SIGNATURE
from tests.unit.thinking_ranges import spec_for
from tests.unit.test_media import SAMPLES, png_1x1, wav_silence

PNG_B64 = base64.b64encode(png_1x1()).decode()
MP3_B64 = base64.b64encode(SAMPLES["mp3-id3"][0] + bytes(200)).decode()
MP4_B64 = base64.b64encode(SAMPLES["mp4"][0] + bytes(300)).decode()
WAV_B64 = base64.b64encode(wav_silence()).decode()
PDF_B64 = base64.b64encode(SAMPLES["pdf"][0]).decode()

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
WEATHER_DECL = {
    "name": "get_current_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location"],
    },
}


def media_message(prompt: str, url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]}]


# The six chat bodies of the seed's API document, verbatim apart from the media placeholder.
SEED = {
    "text-stream": (
        {"messages": [{"role": "user", "content": "你是什么模型"}], "model": "gemini-2.5-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "你是什么模型"}]}]},
    ),
    "image-data-url": (
        {"messages": media_message("图片里面有什么内容", f"data:image/png;base64,{PNG_B64}"), "model": "gemini-2.5-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "图片里面有什么内容"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]}]},
    ),
    "image-bare-base64": (
        {"messages": media_message("图片里面有什么内容", PNG_B64), "model": "gemini-2.5-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "图片里面有什么内容"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]}]},
    ),
    "audio-through-image_url": (
        {"messages": media_message("音频里面讲了什么", MP3_B64), "model": "gemini-2.5-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "音频里面讲了什么"}, {"inlineData": {"mimeType": "audio/mp3", "data": MP3_B64}}]}]},
    ),
    "audio-data-url-declared-as-image": (
        {"messages": media_message("音频里面讲了什么", f"data:image/jpeg;base64,{WAV_B64}"), "model": "gemini-2.5-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "音频里面讲了什么"}, {"inlineData": {"mimeType": "audio/wav", "data": WAV_B64}}]}]},
    ),
    "video-through-image_url": (
        {"messages": media_message("视频里面讲了什么", MP4_B64), "model": "gemini-2.0-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "视频里面讲了什么"}, {"inlineData": {"mimeType": "video/mp4", "data": MP4_B64}}]}]},
    ),
    "function-tool": (
        {"messages": [{"role": "user", "content": "What is the weather like in Boston today?"}], "tools": [WEATHER_TOOL],
         "model": "gemini-2.5-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "What is the weather like in Boston today?"}]}],
         "tools": [{"functionDeclarations": [WEATHER_DECL]}]},
    ),
    "code-execution": (
        {"messages": [{"role": "user", "content": "What is the sum of the first 50 prime numbers? Generate and run code for the calculation, and make sure you get all 50."}],
         "tools": [{"type": "function", "function": {"name": "codeExecution"}}], "model": "gemini-2.5-pro", "stream": True},
        {"contents": [{"role": "user", "parts": [{"text": "What is the sum of the first 50 prime numbers? Generate and run code for the calculation, and make sure you get all 50."}]}],
         "tools": [{"codeExecution": {}}]},
    ),
}


@pytest.mark.parametrize("name", list(SEED))
def test_seed_bodies(name: str) -> None:
    body, gemini = SEED[name]
    before = copy.deepcopy(body)
    req = chat_request_to_gemini(body)
    # Nothing the client did not ask for: no generationConfig, safety settings or toolConfig.
    assert req.gemini == gemini
    assert req.stream is True and req.include_usage is False and req.include_thoughts is False
    assert req.model == body["model"]
    assert body == before  # the client's body is not modified


def test_http_media_comes_from_fetched() -> None:
    url = "https://example.com/cat.png"
    body = {"model": "gemini-2.5-flash", "messages": media_message("what is this", url)}
    assert media_urls(body) == [url]
    req = chat_request_to_gemini(body, {url: ("image/png", PNG_B64)})
    assert req.gemini["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}
    with pytest.raises(TranslationError) as info:
        chat_request_to_gemini(body)
    assert info.value.param == "messages[0].content[1].image_url.url"


def test_media_urls_collects_every_remote_reference_once() -> None:
    body = {"messages": [
        {"role": "system", "content": "s"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://a.example/1.png"}},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
            {"type": "input_audio", "input_audio": {"data": "http://a.example/2.mp3", "format": "mp3"}},
            {"type": "file", "file": {"file_data": "https://a.example/3.pdf", "filename": "3.pdf"}},
            {"type": "video_url", "video_url": {"url": " https://a.example/4.mp4 "}},
            {"type": "image_url", "image_url": "https://a.example/5.png"},
        ]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://a.example/1.png"}}]},
        {"role": "user", "content": "https://not-a-part.example/x.png"},
    ]}
    assert media_urls(body) == ["https://a.example/1.png", "http://a.example/2.mp3", "https://a.example/3.pdf",
                                "https://a.example/4.mp4", "https://a.example/5.png"]


@pytest.mark.parametrize("body", [None, [], {"messages": "x"}, {"messages": [1, {"content": 5}, {"content": [1, {"type": "image_url"}]}]}])
def test_media_urls_never_raises(body) -> None:
    assert media_urls(body) == []


def test_input_audio_and_file_parts() -> None:
    noise = base64.b64encode(b"\x01\x02\x03 unknown bytes").decode()
    body = {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": WAV_B64, "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": noise, "format": "flac"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_data": noise, "filename": "notes.txt"}},
    ]}]}
    parts = chat_request_to_gemini(body).gemini["contents"][0]["parts"]
    assert [p["inlineData"]["mimeType"] for p in parts] == ["audio/wav", "audio/flac", "application/pdf", "text/plain"]
    assert parts[0]["inlineData"]["data"] == WAV_B64


def test_sdk_style_conversation() -> None:
    body = {
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "name": "alice", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": ""}]},
            {"role": "user", "content": "Are you there?"},
            {"role": "assistant", "content": "Yes.", "reasoning_content": "The user asks...", "refusal": None},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hidden"}, {"type": "text", "text": "Still here."}]},
            {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
        ],
        "user": "u-1", "metadata": {"k": "v"}, "store": False, "logit_bias": {"1": 2}, "parallel_tool_calls": True,
        "service_tier": "auto", "modalities": ["text"], "some_future_param": {"x": 1},
    }
    g = chat_request_to_gemini(body).gemini
    assert g == {
        "systemInstruction": {"parts": [{"text": "You are terse."}, {"text": "Answer in English."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hello"}, {"text": "Are you there?"}]},
            {"role": "model", "parts": [{"text": "Yes."}, {"text": "Still here."}]},
            {"role": "user", "parts": [{"text": "Bye"}]},
        ],
    }


def test_system_only_conversation_becomes_a_user_turn() -> None:
    g = chat_request_to_gemini({"model": "gemini-2.5-pro", "messages": [{"role": "system", "content": "Say hi"}]}).gemini
    assert g == {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}


# --- tools -----------------------------------------------------------------------------------------

def parallel_history(model: str, *, ids=("call_a", "call_b"), extra=None) -> dict:
    calls = [
        {"id": ids[0], "type": "function", "function": {"name": "get_current_weather", "arguments": '{"location": "Boston"}'}},
        {"id": ids[1], "type": "function", "function": {"name": "get_time", "arguments": ""}},
    ]
    if extra:
        calls[0]["extra_content"] = extra
    return {
        "model": model,
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}],
        "messages": [
            {"role": "user", "content": "Weather and time in Boston? [parallel]"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": ids[0], "content": '{"temperature": 21, "unit": "celsius"}'},
            {"role": "tool", "tool_call_id": ids[1], "content": "10:42"},
            {"role": "user", "content": "Thanks; and tomorrow?"},
        ],
    }


def test_parallel_tool_round_trip() -> None:
    g = chat_request_to_gemini(parallel_history("gemini-2.5-pro")).gemini
    assert g["tools"] == [{"functionDeclarations": [WEATHER_DECL, {"name": "get_time"}]}]
    assert g["contents"] == [
        {"role": "user", "parts": [{"text": "Weather and time in Boston? [parallel]"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_current_weather", "args": {"location": "Boston"}, "id": "call_a"}},
            {"functionCall": {"name": "get_time", "args": {}, "id": "call_b"}},
        ]},
        # consecutive tool messages and the following user message: one user turn
        {"role": "user", "parts": [
            {"functionResponse": {"id": "call_a", "name": "get_current_weather", "response": {"temperature": 21, "unit": "celsius"}}},
            {"functionResponse": {"id": "call_b", "name": "get_time", "response": {"result": "10:42"}}},
            {"text": "Thanks; and tomorrow?"},
        ]},
    ]


def test_gemini3_history_without_signature_gets_the_bypass_on_the_first_call_only() -> None:
    contents = chat_request_to_gemini(parallel_history("gemini-3-pro-preview"),
                                      thinking=spec_for("gemini-3-pro-preview")).gemini["contents"]
    first, second = contents[1]["parts"]
    assert first["thoughtSignature"] == SKIP_SIGNATURE
    assert "thoughtSignature" not in second


def gemini_parallel_response(signature: str | None, with_ids: bool = False) -> dict:
    first = {"functionCall": {"name": "get_current_weather", "args": {"location": "Boston"}}}
    if with_ids:
        first["functionCall"]["id"] = "call_1"
    if signature:
        first["thoughtSignature"] = signature
    second = {"functionCall": {"name": "get_time", "args": {}}}
    return {"candidates": [{"content": {"role": "model", "parts": [first, second]}, "finishReason": "STOP", "index": 0}]}


SIG = "CiQBVKhc7u+/long/opaque+signature==" * 3


def next_request(assistant_message: dict, model: str = "gemini-3-pro-preview") -> dict:
    calls = assistant_message["tool_calls"]
    return {
        "model": model,
        "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "get_time"}}],
        "messages": [
            {"role": "user", "content": "Weather and time?"},
            assistant_message,
            *({"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls),
        ],
    }


@pytest.mark.parametrize(
    "client",
    ["keeps-everything", "keeps-id-only", "keeps-extra-content-only", "drops-both"],
)
def test_gemini3_signature_round_trip(client: str) -> None:
    completion = completion_from_gemini(gemini_parallel_response(SIG), model="gemini-3-pro-preview", completion_id="chatcmpl-1", created=1)
    message = completion["choices"][0]["message"]
    assert message["tool_calls"][0]["extra_content"] == {"google": {"thought_signature": SIG}}
    sent = {"role": "assistant", "content": None, "tool_calls": []}
    for i, call in enumerate(message["tool_calls"]):
        c = {"id": call["id"], "type": "function", "function": dict(call["function"])}
        if client in ("keeps-everything", "keeps-extra-content-only") and "extra_content" in call:
            c["extra_content"] = call["extra_content"]
        if client in ("keeps-extra-content-only", "drops-both"):
            c["id"] = f"client_id_{i}"  # a client that issues its own ids
        sent["tool_calls"].append(c)
    g = chat_request_to_gemini(next_request(sent), thinking=spec_for("gemini-3-pro-preview")).gemini
    first, second = g["contents"][1]["parts"]
    assert first["thoughtSignature"] == (SKIP_SIGNATURE if client == "drops-both" else SIG)
    assert "thoughtSignature" not in second
    # functionResponse ids pair with the functionCall ids that went out
    responses = [p["functionResponse"] for p in g["contents"][2]["parts"]]
    assert [r["id"] for r in responses] == [first["functionCall"]["id"], second["functionCall"]["id"]]
    assert [r["name"] for r in responses] == ["get_current_weather", "get_time"]


def test_truncated_signature_id_falls_back_to_bypass() -> None:
    completion = completion_from_gemini(gemini_parallel_response(SIG), model="m", completion_id="c", created=1)
    call = completion["choices"][0]["message"]["tool_calls"][0]
    truncated = call["id"][:-6]
    sent = {"role": "assistant", "tool_calls": [{"id": truncated, "type": "function", "function": call["function"]}]}
    body = next_request(sent)
    body["messages"] = body["messages"][:2] + [{"role": "tool", "tool_call_id": truncated, "content": "ok"}]
    g = chat_request_to_gemini(body, thinking=spec_for(body["model"])).gemini
    assert g["contents"][1]["parts"][0]["thoughtSignature"] == SKIP_SIGNATURE


def test_gemini25_history_gets_no_bypass_value() -> None:
    contents = chat_request_to_gemini(parallel_history("gemini-2.5-flash")).gemini["contents"]
    assert all("thoughtSignature" not in p for p in contents[1]["parts"])


@pytest.mark.parametrize(
    ("content", "response"),
    [
        ('{"a": 1}', {"a": 1}),
        ("[1, 2]", {"result": [1, 2]}),
        ("42", {"result": 42}),
        ("plain words", {"result": "plain words"}),
        ("{broken", {"result": "{broken"}),
        ("", {"result": ""}),
        (None, {"result": ""}),
        ([{"type": "text", "text": '{"x":'}, {"type": "text", "text": " true}"}], {"x": True}),
    ],
)
def test_tool_message_content_shapes(content, response) -> None:
    body = {"model": "gemini-2.5-pro", "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": content},
    ]}
    part = chat_request_to_gemini(body).gemini["contents"][2]["parts"][0]
    assert part == {"functionResponse": {"id": "t1", "name": "f", "response": response}}


def test_tool_message_with_image_output() -> None:
    body = {"model": "gemini-2.5-pro", "messages": [
        {"role": "user", "content": "screenshot please"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": [{"type": "text", "text": "done"},
                                                           {"type": "image_url", "image_url": {"url": PNG_B64}}]},
    ]}
    parts = chat_request_to_gemini(body).gemini["contents"][2]["parts"]
    assert parts == [{"functionResponse": {"id": "t1", "name": "shot", "response": {"result": "done"}}},
                     {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]


def test_legacy_functions_api() -> None:
    body = {"model": "gemini-2.5-pro", "functions": [WEATHER_TOOL["function"]], "function_call": {"name": "get_current_weather"},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "function_call": {"name": "get_current_weather", "arguments": '{"location":"Rome"}'}},
                {"role": "function", "name": "get_current_weather", "content": '{"t": 30}'},
            ]}
    g = chat_request_to_gemini(body).gemini
    assert g["tools"] == [{"functionDeclarations": [WEATHER_DECL]}]
    assert g["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_current_weather"]}}
    assert g["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_current_weather", "args": {"location": "Rome"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_current_weather", "response": {"t": 30}}}]},
    ]


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        ([{"type": "function", "function": {"name": "code_execution"}}], [{"codeExecution": {}}]),
        ([{"type": "function", "function": {"name": "googleSearch"}}], [{"googleSearch": {}}]),
        ([{"type": "function", "function": {"name": "google_search", "parameters": {"type": "object", "properties": {}}}}], [{"googleSearch": {}}]),
        ([{"type": "function", "function": {"name": "urlContext"}}], [{"urlContext": {}}]),
        ([{"type": "google_search"}, {"type": "code_execution"}], [{"googleSearch": {}}, {"codeExecution": {}}]),
        ([{"googleSearch": {}}, {"urlContext": {}}], [{"googleSearch": {}}, {"urlContext": {}}]),
        # A client function that merely shares the name keeps being a function.
        ([{"type": "function", "function": {"name": "google_search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
         [{"functionDeclarations": [{"name": "google_search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]}]),
        ([WEATHER_TOOL, {"type": "function", "function": {"name": "codeExecution"}}],
         [{"functionDeclarations": [WEATHER_DECL]}, {"codeExecution": {}}]),
    ],
)
def test_tools(tools, expected) -> None:
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    assert chat_request_to_gemini(body).gemini["tools"] == expected


TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.parametrize(
    ("choice", "config", "names"),
    [
        ("none", {"mode": "NONE"}, ["get_current_weather", "get_time"]),
        ("auto", {"mode": "AUTO"}, ["get_current_weather", "get_time"]),
        ("required", {"mode": "ANY"}, ["get_current_weather", "get_time"]),
        ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
         ["get_current_weather", "get_time"]),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}},
         {"mode": "ANY", "allowedFunctionNames": ["get_time"]}, ["get_current_weather", "get_time"]),
        ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "get_time"}}]}},
         {"mode": "AUTO"}, ["get_time"]),
        (None, None, ["get_current_weather", "get_time"]),
    ],
)
def test_tool_choice(choice, config, names) -> None:
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL, TIME_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    g = chat_request_to_gemini(body).gemini
    assert g.get("toolConfig") == ({"functionCallingConfig": config} if config else None)
    assert [d["name"] for d in g["tools"][0]["functionDeclarations"]] == names


def test_tool_choice_without_function_tools_is_dropped() -> None:
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto",
            "tools": [{"type": "function", "function": {"name": "codeExecution"}}]}
    assert "toolConfig" not in chat_request_to_gemini(body).gemini


# --- generation config -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("params", "config"),
    [
        ({}, None),
        ({"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "topP": 0.9}),
        ({"temperature": 0}, {"temperature": 0}),
        ({"max_tokens": 256}, {"maxOutputTokens": 256}),
        ({"max_tokens": 256, "max_completion_tokens": 512}, {"maxOutputTokens": 512}),
        ({"max_completion_tokens": 100.0}, {"maxOutputTokens": 100}),
        ({"stop": "END"}, {"stopSequences": ["END"]}),
        ({"stop": ["a", "b", ""]}, {"stopSequences": ["a", "b"]}),
        ({"stop": None, "n": None, "seed": None, "temperature": None}, None),
        ({"n": 2}, {"candidateCount": 2}),
        ({"seed": 7}, {"seed": 7}),
        ({"seed": 2**40 + 5}, {"seed": 5}),  # 64-bit OpenAI seeds fold into Gemini's 32 bits
        ({"seed": -1}, {"seed": -1}),
        ({"presence_penalty": 0.5, "frequency_penalty": -0.5}, {"presencePenalty": 0.5, "frequencyPenalty": -0.5}),
        ({"presence_penalty": 0, "frequency_penalty": 0.0}, None),
        ({"top_k": 40}, {"topK": 40}),
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
            "required": ["name", "population", "tags"]}}}},
         {"responseMimeType": "application/json", "responseSchema": {
             "type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"},
                                              "tags": {"type": "array", "items": {"type": "string"}}},
             "required": ["name", "population", "tags"], "propertyOrdering": ["name", "population", "tags"]}}),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "free"}}}, {"responseMimeType": "application/json"}),
    ],
)
def test_generation_config(params, config) -> None:
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], **params}
    assert chat_request_to_gemini(body).gemini.get("generationConfig") == config


def test_stream_options_and_extra_google() -> None:
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], "stream": True,
            "stream_options": {"include_usage": True},
            "extra_body": {"google": {"cached_content": "cachedContents/abc",
                                      "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE", "junk": {}}]}}}
    req = chat_request_to_gemini(body)
    assert req.stream and req.include_usage
    assert req.gemini["cachedContent"] == "cachedContents/abc"
    assert req.gemini["safetySettings"] == [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]


# --- errors ----------------------------------------------------------------------------------------

def _body(**over) -> dict:
    return {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], **over}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (_body(model=3), "model"),
        (_body(messages="hi"), "messages"),
        (_body(messages=[]), "messages"),
        (_body(messages=["hi"]), "messages[0]"),
        (_body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (_body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (_body(messages=[{"role": "user"}]), "messages[0].content"),
        (_body(messages=[{"role": "user", "content": [{"type": "hologram"}]}]), "messages[0].content[0].type"),
        (_body(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), "messages[0].content[0].text"),
        (_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "no!such:thing??"}}]}]),
         "messages[0].content[0].image_url.url"),
        (_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), "messages[0].content[0].image_url.url"),
        (_body(messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-123"}}]}]), "messages[0].content[0].file.file_id"),
        (_body(messages=[{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), "messages[0].content[0].type"),
        (_body(messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]), "messages[1].tool_call_id"),
        (_body(messages=[{"role": "tool", "content": "r"}]), "messages[0].tool_call_id"),
        (_body(messages=[{"role": "assistant", "tool_calls": {"id": "x"}}]), "messages[0].tool_calls"),
        (_body(messages=[{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{oops"}}]}]),
         "messages[0].tool_calls[0].function.arguments"),
        (_body(messages=[{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "[1]"}}]}]),
         "messages[0].tool_calls[0].function.arguments"),
        (_body(temperature="hot"), "temperature"),
        (_body(temperature=True), "temperature"),
        (_body(temperature=10**30), "temperature"),
        (_body(max_tokens=2**40), "max_tokens"),
        (_body(seed=2**64), "seed"),
        (_body(messages=[{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": {"big": 2**70}}}]}]),
         "messages[0].tool_calls[0].function.arguments"),
        (_body(top_p=[1]), "top_p"),
        (_body(max_tokens="10"), "max_tokens"),
        (_body(max_tokens=0), "max_tokens"),
        (_body(max_completion_tokens=1.5), "max_completion_tokens"),
        (_body(n=0), "n"),
        (_body(seed="s"), "seed"),
        (_body(stop=5), "stop"),
        (_body(stop=["a", 1]), "stop"),
        (_body(stream="yes"), "stream"),
        (_body(stream_options="yes"), "stream_options"),
        (_body(stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (_body(presence_penalty="x"), "presence_penalty"),
        (_body(response_format="json"), "response_format"),
        (_body(response_format={"type": "yaml"}), "response_format.type"),
        (_body(response_format={"type": "json_schema", "json_schema": "x"}), "response_format.json_schema"),
        (_body(response_format={"type": "json_schema", "json_schema": {"schema": "x"}}), "response_format.json_schema.schema"),
        (_body(tools={"type": "function"}), "tools"),
        (_body(tools=[{"type": "function"}]), "tools[0].function"),
        (_body(tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name"),
        (_body(tools=[{"type": "function", "function": {"name": "f", "parameters": "x"}}]), "tools[0].function.parameters"),
        (_body(tools=[{"type": "custom", "custom": {"name": "f"}}]), "tools[0].type"),
        (_body(tools=[WEATHER_TOOL, WEATHER_TOOL]), "tools"),
        (_body(tools=[WEATHER_TOOL], tool_choice="sometimes"), "tool_choice"),
        (_body(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "other"}}), "tool_choice"),
        (_body(reasoning_effort="max"), "reasoning_effort"),
        (_body(thinking="on"), "thinking"),
        (_body(extra_body={"google": "x"}), "extra_body.google"),
        (_body(extra_body={"google": {"cached_content": 5}}), "extra_body.google.cached_content"),
        (_body(messages=[{"role": "user", "content": ""}]), "messages"),
    ],
)
def test_errors_name_the_parameter(body, param) -> None:
    with pytest.raises(TranslationError) as info:
        chat_request_to_gemini(body)
    assert info.value.param == param
    assert info.value.to_openai()["error"]["type"] == "invalid_request_error"


def test_deeply_nested_arguments_are_refused() -> None:
    deep = "1"
    for _ in range(150):
        deep = '{"a": ' + deep + "}"
    body = _body(messages=[{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": deep}}]}])
    with pytest.raises(TranslationError, match="nested too deeply"):
        chat_request_to_gemini(body)
