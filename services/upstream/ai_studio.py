"""The AI Studio backend (Gemini API, backends.md §1): plain Gemini bodies, no envelope.

`{AI_STUDIO_ENDPOINT}/v1beta/models/{m}:generateContent | :streamGenerateContent?alt=sse |
:countTokens | :batchEmbedContents`, key in `x-goog-api-key`. Fields the Gemini API refuses
(Vertex-only: labels, routingConfig, audioTimestamp, modelArmorConfig) are removed; a body
without them is sent as the bytes that came. A key the API calls invalid, leaked, suspended
or whose project lacks the API is DEAD; a daily quota 429 rests until midnight Pacific.
"""
from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson

from .backends import (Backend, ChunkStream, Embeddings, Http, PlainEventStream, answer_id, json_answer, parse_object,
                       plain_chunk)
from .code_assist import Chunk, parse_backend_error
from .errors import BackendError, InvalidRequest

if TYPE_CHECKING:
    from .pool import Entry

_REFUSED_TOP = ("labels", "modelArmorConfig")
_REFUSED_CONFIG = ("routingConfig", "audioTimestamp")
_MARKERS = tuple(f'"{name}"'.encode() for name in (*_REFUSED_TOP, *_REFUSED_CONFIG))
_DEAD_REASONS = {
    "API_KEY_INVALID": "the API key is not valid",
    "CONSUMER_SUSPENDED": "the key's project is suspended",
    "SERVICE_DISABLED": "the Generative Language API is not enabled in the key's project",
    "API_KEY_SERVICE_BLOCKED": "the key is not allowed to call the Generative Language API",
}
_PACIFIC = ZoneInfo("America/Los_Angeles")
# batchEmbedContents takes at most 100 requests ("at most 100 requests can be in one batch");
# larger batches (OpenAI clients send up to 2048 inputs) go as several calls, a few at a time.
EMBED_BATCH = 100
EMBED_CONCURRENCY = 4


def strip_refused(body: bytes | memoryview) -> bytes | memoryview:
    """The body without the fields the Gemini API refuses (the same bytes when it has none)."""
    raw = body if isinstance(body, bytes) else bytes(body)
    if not any(marker in raw for marker in _MARKERS):
        return body
    value = parse_object(raw)
    for name in _REFUSED_TOP:
        value.pop(name, None)
    config = value.get("generationConfig")
    if isinstance(config, dict):
        for name in _REFUSED_CONFIG:
            config.pop(name, None)
    return orjson.dumps(value)


def count_body(model: str, body: bytes) -> bytes:
    """A countTokens body the Gemini API takes: `{contents}` alone, or the full request in
    `generateContentRequest` (the two are exclusive)."""
    value = parse_object(body, "CountTokensRequest") if body.strip() else {}
    inner = value.get("generateContentRequest")
    if isinstance(inner, dict):
        inner = dict(inner, model=f"models/{model}")
        return orjson.dumps({"generateContentRequest": inner})
    if not isinstance(value.get("contents"), list):
        raise InvalidRequest("countTokens needs `contents` (or `generateContentRequest.contents`)")
    if set(value) == {"contents"}:
        return orjson.dumps(value)
    return orjson.dumps({"generateContentRequest": {**value, "model": f"models/{model}"}})


