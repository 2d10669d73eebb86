"""The edge over the real stack (simulator → upstream → edge): keys, limits, errors, native API.

Streaming, the ledger and shutdown are in test_edge_streaming.py.
"""
from __future__ import annotations

import subprocess
import time
from typing import Iterator

import httpx
import orjson
import pytest

from tests import harness
from tests.stack_fixtures import EDGE_ENV, Stack, stack  # noqa: F401  (fixture)

MODEL = "gemini-2.5-pro"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}]}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture(scope="module")
def key(stack: Stack) -> str:
    return stack.key(name="api-main")


def gen(http: httpx.Client, stack: Stack, *, headers=None, params=None, model=MODEL, body=HELLO,
        method="generateContent", version="v1beta") -> httpx.Response:
    return http.post(f"{stack.base}/{version}/models/{model}:{method}", headers=headers or {}, params=params,
                     json=body)


def chat(http: httpx.Client, stack: Stack, key: str | None, body: dict | None = None, *, headers=None,
         params=None) -> httpx.Response:
    headers = headers or ({"Authorization": f"Bearer {key}"} if key else {})
    return http.post(f"{stack.base}/v1/chat/completions", headers=headers, params=params,
                     json=body or {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


def google_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and isinstance(err["status"], str) and err["message"], err
    return err


def openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return err


def text_of(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return "".join(p.get("text", "") for p in r.json()["candidates"][0]["content"]["parts"])


# --- keys ----------------------------------------------------------------------------------

@pytest.mark.parametrize("way", ["bearer", "bare", "x-goog-api-key", "query"])
def test_four_ways_of_passing_a_key(http, stack, key, way):
    headers, params = {}, None
    if way == "bearer":
        headers = {"Authorization": f"Bearer {key}"}
    elif way == "bare":
        headers = {"Authorization": key}
    elif way == "x-goog-api-key":
        headers = {"X-Goog-Api-Key": key}
    else:
        params = {"key": key}
    assert text_of(gen(http, stack, headers=headers, params=params)) == "echo: hi there"
    r = chat(http, stack, None, headers=headers, params=params)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hi"


def test_key_precedence(http, stack, key):
    bogus = "gcli-not-a-real-key"
    assert gen(http, stack, headers={"Authorization": f"Bearer {key}", "X-Goog-Api-Key": bogus}).status_code == 200
    google_error(gen(http, stack, headers={"Authorization": f"Bearer {bogus}", "X-Goog-Api-Key": key}), 401)
    assert gen(http, stack, headers={"Authorization": key}, params={"key": bogus}).status_code == 200
    google_error(gen(http, stack, headers={"X-Goog-Api-Key": bogus}, params={"key": key}), 401)


def test_missing_and_unknown_key(http, stack):
    assert google_error(gen(http, stack), 401)["status"] == "UNAUTHENTICATED"
    assert openai_error(chat(http, stack, None), 401)["code"] == "missing_api_key"
    google_error(gen(http, stack, headers={"X-Goog-Api-Key": "gcli-nope"}), 401)
    assert openai_error(chat(http, stack, "gcli-nope"), 401)["code"] == "invalid_api_key"


def test_expired_and_disabled_keys(http, stack):
    expired = stack.key("--expires", "2000-01-01")
    assert "expired" in google_error(gen(http, stack, headers={"X-Goog-Api-Key": expired}), 401)["message"]
    assert openai_error(chat(http, stack, expired), 401)["code"] == "key_expired"

    # 5 s: the key must still be valid for the first call, which a busy machine can start late
    # (the CLI's exit and the edge's first lookup); the sleep then outlasts the expiry.
    soon = stack.key("--expires", "5s")
    assert gen(http, stack, headers={"X-Goog-Api-Key": soon}).status_code == 200
    time.sleep(5.1)
    google_error(gen(http, stack, headers={"X-Goog-Api-Key": soon}), 401)

    k = stack.key()
    assert stack.cli("disable", k).returncode == 0
    # The edge sees the change at its next poll (AUTH_REFRESH_SECONDS, 0.1 s here; the cache's TTL
    # is 30 s): 10 s is a hang guard, not the expectation.
    deadline = time.monotonic() + 10
    while gen(http, stack, headers={"X-Goog-Api-Key": k}).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "disabled" in google_error(gen(http, stack, headers={"X-Goog-Api-Key": k}), 401)["message"]
    assert stack.cli("enable", k).returncode == 0
    deadline = time.monotonic() + 10
    while gen(http, stack, headers={"X-Goog-Api-Key": k}).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gen(http, stack, headers={"X-Goog-Api-Key": k}).status_code == 200


def test_revocation_reaches_a_running_edge_through_the_revision_poll(http, stack, tmp_path):
    """A revoke made by the CLI (another process) reaches a running edge at its next poll of the
    store's revision (AUTH_REFRESH_SECONDS), not when its cache entry expires. This edge caches a
    key for an hour (AUTH_CACHE_TTL), so a refusal in the hang guard's 30 s can only come from the
    poll; no elapsed time is measured against a bound."""
    edge = harness.start_edge(tmp_path / "logs", stack.upstream.addr, tmp_path / "data",
                              {**EDGE_ENV, "LICENSE_DB": stack.db_path, "AUTH_CACHE_TTL": "3600"},
                              name="edge-long-cache")
    try:
        base = f"{edge.url}/gemini_cli"
        k = stack.key()

        def call() -> httpx.Response:
            return http.post(f"{base}/v1beta/models/{MODEL}:generateContent", headers={"X-Goog-Api-Key": k},
                             json=HELLO)

        assert call().status_code == 200  # the key is now in this edge's cache, for an hour
        out = stack.cli("revoke", k)
        assert out.returncode == 0 and "revoked" in out.stdout
        deadline = time.monotonic() + 30  # a hang guard, not the expectation (one poll: 0.1 s)
        while (r := call()).status_code == 200:
            assert time.monotonic() < deadline, "hung: the revoked key was still served from the edge's cache"
            time.sleep(0.02)
        assert "revoked" in google_error(r, 401)["message"]
        r = http.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {k}"},
                      json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert openai_error(r, 401)["code"] == "key_revoked"
    finally:
        edge.stop()


def test_cli_prints_key_once_and_tables(stack):
    out = stack.cli("create", "--name", "cli-check", "--models", "gemini-2.5-*", "--rpm", "7")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    key = lines[0]
    assert key.startswith("gcli-") and " " not in key
    listing = stack.cli("list").stdout
    assert "cli-check" in listing and key not in listing and key[:11] in listing
    shown = stack.cli("show", "cli-check").stdout
    assert "gemini-2.5-*" in shown and "rpm:" in shown and key not in shown
    bad = stack.cli("create", "--name", "x", "--expires", "whenever")
    assert bad.returncode != 0 and "expiry" in bad.stderr


# --- allow-list, quota, rate limits ----------------------------------------------------------

def test_model_allow_list(http, stack):
    k = stack.key("--models", "gemini-2.5-flash*")
    h = {"X-Goog-Api-Key": k}
    assert google_error(gen(http, stack, headers=h), 403)["status"] == "PERMISSION_DENIED"
    assert text_of(gen(http, stack, headers=h, model="gemini-2.5-flash")) == "echo: hi there"
    assert openai_error(chat(http, stack, k), 403)["code"] == "model_not_allowed"
    # Thinking suffixes are checked on the base model.
    r = chat(http, stack, k, {"model": "gemini-2.5-flash-nothinking", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200, r.text
    names = [m["name"] for m in http.get(f"{stack.base}/v1beta/models", headers=h).json()["models"]]
    assert names and all(n.startswith("models/gemini-2.5-flash") for n in names)
    ids = [m["id"] for m in http.get(f"{stack.base}/v1/models", headers={"Authorization": f"Bearer {k}"}).json()["data"]]
    assert "gemini-2.5-flash-thinking" in ids and MODEL not in ids
    google_error(http.get(f"{stack.base}/v1beta/models/{MODEL}", headers=h), 404)


def test_token_quota(http, stack):
    k = stack.key("--quota", "15")
    h = {"X-Goog-Api-Key": k}
    body = {"contents": [{"role": "user", "parts": [{"text": "[len=20] go"}]}]}
    first = gen(http, stack, headers=h, body=body)
    assert first.status_code == 200 and first.json()["usageMetadata"]["totalTokenCount"] > 15
    err = google_error(gen(http, stack, headers=h), 403)
    assert "quota" in err["message"]
    assert openai_error(chat(http, stack, k), 403)["code"] == "insufficient_quota"


def test_requests_per_minute(http, stack):
    k = stack.key("--rpm", "2")
    h = {"X-Goog-Api-Key": k}
    assert gen(http, stack, headers=h).status_code == 200
    assert gen(http, stack, headers=h, method="countTokens").status_code == 200
    r = gen(http, stack, headers=h)
    err = google_error(r, 429)
    assert err["status"] == "RESOURCE_EXHAUSTED" and "requests-per-minute" in err["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    r = chat(http, stack, k)
    assert openai_error(r, 429)["code"] == "rate_limit_exceeded" and 1 <= int(r.headers["Retry-After"]) <= 60
    # Refusals are in the ledger too, one row per request.
    rows = stack.ledger(stack.key_id(k), expect=4)
    assert [(r["api"], r["op"], r["status"]) for r in rows] == [
        ("gemini", "generate", 200), ("gemini", "count", 200), ("gemini", "generate", 429), ("openai", "generate", 429)]


def test_tokens_per_minute(http, stack):
    k = stack.key("--tpm", "10")
    h = {"X-Goog-Api-Key": k}
    body = {"contents": [{"role": "user", "parts": [{"text": "[len=12] go"}]}]}
    assert gen(http, stack, headers=h, body=body).status_code == 200
    r = gen(http, stack, headers=h)
    assert "tokens-per-minute" in google_error(r, 429)["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_backend_429_carries_retry_after(http, stack, key, sim):
    model = "gemini-2.5-flash-lite"  # a model no other test here uses: its cool-down stays local
    sim.add_fault(account=stack.refresh_token, op="generate", kind="429", model=model, retry_delay="4s", times=1)
    r = gen(http, stack, headers={"X-Goog-Api-Key": key}, model=model)
    err = google_error(r, 429)
    assert err["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(r.headers["Retry-After"]) <= 5
    r = chat(http, stack, key, {"model": model, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 5, r.text
    assert r.json()["error"]["type"] == "rate_limit_error"


def test_backend_400_keeps_its_status(http, stack, key, sim):
    sim.add_fault(account=stack.refresh_token, op="generate", kind="400", model=MODEL, times=1)
    err = google_error(gen(http, stack, headers={"X-Goog-Api-Key": key}), 400)
    assert err["status"] == "INVALID_ARGUMENT"


# --- bad input is 4xx, never 5xx ----------------------------------------------------------------

def test_malformed_input(http, stack, key):
    h = {"X-Goog-Api-Key": key, "Content-Type": "application/json"}
    url = f"{stack.base}/v1beta/models/{MODEL}:generateContent"
    google_error(http.post(url, headers=h, content=b'{"contents": [}'), 400)
    google_error(http.post(url, headers=h, content=b'"just a string"'), 400)
    google_error(http.post(url, headers={**h, "Content-Type": "text/plain"}, content=b"{}"), 415)
    big = b'{"contents": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    google_error(http.post(url, headers=h, content=big), 413)
    google_error(http.post(url, headers=h, content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)])), 413)
    google_error(gen(http, stack, headers=h, model="no-such-model"), 404)
    google_error(gen(http, stack, headers=h, method="frobnicate"), 404)
    google_error(gen(http, stack, headers=h, method="streamGenerateContent", params={"alt": "xml"}), 400)
    # Valid JSON the backend rejects: its 400 comes back as a 400.
    google_error(gen(http, stack, headers=h, body={"contents": "not a list"}), 400)

    o = {"Authorization": f"Bearer {key}"}
    curl = f"{stack.base}/v1/chat/completions"
    openai_error(http.post(curl, headers={**o, "Content-Type": "application/json"}, content=b"{oops"), 400)
    assert openai_error(chat(http, stack, key, {"model": MODEL, "messages": 3}), 400)["param"] == "messages"
    err = openai_error(chat(http, stack, key, {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                              "temperature": "hot"}), 400)
    assert err["param"] == "temperature"
    openai_error(chat(http, stack, key, {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}),
                 404)
    openai_error(http.get(f"{stack.base}/v1/chat/completions", headers=o), 405)
    openai_error(http.get(f"{stack.base}/v1/models/no-such-model", headers=o), 404)


@pytest.mark.parametrize("body", [b"null", b"[]", b"{}", b'{"contents": null}', b'{"contents": [{"parts": 5}]}',
                                  b"\x00\x01", b'{"contents": [{"role": "user", "parts": [{"text": 7}]}]}'])
def test_junk_never_5xx(http, stack, key, body):
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for url in (f"{stack.base}/v1beta/models/{MODEL}:generateContent",
                f"{stack.base}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
                f"{stack.base}/v1beta/models/{MODEL}:countTokens",
                f"{stack.base}/v1/chat/completions"):
        r = http.post(url, headers=h, content=body)
        assert r.status_code < 500, (url, body, r.status_code, r.text)


# --- the native API's shapes -----------------------------------------------------------------

def test_model_path_variants(http, stack, key):
    h = {"X-Goog-Api-Key": key}
    assert text_of(gen(http, stack, headers=h, model=f"models/{MODEL}")) == "echo: hi there"
    assert text_of(gen(http, stack, headers=h, version="v1")) == "echo: hi there"
    r = gen(http, stack, headers=h, method="countTokens", version="v1")
    assert r.status_code == 200 and r.json()["totalTokens"] == 2


def test_models_in_both_formats(http, stack, key):
    g = http.get(f"{stack.base}/v1beta/models", headers={"X-Goog-Api-Key": key}).json()["models"]
    pro = next(m for m in g if m["name"] == f"models/{MODEL}")
    assert pro["inputTokenLimit"] > 0 and pro["outputTokenLimit"] > 0 and pro["thinking"] is True
    assert "streamGenerateContent" in pro["supportedGenerationMethods"]
    one = http.get(f"{stack.base}/v1beta/models/{MODEL}", headers={"X-Goog-Api-Key": key}).json()
    assert one == pro
    assert http.get(f"{stack.base}/v1beta/models/models/{MODEL}", params={"key": key}).json() == pro
    google_error(http.get(f"{stack.base}/v1beta/models/nope", params={"key": key}), 404)

    # /v1/models speaks OpenAI to Bearer callers and Google to x-goog-api-key callers.
    o = http.get(f"{stack.base}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    ids = {m["id"] for m in o["data"]}
    assert o["object"] == "list"
    assert {MODEL, f"{MODEL}-thinking", f"{MODEL}-nothinking", f"{MODEL}-maxthinking"} <= ids
    assert http.get(f"{stack.base}/v1/models", headers={"X-Goog-Api-Key": key}).json()["models"][0]["name"]
    m = http.get(f"{stack.base}/v1/models/{MODEL}-maxthinking", headers={"Authorization": f"Bearer {key}"}).json()
    assert m == {"id": f"{MODEL}-maxthinking", "object": "model", "created": m["created"], "owned_by": "google"}


def test_seed_native_curl_examples(stack, key):
    """The two native examples of the seed document, run with curl exactly as written."""
    base = stack.base
    unary = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{base}/v1beta/models/gemini-2.5-pro:generateContent",
         "--header", "Content-Type: application/json", "--header", f"X-Goog-Api-Key: {key}",
         "--data", '{"contents":[{"role":"user","parts":[{"text":"你是什么模型?"}]}]}'],
        capture_output=True, timeout=30)
    body = orjson.loads(unary.stdout)
    assert body["candidates"][0]["content"]["parts"][0]["text"] == "echo: 你是什么模型?"
    stream = subprocess.run(
        ["curl", "-sS", "-N", "-X", "POST", f"{base}/v1beta/models/gemini-2.5-pro:streamGenerateContent",
         "--header", "Content-Type: application/json", "--header", f"X-Goog-Api-Key: {key}",
         "--data", '{"contents":[{"role":"user","parts":[{"text":"你是什么模型?"}]}]}'],
        capture_output=True, timeout=30)
    chunks = orjson.loads(stream.stdout)  # one JSON array, as Google sends without alt=sse
    assert isinstance(chunks, list) and len(chunks) >= 2
    text = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == "echo: 你是什么模型?"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
