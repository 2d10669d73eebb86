"""Embeddings routes of a real edge process against a small in-process Upstream servicer.

Route-level tests only: the servicer stands in for the upstream so that the edge's side can be
checked on its own — exact Embed request bodies, credential kinds in the ledger, thinking ranges
taken from ListModels, answers off the contract. The same routes through the real stack
(Envoy → edge → upstream → simulator) are in test_embeddings_stack.py.
"""
from __future__ import annotations

import asyncio
import base64
import math
import struct
import threading
from concurrent import futures
from pathlib import Path
from typing import Iterator

import grpc
import httpx
import openai
import orjson
import pytest
from google import genai
from google.genai import types
from google.rpc import error_details_pb2, status_pb2

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc
from services.edge.store import NewKey, generate_key, hash_key, key_prefix, open_store
from tests import harness

EMBED = "gemini-embedding-001"
CHAT = "gemini-2.5-pro"


def vector(text: str, dims: int) -> list[float]:
    """A deterministic, text-dependent vector (not unit length)."""
    return [float((len(text) * (i + 3)) % 11 - 5) for i in range(dims)]


class FakeUpstream(pb_grpc.UpstreamServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.embeds: list[tuple[str, dict, str]] = []
        self.generates: list[tuple[str, dict]] = []

    def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[
            # A range the upstream's built-in table does not have: the edge must follow this one.
            pb.Model(id=CHAT, display_name="Gemini 2.5 Pro", input_token_limit=1048576, output_token_limit=65536,
                     thinking=pb.ThinkingRange(min_budget=64, max_budget=65000)),
            pb.Model(id=EMBED, display_name="Gemini Embedding 001", input_token_limit=2048, output_token_limit=1,
                     embedding=True),
        ])

    def Embed(self, request, context):
        body = orjson.loads(request.body.data)
        with self.lock:
            self.embeds.append((request.model, body, request.caller))
        if request.model == "text-embedding-gone":
            context.abort(grpc.StatusCode.NOT_FOUND, "model 'text-embedding-gone' is not served by any pool member")
        if request.model == "text-embedding-nomember":
            # What the upstream answers when its pool has no member with embeddings.
            info = error_details_pb2.ErrorInfo(reason="NO_EMBEDDINGS_MEMBER", domain="gemini-cli-gateway")
            status = status_pb2.Status(code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
                                       message="no pool member has embeddings")
            status.details.add().Pack(info)
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no pool member has embeddings")
        out = []
        tokens = 0
        for r in body["requests"]:
            text = r["content"]["parts"][0]["text"]
            tokens += len(text.split())
            out.append({"values": vector(text, r.get("outputDimensionality", 4))})
        if request.model == "gemini-embedding-broken":
            out = out[1:]  # one embedding short
        resp = pb.EmbedResponse(prompt_tokens=tokens, credential_id="studio-1", credential_kind="ai-studio-key")
        resp.body.content_type = "application/json"
        resp.body.data = orjson.dumps({"embeddings": out})
        return resp

    def Generate(self, request, context):
        body = orjson.loads(request.body.data)
        with self.lock:
            self.generates.append((request.model, body))
        msg = pb.GenerateResponse(credential_id="vx-7", credential_kind="vertex-ai",
                                  usage=pb.Usage(prompt_tokens=3, candidates_tokens=2, total_tokens=5))
        msg.chunk.data = orjson.dumps({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                                                       "finishReason": "STOP"}],
                                       "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2,
                                                         "totalTokenCount": 5}})
        yield msg

    def GenerateUnary(self, request, context):
        # Non-streaming answers come through the unary RPC (since GenerateUnary), the same message.
        return next(self.Generate(request, context))


