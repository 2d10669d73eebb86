"""Embeddings with the official SDKs through Envoy, once per pool kind (Code Assist seats only,
AI Studio keys only, Vertex AI only, mixed).

Pools with AI Studio or Vertex AI members serve them: the vectors are the simulator's
(deterministic per text and size), so each answer is checked value by value after the edge's
translation, and the ledger must name the credential kind that served each call. A pool of
Code Assist seats only has no embeddings: every route answers 404 model_not_found in its own
API's format (never a 5xx), with its ledger row.
"""
from __future__ import annotations

import base64
import math
import struct
from typing import Iterator

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.simulator.google_api import vector
from tests.stack_fixtures import Stack

EMBED = "gemini-embedding-001"
# Which credential kinds may serve embeddings / generation in each pool.
EMBED_KINDS = {"code-assist": set(), "ai-studio": {"ai-studio-key"}, "vertex": {"vertex-ai"},
               "mixed": {"ai-studio-key", "vertex-ai"}}
# The mixed pool puts its Code Assist seat first: it serves generation while it can.
GENERATE_KIND = {"code-assist": "gemini-cli-oauth", "ai-studio": "ai-studio-key", "vertex": "vertex-ai",
                 "mixed": "gemini-cli-oauth"}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


def serves(stack: Stack) -> bool:
    return bool(EMBED_KINDS[stack.pool])


def unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def test_openai_sdk(stack: Stack) -> None:
    key = stack.key()
    client = openai.OpenAI(api_key=key, base_url=f"{stack.public_base}/v1", max_retries=0, timeout=30)
    if not serves(stack):
        with pytest.raises(openai.NotFoundError) as info:
            client.embeddings.create(model=EMBED, input="hello")
        assert info.value.code == "model_not_found" and "AI Studio or Vertex AI" in info.value.message
        (row,) = stack.ledger(stack.key_id(key), expect=1)
        assert (row["op"], row["model"], row["status"], row["credential_kind"]) == ("embed", EMBED, 404, "")
        return
    # The SDK asks for base64 and decodes the float32 bytes itself.
    out = client.embeddings.create(model=EMBED, input=["the first text", "another one"])
    assert [d.index for d in out.data] == [0, 1] and out.model == EMBED
    for d, text in zip(out.data, ["the first text", "another one"]):
        assert len(d.embedding) == 3072
        assert d.embedding == pytest.approx(vector(text, 3072), abs=1e-6)
    shortened = client.embeddings.create(model=EMBED, input="short please", dimensions=256,
                                         extra_body={"task_type": "RETRIEVAL_QUERY"})
    assert shortened.data[0].embedding == pytest.approx(unit(vector("short please", 256)), rel=1e-5)
    rows = stack.ledger(stack.key_id(key), expect=2)
    assert [(r["api"], r["op"], r["model"], r["status"]) for r in rows] == [("openai", "embed", EMBED, 200)] * 2
    assert {r["credential_kind"] for r in rows} <= EMBED_KINDS[stack.pool] and all(r["credential_id"] for r in rows)


def test_many_inputs_in_one_request(stack: Stack, http: httpx.Client) -> None:
    """More inputs than one backend call takes (AI Studio: 100 per batch; Vertex: one per
    predict call for gemini-embedding-001): answered in one response, in order."""
    texts = [f"input number {i}" for i in range(150)]
    r = http.post(f"{stack.public_base}/v1/embeddings", headers={"Authorization": f"Bearer {stack.key()}"},
                  json={"model": EMBED, "input": texts, "encoding_format": "float"})
    if not serves(stack):
        assert r.status_code == 404, r.text
        return
    assert r.status_code == 200, r.text[:500]
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(150))
    for d, text in zip(data, texts):
        assert d["embedding"] == pytest.approx(vector(text, 3072), abs=1e-6)


def test_openai_encodings_on_the_wire(stack: Stack, http: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {stack.key()}"}
    r = http.post(f"{stack.public_base}/v1/embeddings", headers=headers,
                  json={"model": f"models/{EMBED}", "input": "plain floats", "encoding_format": "float",
                        "dimensions": 8})
    if not serves(stack):
        assert r.status_code == 404, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert (err["code"], err["type"]) == ("model_not_found", "not_found_error")
        return
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    assert body["data"][0]["embedding"] == pytest.approx(unit(vector("plain floats", 8)), rel=1e-6)
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}

    r = http.post(f"{stack.public_base}/v1/embeddings", headers=headers,
                  json={"model": EMBED, "input": "b64", "encoding_format": "base64", "dimensions": 4})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert list(struct.unpack("<4f", raw)) == pytest.approx(unit(vector("b64", 4)), rel=1e-6)


