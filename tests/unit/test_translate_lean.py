"""The lean path (body opened by lean_json, messages raw, contents written as they are
translated) gives exactly the request the object path gives, for every shape of conversation."""
from __future__ import annotations

import orjson
import pytest

from services.edge.errors import ApiError
from services.edge.lean_json import open_chat, top_level
from services.edge.translate import TranslationError, chat_request_to_gemini
from services.edge.translate.contents_writer import MAX_ITEM_PARTS

PNG = "data:image/png;base64,iVBORw0KGgo="

BODIES = {
    "plain": {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "hi"}]},
    "system-only": {"model": "gemini-2.5-pro", "messages": [{"role": "system", "content": "Say hi"}]},
    "merged-turns": {"model": "gemini-2.5-flash", "messages": [
        {"role": "system", "content": "s1"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "developer", "content": [{"type": "text", "text": "s2"}]}, {"role": "assistant", "content": "c"},
        {"role": "assistant", "content": [{"type": "text", "text": "d"}]}, {"role": "user", "content": ""}]},
    "tools-gemini-3": {"model": "gemini-3-pro-preview", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "{\"t\": 20}"},
        {"role": "assistant", "content": "ok", "tool_calls": [
            {"id": "c3", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c3", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": PNG}}]}],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                  {"type": "code_execution"}],
        "tool_choice": "auto", "temperature": 0.2, "max_tokens": 50, "stream": True},
    "legacy-functions": {"model": "gemini-2.5-pro", "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "done"}],
        "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}]},
    "image": {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": PNG}}]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {
            "type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}}}},
}


def lean(body: dict) -> dict:
    chat = chat_request_to_gemini(open_chat(orjson.dumps(body)))
    return orjson.loads(orjson.dumps(chat.gemini))


@pytest.mark.parametrize("name", BODIES)
def test_lean_equals_objects(name: str) -> None:
    body = BODIES[name]
    assert lean(body) == chat_request_to_gemini(orjson.loads(orjson.dumps(body))).gemini


@pytest.mark.parametrize("messages", [[], [{"role": "system", "content": ""}], [5], [{"role": "bogus"}]])
def test_lean_errors_match(messages) -> None:
    body = {"model": "gemini-2.5-pro", "messages": messages}
    with pytest.raises(TranslationError) as a:
        chat_request_to_gemini(orjson.loads(orjson.dumps(body)))
    with pytest.raises(TranslationError) as b:
        chat_request_to_gemini(open_chat(orjson.dumps(body)))
    assert (a.value.message, a.value.param) == (b.value.message, b.value.param)


def test_a_message_of_too_many_parts_is_refused_before_parsing() -> None:
    parts = [{"type": "text", "text": "x"}] * (MAX_ITEM_PARTS + 1)
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": parts}]}
    with pytest.raises(TranslationError, match="more than"):
        chat_request_to_gemini(open_chat(orjson.dumps(body)))


def test_small_fields_are_capped() -> None:
    body = {"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], "metadata": ["x"] * 300_000}
    with pytest.raises(ApiError) as err:
        open_chat(orjson.dumps(body))
    assert err.value.status == 400


@pytest.mark.parametrize("raw, status", [
    (b"", 400), (b"[]", 400), (b"5", 400), (b'{"a": [1,,2]}', 400), (b'{"a": "\xff"}', 400),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, 400), (b'{"a": 1} x', 400),
])
def test_top_level_refusals(raw: bytes, status: int) -> None:
    with pytest.raises(ApiError) as err:
        top_level(raw)
    assert err.value.status == status


def test_top_level_accepts_an_object() -> None:
    assert set(top_level(b' {"a": [1, {"b": "\\u00e9"}], "c": null} ')) == {"a", "c"}


def test_contents_writer_keeps_large_parts_as_their_own_pieces():
    from services.edge.translate.contents_writer import ContentsWriter

    big = {"inlineData": {"mimeType": "image/png", "data": "A" * (200 * 1024)}}
    w = ContentsWriter(False, "skip")
    w.append("user", [{"text": "look"}, big])
    w.append("model", [{"text": "ok"}])
    w.append("user", [big, {"text": "again"}])
    out = orjson.loads(w.finish())
    assert out == [{"role": "user", "parts": [{"text": "look"}, big]}, {"role": "model", "parts": [{"text": "ok"}]},
                   {"role": "user", "parts": [big, {"text": "again"}]}]