class Rig:
    def __init__(self, fake: FakeUpstream, edge: harness.Proc) -> None:
        self.fake = fake
        self.edge = edge
        self.ids: dict[str, int] = {}

    @property
    def base(self) -> str:
        return f"{self.edge.url}/gemini_cli"

    def key(self, *, models: tuple[str, ...] = (), rpm: int | None = None, quota: int | None = None) -> str:
        """A new key, written to the edge's store as `keys create` does (without a process start)."""
        env = self.edge.extra["env"]

        async def create() -> str:
            store = open_store(env["LICENSE_DB"])
            try:
                key = generate_key()
                rec = await store.create_key(hash_key(env["LICENSE_SECRET"].encode(), key), key_prefix(key),
                                             NewKey(name=f"emb-{key[-6:]}", models=models, rpm=rpm,
                                                                    quota=quota))
            finally:
                await store.close()
            self.ids[key] = rec.id
            return key

        return asyncio.run(create())

    def ledger(self, key: str, expect: int) -> list[dict]:
        return harness.usage_rows(self.edge.extra["env"]["LICENSE_DB"], self.ids[key], expect=expect, timeout=10)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    fake = FakeUpstream()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_UpstreamServicer_to_server(fake, server)
    port = server.add_insecure_port(f"{harness.LOOPBACK}:0")
    server.start()
    base: Path = tmp_path_factory.mktemp("embed-routes")
    edge = harness.start_edge(base / "logs", f"{harness.LOOPBACK}:{port}", base / "data",
                              {"LEDGER_FLUSH_SECONDS": "0.05", "AUTH_REFRESH_SECONDS": "0.1"})
    try:
        yield Rig(fake, edge)
    finally:
        edge.stop()
        server.stop(grace=None)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as c:
        yield c


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    return err


def google_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and isinstance(err["status"], str) and err["message"], err
    return err


# --- OpenAI -------------------------------------------------------------------------------------

def test_openai_embeddings_float(rig: Rig, http: httpx.Client) -> None:
    key = rig.key()
    r = http.post(f"{rig.base}/v1/embeddings", headers=bearer(key),
                  json={"model": EMBED, "input": ["alpha beta", "gamma"], "encoding_format": "float", "user": "u1"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector("alpha beta", 4)},
                 {"object": "embedding", "index": 1, "embedding": vector("gamma", 4)}],
        "model": EMBED,
        "usage": {"prompt_tokens": 3, "total_tokens": 3},
    }
    model, body, caller = rig.fake.embeds[-1]
    assert model == EMBED and caller.startswith("emb-")
    assert body == {"requests": [{"model": f"models/{EMBED}", "content": {"parts": [{"text": "alpha beta"}]}},
                                 {"model": f"models/{EMBED}", "content": {"parts": [{"text": "gamma"}]}}]}
    (row,) = rig.ledger(key, 1)
    assert (row["api"], row["op"], row["model"], row["status"]) == ("openai", "embed", EMBED, 200)
    assert (row["prompt_tokens"], row["total_tokens"]) == (3, 3)
    assert (row["credential_kind"], row["credential_id"]) == ("ai-studio-key", "studio-1")


def test_openai_sdk_base64_and_dimensions(rig: Rig) -> None:
    """The official SDK asks for base64 by default and decodes float32 little-endian bytes itself."""
    client = openai.OpenAI(api_key=rig.key(), base_url=f"{rig.base}/v1", max_retries=0, timeout=30)
    out = client.embeddings.create(model=EMBED, input="one two three")
    assert rig.fake.embeds[-1][1]["requests"][0]["content"]["parts"][0]["text"] == "one two three"
    assert out.data[0].embedding == pytest.approx(vector("one two three", 4))
    assert out.usage.prompt_tokens == 3 and out.model == EMBED

    out = client.embeddings.create(model=EMBED, input=["a b", "c"], dimensions=6)
    assert rig.fake.embeds[-1][1]["requests"][0]["outputDimensionality"] == 6
    for item, text in zip(out.data, ["a b", "c"]):
        raw = vector(text, 6)
        norm = math.sqrt(sum(v * v for v in raw))
        assert item.embedding == pytest.approx([v / norm for v in raw], rel=1e-6)  # shortened: unit length


