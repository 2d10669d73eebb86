"""Cost estimates of admission (services/edge/admission.py) and stream billing without usage."""
from __future__ import annotations

import orjson
import pytest

from services.edge.admission import gemini_output_cap, openai_output_cap, prompt_estimate
from services.edge.upstream_stream import output_chars


@pytest.mark.parametrize(("body", "cap"), [
    ({"max_tokens": 100}, 100),
    ({"max_completion_tokens": 50, "max_tokens": 100}, 50),
    ({"max_output_tokens": 70}, 70),
    ({"max_tokens": "100"}, None),
    ({"max_tokens": True}, None),
    ({"max_tokens": 0}, None),
    ({}, None),
])
def test_openai_output_cap(body, cap):
    assert openai_output_cap(body) == cap


@pytest.mark.parametrize(("body", "cap"), [
    ({"generationConfig": {"maxOutputTokens": 256}}, 256),
    ({"generation_config": {"max_output_tokens": 64}}, 64),
    ({"generationConfig": {"maxOutputTokens": -1}}, None),
    ({"generationConfig": []}, None),
    # A spoofed cap inside a text part is not a cap.
    ({"contents": [{"parts": [{"text": '"maxOutputTokens": 1'}]}]}, None),
])
def test_gemini_output_cap(body, cap):
    assert gemini_output_cap(body) == cap


def test_prompt_estimate_rounds_up():
    assert [prompt_estimate(n) for n in (0, 1, 4, 5, 4000)] == [0, 1, 1, 2, 1000]


def test_output_chars_counts_text_thoughts_and_calls():
    chunk = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Thinking", "thought": True}, {"text": "hello"},
        {"functionCall": {"name": "f", "args": {"a": 1}}}]}}], "modelVersion": "gemini-2.5-pro"}
    assert output_chars(orjson.dumps(chunk)) == len("Thinking") + len("hello") + len(b'{"name":"f","args":{"a":1}}')
    assert output_chars(b'{"candidates": 3}') == 0
    assert output_chars(b"not json") == len(b"not json")
