"""Inline media of Responses and Anthropic requests kept in the client's body as tokens
(routes.translated.spliced_opener): the bytes sent on are exactly those the plain translation
makes, the media are not copied, and bad base64 is refused the same way."""
from __future__ import annotations

import base64
import os

import msgspec
import orjson
import pytest

from services.edge.body import parse_object
from services.edge.routes.translated import spliced_opener
from services.edge.spliced import Spliced
from services.edge.translate.anthropic_request import messages_request_to_gemini
from services.edge.translate.contents_writer import SPLICE_BYTES
from services.edge.translate.errors import TranslationError
from services.edge.translate.responses_request import responses_request_to_gemini



def _b64(head: bytes) -> str:
    """base64 without padding (so that one more character makes a length none can have)."""
    return base64.b64encode(head + os.urandom(SPLICE_BYTES + (-len(head) - SPLICE_BYTES) % 3)).decode()


PNG, PDF, JPEG = _b64(b"\x89PNG\r\n\x1a\n"), _b64(b"%PDF-1.7\n"), _b64(b"\xff\xd8\xff\xe0")


def _responses(*parts: dict, extra: list | None = None) -> dict:
    return {"model": "gemini-2.5-pro", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "look"}, *parts]}, *(extra or [])]}


def _anthropic(*blocks: dict, extra: list | None = None) -> dict:
    return {"model": "gemini-2.5-pro", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"}, *blocks]}, *(extra or [])]}


def _translate_responses(body: dict, spliced: Spliced | None) -> dict:
    return responses_request_to_gemini(body, {}, spliced=spliced).gemini


def _translate_anthropic(body: dict, spliced: Spliced | None) -> dict:
    return messages_request_to_gemini(body, "gemini-2.5-pro", {}, spliced=spliced).gemini


RESPONSES = ("input", _translate_responses)
ANTHROPIC = ("messages", _translate_anthropic)

CASES = {
    "responses input_image data URL": (RESPONSES, _responses({"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"})),
    "responses input_image bare base64": (RESPONSES, _responses({"type": "input_image", "image_url": PNG})),
    "responses input_file file_data": (RESPONSES, _responses(
        {"type": "input_file", "filename": "a.pdf", "file_data": f"data:application/pdf;base64,{PDF}"})),
    "responses two images and a tool output image": (RESPONSES, _responses(
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
        {"type": "input_image", "image_url": f"data:image/jpeg;base64,{JPEG}"},
        extra=[{"type": "function_call", "call_id": "c1", "name": "shot", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "c1",
                "output": [{"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}])),
    "anthropic image base64": (ANTHROPIC, _anthropic(
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}})),
    "anthropic image base64 JPEG": (ANTHROPIC, _anthropic(
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG}})),
    "anthropic image data: URL": (ANTHROPIC, _anthropic(
        {"type": "image", "source": {"type": "url", "url": f"data:image/jpeg;base64,{JPEG}"}})),
    "anthropic document base64": (ANTHROPIC, _anthropic(
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}})),
    "anthropic tool_result image": (ANTHROPIC, _anthropic(extra=[
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "here"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}])),
    "anthropic long base64 text": (ANTHROPIC, _anthropic({"type": "text", "text": PNG[:SPLICE_BYTES + 4]})),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_spliced_translation_sends_the_same_bytes_without_copying_the_media(name: str) -> None:
    (array, translate), body = CASES[name]
    raw = bytearray(orjson.dumps(body))
    plain = orjson.dumps(translate(parse_object(bytes(raw)), None))
    sp = Spliced()
    opened = spliced_opener(array, sp)(raw)
    serialized = orjson.dumps(translate(opened, sp))
    assert len(serialized) < len(plain) // 2, "the media went through the translation as text"
    pieces = sp.pieces(serialized)
    assert isinstance(pieces, list)
    assert b"".join(bytes(p) for p in pieces) == plain
    # The media are views of the client's body itself (msgspec's Raw elements of it), not copies.
    media = [p for p in pieces if isinstance(p, memoryview) and p.nbytes >= SPLICE_BYTES]
    assert media and all(isinstance(p.obj, msgspec.Raw) for p in media)


def test_anthropic_base64_jpeg_is_base64_not_a_path() -> None:
    # JPEG base64 starts with "/9j/": in a URL field that reads as a path, in a base64 source not.
    small = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(30)).decode()
    body = _anthropic({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": small}})
    part = _translate_anthropic(body, None)["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/jpeg", "data": small}}


@pytest.mark.parametrize("data", [JPEG, base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(30)).decode()])
def test_a_bare_base64_url_that_reads_as_a_path_is_refused_however_long(data: str) -> None:
    body = _responses({"type": "input_image", "image_url": data})
    raw = orjson.dumps(body)
    sp = Spliced()
    with pytest.raises(TranslationError, match="must be http"):
        _translate_responses(spliced_opener("input", sp)(raw), sp)


def test_a_small_body_is_parsed_as_it_is() -> None:
    body = _anthropic({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    sp = Spliced()
    assert spliced_opener("messages", sp)(orjson.dumps(body)) == body and len(sp) == 0


@pytest.mark.parametrize(("array", "translate", "body", "param"), [
    (*RESPONSES, _responses({"type": "input_image", "image_url": f"data:image/png;base64,{PNG}A"}),
     "input[0].content[1].image_url.url"),
    (*ANTHROPIC, _anthropic({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG + "A"}}),
     "messages[0].content[1].source.data"),
    (*ANTHROPIC, _anthropic({"type": "document", "source": {"type": "url", "url": f"data:application/pdf;base64,{PDF}A"}}),
     "messages[0].content[1].source.url"),
])
def test_truncated_base64_is_refused_alike(array, translate, body: dict, param: str) -> None:
    raw = orjson.dumps(body)
    with pytest.raises(TranslationError) as plain:
        translate(parse_object(raw), None)
    sp = Spliced()
    with pytest.raises(TranslationError) as spliced:
        translate(spliced_opener(array, sp)(raw), sp)
    assert len(sp) == 1  # it was a token
    assert (spliced.value.message, spliced.value.param) == (plain.value.message, plain.value.param)
    assert param == spliced.value.param and "base64" in spliced.value.message