def test_base64_on_the_wire(rig: Rig, http: httpx.Client) -> None:
    r = http.post(f"{rig.base}/v1/embeddings", headers=bearer(rig.key()),
                  json={"model": EMBED, "input": "xy", "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    assert list(struct.unpack("<4f", raw)) == vector("xy", 4)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": EMBED, "input": [1917, 374]}, "input", "unsupported_input"),
        ({"model": EMBED, "input": [[1917], [374]]}, "input", "unsupported_input"),
        ({"model": EMBED, "input": ""}, "input", None),
        ({"model": EMBED}, "input", None),
        ({"input": "x"}, "model", None),
        ({"model": EMBED, "input": "x", "encoding_format": "int8"}, "encoding_format", None),
        ({"model": EMBED, "input": "x", "dimensions": -1}, "dimensions", None),
        ({"model": f"{EMBED}-thinking", "input": "x"}, "model", "invalid_model"),
        ({"model": "bad/model", "input": "x"}, "model", "invalid_model"),
    ],
)
def test_openai_bad_requests(rig: Rig, http: httpx.Client, body, param, code) -> None:
    key = rig.key()
    calls = len(rig.fake.embeds)
    err = openai_error(http.post(f"{rig.base}/v1/embeddings", headers=bearer(key), json=body), 400)
    assert err["param"] == param and err["type"] == "invalid_request_error"
    if code:
        assert err["code"] == code
    assert len(rig.fake.embeds) == calls  # refused at the edge
    assert rig.ledger(key, 1)[0]["status"] == 400


def test_openai_not_json(rig: Rig, http: httpx.Client) -> None:
    r = http.post(f"{rig.base}/v1/embeddings", headers={**bearer(rig.key()), "content-type": "application/json"},
                  content=b"{nope")
    openai_error(r, 400)


def test_openai_needs_a_key_and_an_allowed_model(rig: Rig, http: httpx.Client) -> None:
    body = {"model": EMBED, "input": "x"}
    openai_error(http.post(f"{rig.base}/v1/embeddings", json=body), 401)
    openai_error(http.post(f"{rig.base}/v1/embeddings", headers=bearer("gcli-not-a-key"), json=body), 401)
    limited = rig.key(models=("gemini-2.5-*",))
    err = openai_error(http.post(f"{rig.base}/v1/embeddings", headers=bearer(limited), json=body), 403)
    assert err["code"] == "model_not_allowed"
    assert rig.ledger(limited, 1)[0]["status"] == 403


def test_openai_rpm_limit(rig: Rig, http: httpx.Client) -> None:
    key = rig.key(rpm=1)
    body = {"model": EMBED, "input": "x"}
    assert http.post(f"{rig.base}/v1/embeddings", headers=bearer(key), json=body).status_code == 200
    r = http.post(f"{rig.base}/v1/embeddings", headers=bearer(key), json=body)
    openai_error(r, 429)
    assert int(r.headers["retry-after"]) >= 1


def test_embeddings_count_against_the_token_quota(rig: Rig, http: httpx.Client) -> None:
    key = rig.key(quota=2)
    body = {"model": EMBED, "input": "three input tokens"}
    r = http.post(f"{rig.base}/v1/embeddings", headers=bearer(key), json=body)
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3
    err = openai_error(http.post(f"{rig.base}/v1/embeddings", headers=bearer(key), json=body), 403)
    assert err["code"] == "insufficient_quota"
    assert [row["total_tokens"] for row in rig.ledger(key, 2)] == [3, 0]


