"""Big media held once: spliced tokens (edge), base64 encoded as it arrives (edge), bodies sent
in parts (edge → upstream) and read back by hand (upstream)."""
from __future__ import annotations

import asyncio
import base64
import os

import orjson
import pytest
from msgspec import Raw

from gemini_cli.upstream.v1 import upstream_pb2
from services.edge.lean_json import open_chat
from services.edge.media_encode import Encoder
from services.edge.spliced import Spliced
from services.edge.translate.contents_writer import SPLICE_BYTES, load_message
from services.edge.translate.errors import TranslationError
from services.edge.translate.openai_to_gemini import chat_request_to_gemini
from services.edge.generate_wire import chunked_parts
from services.upstream import chunked
from services.upstream.errors import InvalidRequest

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(SPLICE_BYTES)
PNG_B64 = base64.b64encode(PNG).decode()


def joined(pieces) -> bytes:
    return pieces if isinstance(pieces, bytes) else b"".join(bytes(p) for p in pieces)


# --- Spliced --------------------------------------------------------------------------------

def test_tokens_are_replaced_by_their_values_in_the_serialized_request() -> None:
    sp = Spliced()
    big = bytearray(b"QUJD" * 1000)
    doc = {"a": sp.token(big), "b": ["x", sp.token([b"RE", memoryview(b"VG")])], "c": "plain"}
    pieces = sp.pieces(orjson.dumps(doc))
    assert any(p is big for p in pieces)  # the value itself, not a copy
    assert orjson.loads(joined(pieces)) == {"a": "QUJD" * 1000, "b": ["x", "REVG"], "c": "plain"}


def test_no_token_leaves_the_bytes_as_they_are() -> None:
    sp = Spliced()
    out = orjson.dumps({"a": 1})
    assert sp.pieces(out) is out
    sp.token(b"QQ==")
    assert sp.pieces(out) is out


def test_tokens_of_another_request_or_made_up_stay_text() -> None:
    mine, other = Spliced(), Spliced()
    mine.token(b"QQ==")
    foreign = other.token(b"Qg==")
    guessed = "@@media-0000000000000000-0@@"
    out = orjson.dumps({"t": foreign, "u": guessed})
    assert joined(mine.pieces(out)) == out
    assert mine.find(foreign) is None and mine.find(guessed) is None


def test_find_splits_a_data_url_before_its_token() -> None:
    sp = Spliced()
    token = sp.token(b"QQ==")
    assert sp.find(f"data:image/png;base64,{token}") == ("data:image/png;base64,", [b"QQ=="])
    assert sp.find(token) == ("", [b"QQ=="])
    assert sp.find(token + "x") is None


# --- inline media left in the body ------------------------------------------------------------

def _chat_body(url: str, text: str = "describe") -> bytes:
    return orjson.dumps({"model": "gemini-2.5-flash", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}]})


@pytest.mark.parametrize("url", [f"data:image/png;base64,{PNG_B64}", PNG_B64,
                                 f"data:application/octet-stream;base64,{PNG_B64}"])
def test_translation_with_spliced_media_sends_the_same_request(url: str) -> None:
    raw = _chat_body(url)
    plain = chat_request_to_gemini(open_chat(raw), {})
    sp = Spliced()
    spliced = chat_request_to_gemini(open_chat(raw), {}, spliced=sp)
    assert len(sp) == 1
    pieces = sp.pieces(orjson.dumps(spliced.gemini))
    # The media is a view of the client's body (through msgspec's Raw), not a copy.
    assert isinstance(pieces, list) and any(isinstance(p, memoryview) and isinstance(p.obj, Raw)
                                            and p.nbytes == len(PNG_B64) for p in pieces)
    sent = orjson.loads(joined(pieces))
    assert sent == orjson.loads(orjson.dumps(plain.gemini))
    assert sent["contents"][0]["parts"][1]["inlineData"] == {"mimeType": "image/png", "data": PNG_B64}


def test_fetched_media_tokens_go_through_translation() -> None:
    sp = Spliced()
    token = sp.token([bytearray(PNG_B64.encode())])
    chat = chat_request_to_gemini(open_chat(_chat_body("https://example.com/a.png")),
                                  {"https://example.com/a.png": ("image/png", token)}, spliced=sp)
    sent = orjson.loads(joined(sp.pieces(orjson.dumps(chat.gemini))))
    assert sent["contents"][0]["parts"][1]["inlineData"] == {"mimeType": "image/png", "data": PNG_B64}


@pytest.mark.parametrize("case", ["short", "escaped slash", "whitespace", "url-safe", "after escaped quote"])
def test_what_is_not_one_plain_base64_run_is_parsed_as_before(case: str) -> None:
    data = {"short": PNG_B64[:1000], "escaped slash": PNG_B64, "whitespace": PNG_B64[:SPLICE_BYTES] + "\n" + PNG_B64[SPLICE_BYTES:],
            "url-safe": base64.urlsafe_b64encode(PNG).decode(), "after escaped quote": PNG_B64}[case]
    text = orjson.dumps({"role": "user", "content": [{"type": "text", "text": "q"},
                                                      {"type": "image_url", "image_url": {"url": data}}]})
    if case == "escaped slash":
        text = text.replace(b"/", b"\\/")
    if case == "after escaped quote":  # the run is inside a text string that starts elsewhere
        text = orjson.dumps({"role": "user", "content": 'say "' + PNG_B64 + '"'})
    sp = Spliced()
    raw_message = open_chat(b'{"messages":[' + text + b"]}")["messages"][0]
    assert isinstance(raw_message, Raw)
    msg = load_message(raw_message, "m", sp)
    assert len(sp) == 0
    assert msg == orjson.loads(text)


