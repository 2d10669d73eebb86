"""Embeddings translators: OpenAI /v1/embeddings and Gemini embedContent/batchEmbedContents ⇄
the Embed RPC's batchEmbedContents body and `{"embeddings": [{"values"}]}` answer."""
from __future__ import annotations

import base64
import math
import struct

import pytest

from services.edge.translate.embeddings import (MAX_INPUTS, EmbeddingsRequest, batch_embed_to_batch,
                                                embed_content_response, embed_content_to_batch,
                                                embeddings_request_to_gemini, embeddings_response, encode_base64)
from services.edge.translate.errors import TranslationError

M = "gemini-embedding-001"


def part(text: str, **extra) -> dict:
    return {"model": f"models/{M}", "content": {"parts": [{"text": text}]}, **extra}


# --- OpenAI request → batch ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "requests", "encoding", "normalize"),
    [
        # what the openai SDK sends for embeddings.create(model=M, input="hello"): it asks for base64
        ({"input": "hello", "model": M, "encoding_format": "base64"}, [part("hello")], "base64", False),
        ({"input": ["a", "b c"], "model": M, "encoding_format": "float"}, [part("a"), part("b c")], "float", False),
        ({"input": "x", "model": f"models/{M}"}, [part("x")], "float", False),
        ({"input": "x", "model": M, "dimensions": 768}, [part("x", outputDimensionality=768)], "float", True),
        ({"input": "x", "model": M, "dimensions": 256.0}, [part("x", outputDimensionality=256)], "float", True),
        ({"input": "x", "model": M, "user": "u-42"}, [part("x")], "float", False),
        # extra_body={"task_type": ...} lands at the top level of the body
        ({"input": ["q"], "model": M, "task_type": "retrieval_query"}, [part("q", taskType="RETRIEVAL_QUERY")], "float", False),
        ({"input": "x", "model": M, "encoding_format": None}, [part("x")], "float", False),
    ],
)
def test_openai_request(body, requests, encoding, normalize) -> None:
    req = embeddings_request_to_gemini(body)
    assert req.model == M
    assert req.batch == {"requests": requests}
    assert (req.count, req.encoding, req.normalize) == (len(requests), encoding, normalize)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x"}, "model", "invalid_type"),
        ({"input": "x", "model": 7}, "model", "invalid_type"),
        ({"input": "x", "model": "../../etc"}, "model", "invalid_model"),
        ({"input": "x", "model": "models/a/b"}, "model", "invalid_model"),
        ({"model": M}, "input", None),
        ({"input": "", "model": M}, "input", None),
        ({"input": "   ", "model": M}, "input", None),
        ({"input": [], "model": M}, "input", None),
        ({"input": ["ok", ""], "model": M}, "input[1]", None),
        ({"input": ["ok", 3.5], "model": M}, "input[1]", "invalid_type"),
        ({"input": ["ok", None], "model": M}, "input[1]", "invalid_type"),
        ({"input": {"text": "x"}, "model": M}, "input", "invalid_type"),
        ({"input": None, "model": M}, "input", "invalid_type"),
        # token arrays (what tiktoken-based clients such as LangChain send): no meaning for Gemini
        ({"input": [15339, 1917], "model": M}, "input", "unsupported_input"),
        ({"input": [[15339, 1917], [40]], "model": M}, "input", "unsupported_input"),
        ({"input": ["x"] * (MAX_INPUTS + 1), "model": M}, "input", None),
        ({"input": "x", "model": M, "dimensions": 0}, "dimensions", None),
        ({"input": "x", "model": M, "dimensions": -3}, "dimensions", None),
        ({"input": "x", "model": M, "dimensions": "768"}, "dimensions", None),
        ({"input": "x", "model": M, "dimensions": True}, "dimensions", None),
        ({"input": "x", "model": M, "dimensions": 2**40}, "dimensions", None),
        ({"input": "x", "model": M, "encoding_format": "int8"}, "encoding_format", None),
        ({"input": "x", "model": M, "task_type": 3}, "task_type", None),
        ({"input": "x", "model": M, "task_type": "retrieval query; drop"}, "task_type", None),
    ],
)
def test_openai_request_errors(body, param, code) -> None:
    with pytest.raises(TranslationError) as info:
        embeddings_request_to_gemini(body)
    assert info.value.param == param
    assert info.value.message
    if code:
        assert info.value.code == code


def test_max_inputs_is_allowed() -> None:
    assert embeddings_request_to_gemini({"input": ["x"] * MAX_INPUTS, "model": M}).count == MAX_INPUTS


# --- batch answer → OpenAI response -------------------------------------------------------------

def req(count: int = 1, encoding: str = "float", normalize: bool = False) -> EmbeddingsRequest:
    return EmbeddingsRequest(model=M, batch={}, count=count, encoding=encoding, normalize=normalize)


def test_openai_response_float() -> None:
    answer = {"embeddings": [{"values": [0.1, -0.2, 0.3]}, {"values": [1, 0, 0]}]}
    assert embeddings_response(answer, req(2), model=M, prompt_tokens=6) == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2, 0.3]},
                 {"object": "embedding", "index": 1, "embedding": [1, 0, 0]}],
        "model": M,
        "usage": {"prompt_tokens": 6, "total_tokens": 6},
    }