def test_openai_model_no_member_serves(rig: Rig, http: httpx.Client) -> None:
    key = rig.key()
    r = http.post(f"{rig.base}/v1/embeddings", headers=bearer(key), json={"model": "text-embedding-gone", "input": "x"})
    err = openai_error(r, 404)
    assert err["code"] == "model_not_found" and "text-embedding-gone" in err["message"]
    row = rig.ledger(key, 1)[0]
    assert (row["status"], row["model"], row["credential_kind"]) == (404, "text-embedding-gone", "")


def test_no_member_with_embeddings_is_a_404(rig: Rig, http: httpx.Client) -> None:
    key = rig.key()
    err = openai_error(http.post(f"{rig.base}/v1/embeddings", headers=bearer(key),
                                 json={"model": "text-embedding-nomember", "input": "x"}), 404)
    assert err["code"] == "model_not_found" and "AI Studio or Vertex AI" in err["message"]
    err = google_error(http.post(f"{rig.base}/v1beta/models/text-embedding-nomember:batchEmbedContents",
                                 headers={"x-goog-api-key": key},
                                 json={"requests": [{"content": {"parts": [{"text": "x"}]}}]}), 404)
    assert err["status"] == "NOT_FOUND"


def test_answer_off_contract_is_a_502(rig: Rig, http: httpx.Client) -> None:
    key = rig.key()
    r = http.post(f"{rig.base}/v1/embeddings", headers=bearer(key), json={"model": "gemini-embedding-broken", "input": "x"})
    err = openai_error(r, 502)
    assert "embeddings" in err["message"]
    assert rig.ledger(key, 1)[0]["status"] == 502
    r = http.post(f"{rig.base}/v1beta/models/gemini-embedding-broken:embedContent", headers={"x-goog-api-key": key},
                  json={"content": {"parts": [{"text": "x"}]}})
    google_error(r, 502)


# --- Gemini-native ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_native_embed_content(rig: Rig, http: httpx.Client, version: str) -> None:
    key = rig.key()
    r = http.post(f"{rig.base}/{version}/models/{EMBED}:embedContent", headers={"x-goog-api-key": key},
                  json={"content": {"parts": [{"text": "hello there"}]}, "taskType": "RETRIEVAL_QUERY",
                        "outputDimensionality": 3})
    assert r.status_code == 200, r.text
    assert r.json() == {"embedding": {"values": vector("hello there", 3)}}  # as the backend gave it
    assert rig.fake.embeds[-1][1] == {"requests": [{"model": f"models/{EMBED}", "taskType": "RETRIEVAL_QUERY",
                                                    "content": {"parts": [{"text": "hello there"}]},
                                                    "outputDimensionality": 3}]}
    row = rig.ledger(key, 1)[0]
    assert (row["api"], row["op"], row["status"], row["credential_kind"]) == ("gemini", "embed", 200, "ai-studio-key")