def seconds_to_pacific_midnight(now: dt.datetime | None = None) -> float:
    now = now or dt.datetime.now(dt.timezone.utc)
    local = now.astimezone(_PACIFIC)
    midnight = (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(0.0, (midnight - local).total_seconds())


def daily_quota(err: BackendError) -> bool:
    for detail in err.details:
        if str(detail.get("@type", "")).endswith("google.rpc.QuotaFailure"):
            for violation in detail.get("violations") or []:
                if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                    return True
    return False


def parse_error(status: int, data: bytes) -> BackendError:
    err = parse_backend_error(status, data)
    if status == 429 and daily_quota(err):
        err.retry_delay_s = seconds_to_pacific_midnight()
    return err


class AIStudioBackend(Backend):
    kind = "ai-studio-key"
    has_embeddings = True

    def __init__(self, http: Http, endpoint: str) -> None:
        self._http = http
        self._base = f"{endpoint.rstrip('/')}/v1beta/models/"

    def _url(self, model: str, method: str) -> str:
        return f"{self._base}{quote(model, safe='.-_')}:{method}"

    @staticmethod
    def _headers(auth: Mapping[str, str]) -> dict[str, str]:
        return {"Content-Type": "application/json", **auth}

    async def _post(self, entry: "Entry", auth: Mapping[str, str], url: str, body: bytes) -> Any:
        status, data = await self._http.request("POST", url, headers=self._headers(auth), body=body,
                                                proxy=entry.spec.proxy)
        if status != 200:
            raise parse_error(status, data)
        return json_answer(status, data), data

    async def generate(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes | memoryview,
                       request_id: str) -> Chunk:
        value, data = await self._post(entry, headers, self._url(model, "generateContent"),
                                       bytes(strip_refused(body)))
        return plain_chunk(data, value)

    async def open_stream(self, entry: "Entry", headers: Mapping[str, str], model: str,
                          body: bytes | memoryview, request_id: str) -> ChunkStream:
        try:
            resp = await self._http.open_stream(self._url(model, "streamGenerateContent") + "?alt=sse",
                                                headers=self._headers(headers), body=bytes(strip_refused(body)),
                                                proxy=entry.spec.proxy)
        except BackendError as err:
            if err.http_status == 429 and daily_quota(err):
                err.retry_delay_s = seconds_to_pacific_midnight()
            raise
        return PlainEventStream(resp)

    async def count_tokens(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes) -> Any:
        value, _ = await self._post(entry, headers, self._url(model, "countTokens"), count_body(model, body))
        return value

    async def embed(self, entry: "Entry", headers: Mapping[str, str], model: str,
                    requests: list[dict[str, Any]]) -> Embeddings:
        if len(requests) <= EMBED_BATCH:
            return await self._embed_batch(entry, headers, model, requests)
        gate = asyncio.Semaphore(EMBED_CONCURRENCY)

        async def bounded(group: list[dict[str, Any]]) -> Embeddings:
            async with gate:
                return await self._embed_batch(entry, headers, model, group)

        groups = [requests[i:i + EMBED_BATCH] for i in range(0, len(requests), EMBED_BATCH)]
        return Embeddings.joined(list(await asyncio.gather(*(bounded(g) for g in groups))))

    async def _embed_batch(self, entry: "Entry", headers: Mapping[str, str], model: str,
                           requests: list[dict[str, Any]]) -> Embeddings:
        name = f"models/{model}"
        body = orjson.dumps({"requests": [dict(r, model=name) for r in requests]})
        value, _ = await self._post(entry, headers, self._url(model, "batchEmbedContents"), body)
        embeddings = value.get("embeddings") if isinstance(value, dict) else None
        if not isinstance(embeddings, list) or len(embeddings) != len(requests):
            raise parse_backend_error(502, b'{"error":{"code":502,"message":"embeddings answer has the wrong shape"}}')
        usage = value.get("usageMetadata") if isinstance(value, dict) else None
        tokens = usage.get("promptTokenCount", 0) if isinstance(usage, dict) else 0
        return Embeddings([{"values": e.get("values", []) if isinstance(e, dict) else []} for e in embeddings],
                          int(tokens) if isinstance(tokens, int) else 0, answer_id(value))

    def account_problem(self, err: BackendError) -> str | None:
        reason = err.reason.upper()
        if err.http_status in (400, 401, 403) and reason in _DEAD_REASONS:
            return f"AI Studio: {_DEAD_REASONS[reason]} ({reason}); replace the key"
        message = err.message.lower()
        if err.http_status == 403 and "leaked" in message:
            return "AI Studio: the API key was reported as leaked; create a new key and replace it"
        if err.http_status == 400 and ("api key not valid" in message or "api key not found" in message):
            return "AI Studio: the API key is not valid (API_KEY_INVALID); replace the key"
        if err.http_status == 403 and ("has not been used in project" in message or "suspended" in message):
            return f"AI Studio refused the key's project: {err.message}"
        return None
