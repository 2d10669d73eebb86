"""Embeddings through the real stack: Envoy → edge → upstream → simulator.

The stack's pool holds only Code Assist credentials, which have no embeddings: every embeddings
call must get a clear 404 in its API's own format (never a 5xx), with its ledger row.
"""
from __future__ import annotations

from typing import Iterator

import httpx
import openai
import pytest

from tests.stack_fixtures import Stack, stack  # noqa: F401  (fixture)

EMBED = "gemini-embedding-001"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


def test_openai_embeddings_without_an_embedding_member(stack: Stack, http: httpx.Client) -> None:
    key = stack.key()
    r = http.post(f"{stack.public_base}/v1/embeddings", headers={"Authorization": f"Bearer {key}"},
                  json={"model": EMBED, "input": ["hello", "world"]})
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "model_not_found" and err["type"] == "not_found_error"
    assert "AI Studio or Vertex AI" in err["message"]
    (row,) = stack.ledger(stack.key_id(key), expect=1)
    assert (row["api"], row["op"], row["model"], row["status"]) == ("openai", "embed", EMBED, 404)


def test_openai_sdk_sees_not_found(stack: Stack) -> None:
    client = openai.OpenAI(api_key=stack.key(), base_url=f"{stack.public_base}/v1", max_retries=0, timeout=30)
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model=EMBED, input="hello")
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(("method", "body"), [
    ("embedContent", {"content": {"parts": [{"text": "hello"}]}}),
    ("batchEmbedContents", {"requests": [{"model": f"models/{EMBED}", "content": {"parts": [{"text": "hello"}]}}]}),
])
def test_native_embeddings_without_an_embedding_member(stack: Stack, http: httpx.Client, method: str, body: dict) -> None:
    key = stack.key()
    r = http.post(f"{stack.public_base}/v1beta/models/{EMBED}:{method}", headers={"x-goog-api-key": key}, json=body)
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert (err["code"], err["status"]) == (404, "NOT_FOUND") and err["message"]
    (row,) = stack.ledger(stack.key_id(key), expect=1)
    assert (row["api"], row["op"], row["status"], row["credential_kind"]) == ("gemini", "embed", 404, "")


def test_bad_embeddings_request_is_refused_before_the_pool(stack: Stack, http: httpx.Client) -> None:
    r = http.post(f"{stack.public_base}/v1/embeddings", headers={"Authorization": f"Bearer {stack.key()}"},
                  json={"model": EMBED, "input": [[1, 2, 3]]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unsupported_input"