def test_native_batch_embed_contents(rig: Rig, http: httpx.Client) -> None:
    r = http.post(f"{rig.base}/v1beta/models/{EMBED}:batchEmbedContents", params={"key": rig.key()},
                  json={"requests": [{"model": f"models/{EMBED}", "content": {"parts": [{"text": "a"}]}},
                                     {"content": {"parts": [{"text": "bb"}]}}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"embeddings": [{"values": vector("a", 4)}, {"values": vector("bb", 4)}]}


def test_genai_sdk_embed_content(rig: Rig) -> None:
    client = genai.Client(api_key=rig.key(), http_options=types.HttpOptions(
        base_url=rig.base, api_version="v1beta", timeout=30_000))
    out = client.models.embed_content(model=EMBED, contents=["first text", "second"],
                                      config=types.EmbedContentConfig(output_dimensionality=5, task_type="CLUSTERING"))
    assert [e.values for e in out.embeddings] == [vector("first text", 5), vector("second", 5)]
    sent = rig.fake.embeds[-1][1]["requests"]
    assert [r["taskType"] for r in sent] == ["CLUSTERING", "CLUSTERING"]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("embedContent", {"content": "just text"}),
        ("embedContent", {}),
        ("batchEmbedContents", {"requests": []}),
        ("batchEmbedContents", {"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}),
    ],
)
def test_native_bad_requests_in_google_shape(rig: Rig, http: httpx.Client, method: str, body: dict) -> None:
    r = http.post(f"{rig.base}/v1beta/models/{EMBED}:{method}", headers={"x-goog-api-key": rig.key()}, json=body)
    assert google_error(r, 400)["status"] == "INVALID_ARGUMENT"


def test_native_errors_in_google_shape(rig: Rig, http: httpx.Client) -> None:
    body = {"content": {"parts": [{"text": "x"}]}}
    google_error(http.post(f"{rig.base}/v1beta/models/{EMBED}:embedContent", json=body), 401)
    limited = rig.key(models=("gemini-2.5-*",))
    google_error(http.post(f"{rig.base}/v1beta/models/{EMBED}:embedContent", headers={"x-goog-api-key": limited},
                           json=body), 403)
    err = google_error(http.post(f"{rig.base}/v1beta/models/text-embedding-gone:embedContent",
                                 headers={"x-goog-api-key": rig.key()}, json=body), 404)
    assert err["status"] == "NOT_FOUND"


# --- model lists ----------------------------------------------------------------------------------

def test_model_lists_show_embedding_models(rig: Rig, http: httpx.Client) -> None:
    key = rig.key()
    google = {m["name"]: m for m in http.get(f"{rig.base}/v1beta/models", headers={"x-goog-api-key": key}).json()["models"]}
    assert google[f"models/{EMBED}"]["supportedGenerationMethods"] == ["embedContent", "batchEmbedContents"]
    assert "embedContent" not in google[f"models/{CHAT}"]["supportedGenerationMethods"]
    ids = [m["id"] for m in http.get(f"{rig.base}/v1/models", headers=bearer(key)).json()["data"]]
    assert EMBED in ids and f"{EMBED}-thinking" not in ids and f"{CHAT}-thinking" in ids


# --- credential kinds and thinking ranges on generation ------------------------------------------

def test_generation_ledger_records_the_credential_kind(rig: Rig, http: httpx.Client) -> None:
    key = rig.key()
    r = http.post(f"{rig.base}/v1beta/models/{CHAT}:generateContent", headers={"x-goog-api-key": key},
                  json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 200, r.text
    r = http.post(f"{rig.base}/v1beta/models/{CHAT}:streamGenerateContent", params={"alt": "sse"},
                  headers={"x-goog-api-key": key}, json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert r.status_code == 200 and "data: " in r.text
    r = http.post(f"{rig.base}/v1/chat/completions", headers=bearer(key),
                  json={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    with http.stream("POST", f"{rig.base}/v1/chat/completions", headers=bearer(key),
                     json={"model": CHAT, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as s:
        assert s.status_code == 200 and "[DONE]" in s.read().decode()
    rows = rig.ledger(key, 4)
    assert [(r["op"], r["credential_kind"], r["credential_id"]) for r in rows] == [
        ("generate", "vertex-ai", "vx-7"), ("stream", "vertex-ai", "vx-7"),
        ("generate", "vertex-ai", "vx-7"), ("stream", "vertex-ai", "vx-7")]


def test_thinking_range_comes_from_list_models(rig: Rig, http: httpx.Client) -> None:
    """The fake lists gemini-2.5-pro with 64–65000, not the 128–32768 of Google's table: the edge
    clamps with what ListModels said."""
    key = rig.key()
    for model, budget in [(f"{CHAT}-maxthinking", 65000), (f"{CHAT}-nothinking", 64)]:
        r = http.post(f"{rig.base}/v1/chat/completions", headers=bearer(key),
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        sent_model, body = rig.fake.generates[-1]
        assert sent_model == CHAT
        assert body["generationConfig"]["thinkingConfig"]["thinkingBudget"] == budget
