"""The official google-genai SDK against the full stack (simulator → upstream → edge).

The SDK is pointed at the edge exactly as a user would (base URL with the root path,
api_version v1beta, the license key as api_key; it sends it as x-goog-api-key). Every test
asserts on content the simulator derives from the request, so a lossy passthrough fails.
"""
from __future__ import annotations

import base64
import hashlib

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests import fixtures, harness
from tests.stack_fixtures import Stack

MODEL = "gemini-2.5-pro"


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    return stack.key(name="genai-sdk")


@pytest.fixture(scope="module")
def client(stack: Stack, key: str) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=stack.public_base, api_version="v1beta",
                                                                    timeout=30_000))


def _user(text: str, *more: types.Part) -> list[types.Content]:
    return [types.Content(role="user", parts=[types.Part.from_text(text=text), *more])]


def test_generate_content(client: genai.Client, sim):
    resp = client.models.generate_content(
        model=MODEL, contents="what model are you",
        config=types.GenerateContentConfig(system_instruction="be brief", temperature=0.3))
    assert resp.text == "system: be brief | echo: what model are you"
    assert resp.candidates[0].finish_reason == types.FinishReason.STOP
    assert resp.usage_metadata.prompt_token_count == 6  # "be brief" + "what model are you"
    assert resp.usage_metadata.candidates_token_count == len(resp.text.split())
    # The request reached the backend unchanged (config included).
    (call,) = [r for r in sim.requests() if r["op"] == "generate"]
    assert harness.sent_request(call)["generationConfig"]["temperature"] == 0.3


def test_generate_content_stream(client: genai.Client):
    chunks = list(client.models.generate_content_stream(
        model=MODEL, contents="[chunks=4] one two three four five six"))
    assert len(chunks) >= 4, "the answer must arrive in several chunks"
    assert "".join(c.text or "" for c in chunks) == "echo: [chunks=4] one two three four five six"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count > 0


def test_count_tokens(client: genai.Client):
    resp = client.models.count_tokens(model=MODEL, contents="alpha beta gamma delta")
    assert resp.total_tokens == 4


def test_models_list_and_get(client: genai.Client):
    models = {m.name: m for m in client.models.list()}
    assert f"models/{MODEL}" in models
    m = models[f"models/{MODEL}"]
    assert m.input_token_limit and m.output_token_limit
    assert "generateContent" in m.supported_actions
    got = client.models.get(model=MODEL)
    assert got.name == f"models/{MODEL}" and got.display_name


def test_function_declaration(client: genai.Client, sim):
    weather = types.FunctionDeclaration(
        name="get_current_weather", description="Weather in a city",
        parameters=types.Schema(type="OBJECT", properties={
            "location": types.Schema(type="STRING"),
            "unit": types.Schema(type="STRING", enum=["celsius", "fahrenheit"])},
            required=["location"]))
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    resp = client.models.generate_content(model=MODEL, contents="call get_current_weather for Boston",
                                          config=config)
    (call,) = resp.function_calls
    assert call.name == "get_current_weather"
    assert call.args == {"location": "sim-location"}  # the simulator fills required strings
    part = resp.candidates[0].content.parts[0]
    assert part.thought_signature  # opaque bytes survived the passthrough

    # Second turn: the function response (and the signed call) go back; the model sees them.
    history = _user("call get_current_weather for Boston") + [
        resp.candidates[0].content,
        types.Content(role="user", parts=[types.Part.from_function_response(
            name="get_current_weather", response={"temp": 21})])]
    final = client.models.generate_content(model=MODEL, contents=history, config=config)
    assert final.text == 'tool results: get_current_weather={"temp":21}'
    sent = harness.sent_request([r for r in sim.requests() if r["op"] == "generate"][-1])
    echoed = sent["contents"][1]["parts"][0]
    assert echoed["functionCall"]["name"] == "get_current_weather"
    # The signature the backend issued comes back unchanged (the SDK holds it as decoded bytes).
    assert echoed["thoughtSignature"].startswith("sig-")
    assert base64.urlsafe_b64decode(echoed["thoughtSignature"]) == part.thought_signature


def test_inline_image(client: genai.Client, sim):
    png = fixtures.png(8, 8)
    resp = client.models.generate_content(
        model=MODEL, contents=_user("describe", types.Part.from_bytes(data=png, mime_type="image/png")))
    sha = hashlib.sha256(png).hexdigest()[:12]
    # The image reached the backend byte for byte (the simulator hashes what it decoded).
    assert resp.text == f"echo: describe | inline: image/png {len(png)} bytes sha={sha}"
    assert resp.usage_metadata.prompt_token_count == 1 + 258
    # The SDK writes `mime_type` in snake case (proto JSON accepts both spellings); the edge
    # passes the body through untouched, so that is what the backend must see.
    sent = harness.sent_request([r for r in sim.requests() if r["op"] == "generate"][-1])
    inline = sent["contents"][0]["parts"][1]["inlineData"]
    assert (inline.get("mimeType") or inline.get("mime_type")) == "image/png"


def test_errors_reach_the_sdk_typed(stack: Stack, client: genai.Client):
    bad = genai.Client(api_key="not-a-key", http_options=types.HttpOptions(base_url=stack.public_base, api_version="v1beta"))
    with pytest.raises(errors.ClientError) as info:
        bad.models.generate_content(model=MODEL, contents="hi")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="no-such-model", contents="hi")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"


@pytest.mark.parametrize("way", ["bearer", "bare", "query"])
def test_the_other_ways_of_passing_the_key(stack: Stack, key: str, way: str):
    """The SDK sends x-goog-api-key; the other three ways, with plain httpx, give the same answer."""
    headers = {"bearer": {"Authorization": f"Bearer {key}"}, "bare": {"Authorization": key}, "query": {}}[way]
    params = {"key": key} if way == "query" else None
    r = httpx.post(f"{stack.public_base}/v1beta/models/{MODEL}:generateContent", headers=headers, params=params,
                   json={"contents": [{"role": "user", "parts": [{"text": f"via {way}"}]}]}, trust_env=False)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == f"echo: via {way}"
