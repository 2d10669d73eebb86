"""The Vertex AI backend (backends.md §2): plain Gemini bodies on Vertex's URLs.

Host: VERTEX_ENDPOINT as-is when set; else `aiplatform.googleapis.com` for location
`global` (and express mode), `aiplatform.{us|eu}.rep.googleapis.com` for the multi-regions,
`{loc}-aiplatform.googleapis.com` otherwise. Path:
`/v1/projects/{P}/locations/{L}/publishers/google/models/{M}:{method}`, or for express keys
`/v1/publishers/google/models/{M}:{method}`.

Vertex requires `contents[].role`: a missing one becomes "user". Its pay-as-you-go 429
carries no retry hint, so the pool backs off exponentially from `backoff_start`.
Embeddings: `:predict` for gemini-embedding-001 and the text-embedding models (one
instance per call for gemini-embedding-001), `:embedContent` for the others; every answer
is normalised to `[{"values": [...]}]`.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import quote

import orjson

from .backends import (Backend, ChunkStream, Embeddings, Http, PlainEventStream, answer_id, json_answer, parse_object,
                       plain_chunk, texts_of)
from .code_assist import Chunk, parse_backend_error
from .errors import BackendError, InvalidRequest

if TYPE_CHECKING:
    from .pool import Entry

PREDICT_MODELS = ("gemini-embedding-001", "text-embedding-", "text-multilingual-embedding-")
PREDICT_BATCH = 250
EMBED_CONCURRENCY = 8
_MULTI_REGIONS = {"us", "eu"}


def host(location: str, endpoint: str = "") -> str:
    if endpoint:
        return endpoint.rstrip("/")
    if not location or location == "global":
        return "https://aiplatform.googleapis.com"
    if location in _MULTI_REGIONS:
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def model_path(model: str) -> str:
    if "/" in model:
        publisher, _, name = model.partition("/")
        return f"publishers/{quote(publisher, safe='.-_')}/models/{quote(name, safe='.-_')}"
    return f"publishers/google/models/{quote(model, safe='.-_')}"


def with_roles(value: dict[str, Any]) -> bool:
    """Give every content without a role the role "user"; True when something changed."""
    changed = False
    contents = value.get("contents")
    if isinstance(contents, list):
        for content in contents:
            if isinstance(content, dict) and not content.get("role"):
                content["role"] = "user"
                changed = True
    return changed


def generate_body(body: bytes | memoryview) -> bytes:
    raw = body if isinstance(body, bytes) else bytes(body)
    value = parse_object(raw)
    return orjson.dumps(value) if with_roles(value) else raw


def count_body(body: bytes) -> bytes:
    value = parse_object(body, "CountTokensRequest") if body.strip() else {}
    inner = value.get("generateContentRequest")
    if isinstance(inner, dict):
        value = {k: v for k, v in inner.items() if k != "model"}
    if not isinstance(value.get("contents"), list):
        raise InvalidRequest("countTokens needs `contents` (or `generateContentRequest.contents`)")
    with_roles(value)
    return orjson.dumps(value)


def uses_predict(model: str) -> bool:
    return model.startswith(PREDICT_MODELS)


def predict_instance(req: dict[str, Any]) -> dict[str, Any]:
    instance: dict[str, Any] = {"content": texts_of(req["content"])}
    if req.get("taskType"):
        instance["task_type"] = req["taskType"]
    if req.get("title"):
        instance["title"] = req["title"]
    return instance


class VertexBackend(Backend):
    kind = "vertex-ai"
    backoff_start = 1.0
    has_embeddings = True

    def __init__(self, http: Http, endpoint: str = "") -> None:
        self._http = http
        self._endpoint = endpoint

    def url(self, entry: "Entry", model: str, method: str) -> str:
        spec = entry.spec
        if entry.cred.auth == "express-key":
            return f"{host('global', self._endpoint)}/v1/{model_path(model)}:{method}"
        project = entry.cred.project
        if not project:
            raise InvalidRequest("Vertex AI member has no project: set `project` in the pool file or the key "
                                 "file's project_id")
        location = spec.location or "global"
        return (f"{host(location, self._endpoint)}/v1/projects/{quote(project, safe='-_.')}/locations/"
                f"{quote(location, safe='-_')}/{model_path(model)}:{method}")

    async def _post(self, entry: "Entry", auth: Mapping[str, str], url: str, body: bytes) -> tuple[Any, bytes]:
        status, data = await self._http.request("POST", url, headers={"Content-Type": "application/json", **auth},
                                                body=body, proxy=entry.spec.proxy)
        return json_answer(status, data), data

    async def generate(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes | memoryview,
                       request_id: str) -> Chunk:
        value, data = await self._post(entry, headers, self.url(entry, model, "generateContent"),
                                       generate_body(body))
        return plain_chunk(data, value)

    async def open_stream(self, entry: "Entry", headers: Mapping[str, str], model: str,
                          body: bytes | memoryview, request_id: str) -> ChunkStream:
        resp = await self._http.open_stream(self.url(entry, model, "streamGenerateContent") + "?alt=sse",
                                            headers={"Content-Type": "application/json", **headers},
                                            body=generate_body(body), proxy=entry.spec.proxy)
        return PlainEventStream(resp)

    async def count_tokens(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes) -> Any:
        value, _ = await self._post(entry, headers, self.url(entry, model, "countTokens"), count_body(body))
        return value

    async def embed(self, entry: "Entry", headers: Mapping[str, str], model: str,
                    requests: list[dict[str, Any]]) -> Embeddings:
        gate = asyncio.Semaphore(EMBED_CONCURRENCY)

        async def bounded(coro: Any) -> Any:
            async with gate:
                return await coro

        if uses_predict(model):
            dims = {r.get("outputDimensionality") for r in requests}
            size = 1 if model == "gemini-embedding-001" or len(dims) > 1 else PREDICT_BATCH
            groups = [requests[i:i + size] for i in range(0, len(requests), size)]
            results = await asyncio.gather(*(bounded(self._predict(entry, headers, model, g)) for g in groups))
        else:
            results = await asyncio.gather(*(bounded(self._embed_one(entry, headers, model, r)) for r in requests))
        return Embeddings.joined(list(results))

    async def _predict(self, entry: "Entry", headers: Mapping[str, str], model: str,
                       group: list[dict[str, Any]]) -> Embeddings:
        body: dict[str, Any] = {"instances": [predict_instance(r) for r in group]}
        dims = group[0].get("outputDimensionality")
        if isinstance(dims, int):
            body["parameters"] = {"outputDimensionality": dims}
        value, _ = await self._post(entry, headers, self.url(entry, model, "predict"), orjson.dumps(body))
        predictions = value.get("predictions") if isinstance(value, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(group):
            raise _shape_error()
        vectors, tokens = [], 0
        for p in predictions:
            emb = p.get("embeddings") if isinstance(p, dict) else None
            emb = emb if isinstance(emb, dict) else {}
            vectors.append({"values": emb.get("values", [])})
            stats = emb.get("statistics")
            if isinstance(stats, dict) and isinstance(stats.get("token_count"), (int, float)):
                tokens += int(stats["token_count"])
        return Embeddings(vectors, tokens, answer_id(value))

    async def _embed_one(self, entry: "Entry", headers: Mapping[str, str], model: str,
                         req: dict[str, Any]) -> Embeddings:
        config = {k: req[k] for k in ("taskType", "title", "outputDimensionality") if req.get(k) is not None}
        body: dict[str, Any] = {"content": req["content"]}
        if config:
            body["embedContentConfig"] = config
        value, _ = await self._post(entry, headers, self.url(entry, model, "embedContent"), orjson.dumps(body))
        emb = value.get("embedding") if isinstance(value, dict) else None
        if not isinstance(emb, dict):
            raise _shape_error()
        usage = value.get("usageMetadata")
        tokens = usage.get("promptTokenCount", 0) if isinstance(usage, dict) else 0
        return Embeddings([{"values": emb.get("values", [])}], int(tokens) if isinstance(tokens, int) else 0,
                          answer_id(value))

    def account_problem(self, err: BackendError) -> str | None:
        reason = err.reason.upper()
        message = err.message.lower()
        if err.http_status == 403 and (reason == "SERVICE_DISABLED" or "has not been used in project" in message):
            return "Vertex AI API (aiplatform.googleapis.com) is not enabled in the member's project; enable it"
        if err.http_status == 403 and reason == "IAM_PERMISSION_DENIED":
            return ("the principal lacks permission aiplatform.endpoints.predict in the member's project; "
                    "grant it roles/aiplatform.user")
        if err.http_status in (400, 401) and reason == "API_KEY_INVALID":
            return "Vertex AI express key is not valid (API_KEY_INVALID); replace the key"
        return None


def _shape_error() -> BackendError:
    return parse_backend_error(502, b'{"error":{"code":502,"message":"embeddings answer has the wrong shape"}}')
