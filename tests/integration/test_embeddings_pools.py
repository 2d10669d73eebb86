"""Embeddings through the real stack (Envoy → edge → upstream → simulator) with pools that can
serve them: AI Studio keys only, Vertex AI only, and the mixed pool (Code Assist seat first).

The vectors are the simulator's (deterministic per text and size), so each answer is checked
value by value after the edge's translation; the ledger must name the credential kind that
served each call. A pool without such members is in test_embeddings_stack.py.
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
from google.genai import types

from tests import harness
from tests.simulator.google_api import vector
from tests.stack_fixtures import Stack, start_stack

EMBED = "gemini-embedding-001"
CLOUD_KINDS = {"ai-studio-key", "vertex-ai"}
KINDS = {"ai-studio": {"ai-studio-key"}, "vertex": {"vertex-ai"}, "mixed": CLOUD_KINDS}


@pytest.fixture(scope="module", params=sorted(KINDS))
def pool(request: pytest.FixtureRequest, simulator: harness.Proc,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Stack]]:
    s = start_stack(simulator, tmp_path_factory.mktemp(f"embed-{request.param}"), pool=request.param)
    try:
        yield request.param, s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


def unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def test_openai_sdk(pool: tuple[str, Stack]) -> None:
    kind, stack = pool
    key = stack.key()
    client = openai.OpenAI(api_key=key, base_url=f"{stack.public_base}/v1", max_retries=0, timeout=30)
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
    assert {r["credential_kind"] for r in rows} <= KINDS[kind] and all(r["credential_id"] for r in rows)


def test_openai_float_on_the_wire(pool: tuple[str, Stack], http: httpx.Client) -> None:
    _, stack = pool
    r = http.post(f"{stack.public_base}/v1/embeddings", headers={"Authorization": f"Bearer {stack.key()}"},
                  json={"model": f"models/{EMBED}", "input": "plain floats", "encoding_format": "float",
                        "dimensions": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    assert body["data"][0]["embedding"] == pytest.approx(unit(vector("plain floats", 8)), rel=1e-6)
    assert set(body["usage"]) == {"prompt_tokens", "total_tokens"}

    r = http.post(f"{stack.public_base}/v1/embeddings", headers={"Authorization": f"Bearer {stack.key()}"},
                  json={"model": EMBED, "input": "b64", "encoding_format": "base64", "dimensions": 4})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert list(struct.unpack("<4f", raw)) == pytest.approx(unit(vector("b64", 4)), rel=1e-6)


def test_genai_sdk(pool: tuple[str, Stack]) -> None:
    kind, stack = pool
    key = stack.key()
    client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=stack.public_base,
                                                                      api_version="v1beta", timeout=30_000))
    out = client.models.embed_content(model=EMBED, contents=["alpha", "beta gamma"],
                                      config=types.EmbedContentConfig(output_dimensionality=16))
    assert [e.values for e in out.embeddings] == [pytest.approx(vector("alpha", 16)),
                                                  pytest.approx(vector("beta gamma", 16))]
    (row,) = stack.ledger(stack.key_id(key), expect=1)
    assert (row["api"], row["op"], row["status"]) == ("gemini", "embed", 200)
    assert row["credential_kind"] in KINDS[kind]


def test_native_embed_content(pool: tuple[str, Stack], http: httpx.Client) -> None:
    _, stack = pool
    r = http.post(f"{stack.public_base}/v1beta/models/{EMBED}:embedContent", headers={"x-goog-api-key": stack.key()},
                  json={"content": {"parts": [{"text": "native call"}]}, "outputDimensionality": 32,
                        "taskType": "SEMANTIC_SIMILARITY"})
    assert r.status_code == 200, r.text
    assert r.json() == {"embedding": {"values": pytest.approx(vector("native call", 32))}}


def test_model_lists_show_the_embedding_model(pool: tuple[str, Stack], http: httpx.Client) -> None:
    _, stack = pool
    key = stack.key()
    google = {m["name"]: m for m in http.get(f"{stack.public_base}/v1beta/models",
                                             headers={"x-goog-api-key": key}).json()["models"]}
    assert google[f"models/{EMBED}"]["supportedGenerationMethods"] == ["embedContent", "batchEmbedContents"]
    ids = [m["id"] for m in http.get(f"{stack.public_base}/v1/models",
                                     headers={"Authorization": f"Bearer {key}"}).json()["data"]]
    assert EMBED in ids and f"{EMBED}-thinking" not in ids


def test_generation_ledger_names_the_kind(pool: tuple[str, Stack], http: httpx.Client) -> None:
    kind, stack = pool
    key = stack.key()
    r = http.post(f"{stack.public_base}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                  json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    (row,) = stack.ledger(stack.key_id(key), expect=1)
    # The mixed pool puts its Code Assist seat first: it serves while it can.
    expected = {"ai-studio": "ai-studio-key", "vertex": "vertex-ai", "mixed": "gemini-cli-oauth"}[kind]
    assert row["credential_kind"] == expected and row["credential_id"]