def test_openai_response_base64_is_little_endian_float32() -> None:
    values = [0.5, -1.25, 3.0e-3, 0.0]
    out = embeddings_response({"embeddings": [{"values": values}]}, req(encoding="base64"), model=M, prompt_tokens=0)
    raw = base64.b64decode(out["data"][0]["embedding"])
    assert len(raw) == 4 * len(values)
    assert raw[:4] == bytes.fromhex("0000003f")  # 0.5f little-endian
    assert struct.unpack("<4f", raw) == pytest.approx(values, rel=1e-6)
    assert encode_base64([]) == ""


def test_openai_response_decodes_like_the_sdk() -> None:
    """The openai SDK decodes base64 embeddings with numpy.frombuffer(dtype='float32') (or array('f'))."""
    from array import array
    import sys

    values = [0.25, -0.75, 0.125]
    text = embeddings_response({"embeddings": [{"values": values}]}, req(encoding="base64"), model=M,
                               prompt_tokens=0)["data"][0]["embedding"]
    arr = array("f", base64.b64decode(text))
    if sys.byteorder != "little":
        arr.byteswap()
    assert arr.tolist() == values


def test_shortened_vectors_are_unit_length() -> None:
    out = embeddings_response({"embeddings": [{"values": [3.0, 4.0]}, {"values": [0.0, 0.0]}]},
                              req(2, normalize=True), model=M, prompt_tokens=2)
    assert out["data"][0]["embedding"] == pytest.approx([0.6, 0.8])
    assert math.isclose(math.fsum(v * v for v in out["data"][0]["embedding"]), 1.0)
    assert out["data"][1]["embedding"] == [0.0, 0.0]  # nothing to scale


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"embeddings": []},
        {"embeddings": [{"values": [0.1]}, {"values": [0.2]}]},  # more than asked
        {"embeddings": [{"value": [0.1]}]},
        {"embeddings": [{"values": ["0.1"]}]},
        {"embeddings": [{"values": [True]}]},
        {"embeddings": "nope"},
        [],
    ],
)
def test_openai_response_rejects_answers_off_contract(answer) -> None:
    with pytest.raises(ValueError):
        embeddings_response(answer, req(1), model=M, prompt_tokens=0)


# --- Gemini-native ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # google-genai / REST docs shape of embedContent
        ({"content": {"parts": [{"text": "What is the meaning of life?"}]}},
         {"requests": [part("What is the meaning of life?")]}),
        ({"model": f"models/{M}", "content": {"parts": [{"text": "t"}]}, "taskType": "RETRIEVAL_DOCUMENT",
          "title": "Doc", "outputDimensionality": 768},
         {"requests": [part("t", taskType="RETRIEVAL_DOCUMENT", title="Doc", outputDimensionality=768)]}),
    ],
)
def test_embed_content_becomes_a_batch_of_one(body, expected) -> None:
    assert embed_content_to_batch(M, body) == expected


def test_batch_embed_contents_fills_in_the_model() -> None:
    # what google-genai's models.embed_content sends to AI Studio (always batchEmbedContents)
    body = {"requests": [{"model": f"models/{M}", "content": {"parts": [{"text": "a"}], "role": "user"},
                          "outputDimensionality": 10},
                         {"content": {"parts": [{"text": "b"}]}}]}
    batch, n = batch_embed_to_batch(M, body)
    assert n == 2
    assert batch == {"requests": [{"model": f"models/{M}", "content": {"parts": [{"text": "a"}], "role": "user"},
                                   "outputDimensionality": 10},
                                  part("b")]}
    assert body["requests"][1] == {"content": {"parts": [{"text": "b"}]}}  # the caller's body is not changed


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "requests"),
        ({"requests": []}, "requests"),
        ({"requests": {"content": {}}}, "requests"),
        ({"requests": ["text"]}, "requests[0]"),
        ({"requests": [{"content": {"parts": []}}]}, "requests[0].content"),
        ({"requests": [{"content": "hello"}]}, "requests[0].content"),
        ({"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}}]}, "requests[0].model"),
        ({"requests": [{"content": {"parts": [{"text": "a"}]}, "taskType": 1}]}, "requests[0].taskType"),
        ({"requests": [{"content": {"parts": [{"text": "a"}]}}] * (MAX_INPUTS + 1)}, "requests"),
    ],
)
def test_batch_errors(body, param) -> None:
    with pytest.raises(TranslationError) as info:
        batch_embed_to_batch(M, body)
    assert info.value.param == param


@pytest.mark.parametrize(("body", "param"), [({}, "request.content"), ({"content": {"parts": "x"}}, "request.content")])
def test_embed_content_errors(body, param) -> None:
    with pytest.raises(TranslationError) as info:
        embed_content_to_batch(M, body)
    assert info.value.param == param


def test_embed_content_response_unwraps_the_batch() -> None:
    assert embed_content_response({"embeddings": [{"values": [0.1, 0.2]}]}) == {"embedding": {"values": [0.1, 0.2]}}
    with pytest.raises(ValueError):
        embed_content_response({"embeddings": [{"values": [0.1]}, {"values": [0.2]}]})