def test_token_arrays_are_refused_before_the_pool(stack: Stack, http: httpx.Client) -> None:
    r = http.post(f"{stack.public_base}/v1/embeddings", headers={"Authorization": f"Bearer {stack.key()}"},
                  json={"model": EMBED, "input": [[1, 2, 3]]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unsupported_input"


def test_genai_sdk(stack: Stack) -> None:
    key = stack.key()
    client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=stack.public_base,
                                                                      api_version="v1beta", timeout=30_000))
    if not serves(stack):
        with pytest.raises(genai_errors.ClientError) as info:
            client.models.embed_content(model=EMBED, contents="alpha")
        assert info.value.code == 404 and info.value.status == "NOT_FOUND"
        return
    out = client.models.embed_content(model=EMBED, contents=["alpha", "beta gamma"],
                                      config=types.EmbedContentConfig(output_dimensionality=16))
    assert [e.values for e in out.embeddings] == [pytest.approx(vector("alpha", 16)),
                                                  pytest.approx(vector("beta gamma", 16))]
    (row,) = stack.ledger(stack.key_id(key), expect=1)
    assert (row["api"], row["op"], row["status"]) == ("gemini", "embed", 200)
    assert row["credential_kind"] in EMBED_KINDS[stack.pool]


@pytest.mark.parametrize("method", ["embedContent", "batchEmbedContents"])
def test_native_routes(stack: Stack, http: httpx.Client, method: str) -> None:
    one = {"content": {"parts": [{"text": "native call"}]}, "outputDimensionality": 32,
           "taskType": "SEMANTIC_SIMILARITY"}
    body = one if method == "embedContent" else {"requests": [{"model": f"models/{EMBED}", **one}]}
    r = http.post(f"{stack.public_base}/v1beta/models/{EMBED}:{method}", headers={"x-goog-api-key": stack.key()},
                  json=body)
    if not serves(stack):
        assert r.status_code == 404, r.text
        err = r.json()["error"]
        assert (err["code"], err["status"]) == (404, "NOT_FOUND") and err["message"]
        return
    assert r.status_code == 200, r.text
    values = pytest.approx(vector("native call", 32))
    assert r.json() == ({"embedding": {"values": values}} if method == "embedContent"
                        else {"embeddings": [{"values": values}]})


def test_model_lists_are_the_union_of_the_pool(stack: Stack, http: httpx.Client) -> None:
    key = stack.key()
    google = {m["name"]: m for m in http.get(f"{stack.public_base}/v1beta/models",
                                             headers={"x-goog-api-key": key}).json()["models"]}
    ids = [m["id"] for m in http.get(f"{stack.public_base}/v1/models",
                                     headers={"Authorization": f"Bearer {key}"}).json()["data"]]
    assert "models/gemini-2.5-flash" in google and "gemini-2.5-flash" in ids
    if not serves(stack):
        assert f"models/{EMBED}" not in google and EMBED not in ids
        return
    assert google[f"models/{EMBED}"]["supportedGenerationMethods"] == ["embedContent", "batchEmbedContents"]
    assert "embedContent" not in google["models/gemini-2.5-flash"]["supportedGenerationMethods"]
    assert EMBED in ids and f"{EMBED}-thinking" not in ids


def test_generation_ledger_names_the_kind(stack: Stack, http: httpx.Client) -> None:
    key = stack.key()
    r = http.post(f"{stack.public_base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                  json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    r = http.post(f"{stack.public_base}/v1beta/models/gemini-2.5-flash:streamGenerateContent", params={"alt": "sse"},
                  headers={"x-goog-api-key": key}, json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 200, r.text
    rows = stack.ledger(stack.key_id(key), expect=2)
    assert [(r["op"], r["credential_kind"]) for r in rows] == [("generate", GENERATE_KIND[stack.pool]),
                                                               ("stream", GENERATE_KIND[stack.pool])]
    assert all(r["credential_id"] for r in rows)