def test_a_long_base64_text_round_trips_through_its_token() -> None:
    # Not media: a user pasting base64. It becomes a token too, and comes back as it was.
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": PNG_B64}]})
    sp = Spliced()
    chat = chat_request_to_gemini(open_chat(raw), {}, spliced=sp)
    sent = orjson.loads(joined(sp.pieces(orjson.dumps(chat.gemini))))
    assert sent["contents"][0]["parts"] == [{"text": PNG_B64}]


def test_truncated_spliced_base64_is_a_400() -> None:
    raw = _chat_body(f"data:image/png;base64,{PNG_B64[:-3]}")  # length % 4 == 1
    with pytest.raises(TranslationError, match="truncated"):
        chat_request_to_gemini(open_chat(raw), {}, spliced=Spliced())


# --- base64 as it arrives --------------------------------------------------------------------

@pytest.mark.parametrize("declared", [True, False, "short"])
@pytest.mark.parametrize("step", [1, 2, 3, 4096, 65_537])
def test_encoder_matches_b64encode_whatever_the_chunks(declared, step: int) -> None:
    data = os.urandom(200_003)
    size = len(data) if declared is True else (len(data) - 10 if declared == "short" else None)
    enc = Encoder(size)
    for i in range(0, len(data), step):
        enc.feed(data[i:i + step])
    out = enc.finish()
    assert b"".join(out) == base64.b64encode(data)
    assert out.text() == base64.b64encode(data).decode()
    assert enc.head == data[:512]
    if declared is True:
        assert len(out) == 1  # one buffer of the final size


# --- bodies in parts --------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"{" + b"a" * 10 + b"}",
    [b'{"a":"', bytearray(b"x" * 2500), memoryview(b"y" * 700), b'"}'],
    bytearray(b"z" * 3000),
    memoryview(b"w" * 1000),
])
def test_parts_carry_the_body_and_protobuf_reads_them_too(body) -> None:
    whole = joined(body) if isinstance(body, list) else bytes(body)
    wire = list(chunked_parts("gemini-2.5-flash", body, True, "rid", "edge/k", part_bytes=1000))
    assert len(wire) == max(1, -(-len(whole) // 1000))
    parts = [chunked.part_from_wire(w) for w in wire]
    assert parts[0].head.model == "gemini-2.5-flash" and parts[0].head.stream and parts[0].body_bytes == len(whole)
    assert all(p.head is None for p in parts[1:])
    assert b"".join(bytes(p.data) for p in parts) == whole
    decoded = [upstream_pb2.GenerateRequestPart.FromString(w) for w in wire]
    assert b"".join(d.data for d in decoded) == whole and decoded[0].head.caller == "edge/k"


def test_hand_reader_follows_protobuf_rules() -> None:
    # Fields in another order, an unknown field of each wire type, `data` twice (the last wins).
    head = upstream_pb2.GenerateRequest(model="m", request_id="r").SerializeToString()
    wire = (b"\x1a\x03old" + b"\x10\x05" + b"\x98\x06\x01" + b"\xa1\x06" + b"\0" * 8 + b"\xad\x06" + b"\0" * 4
            + b"\xa2\x06\x02zz" + b"\x0a" + bytes([len(head)]) + head + b"\x1a\x05hello")
    part = chunked.part_from_wire(wire)
    assert (part.head.model, part.head.request_id, part.body_bytes, bytes(part.data)) == ("m", "r", 5, b"hello")
    assert upstream_pb2.GenerateRequestPart.FromString(wire).data == b"hello"


@pytest.mark.parametrize("wire", [b"\x1a\x05hel", b"\x1a", b"\x10\xff", b"\x0b", b"\x00\x01"])
def test_hand_reader_refuses_malformed_wire(wire: bytes) -> None:
    with pytest.raises(chunked.WireError):
        chunked.part_from_wire(wire)


async def _parts(*parts):
    for p in parts:
        yield p


def _part(data: bytes, head: bool = False, declared: int = 0) -> chunked.Part:
    return chunked.Part(upstream_pb2.GenerateRequest(model="m", stream=True) if head else None, declared,
                        memoryview(data))


def test_receive_puts_the_parts_in_one_buffer() -> None:
    got = asyncio.run(chunked.receive(_parts(_part(b"ab", True, 5), _part(b"cde")), 100))
    assert bytes(got.body.data) == b"abcde" and got.model == "m" and got.stream


@pytest.mark.parametrize("parts, message", [
    ((_part(b"ab"),), "must carry `head`"),
    ((_part(b"ab", True, 4), _part(b"cd", True)), "only the first part"),
    ((_part(b"ab", True, 3), _part(b"cd")), "more than the 3 bytes"),
    ((_part(b"ab", True, 5),), "after 2 of the 5 bytes"),
    ((_part(b"ab", True, 101),), "between 1 and 100"),
    ((), "no parts"),
])
def test_receive_refuses_parts_that_do_not_add_up(parts, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        asyncio.run(chunked.receive(_parts(*parts), 100))
