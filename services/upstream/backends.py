"""What every backend client offers the pool, and the HTTP plumbing AI Studio and Vertex share.

A `Backend` turns the pool's operations (generate, open_stream, count_tokens, embed) into
its own HTTP calls and parses its own error bodies into `BackendError`; it also says which
errors mean "this credential is unusable" (`account_problem`) and how long a 429 without a
retry hint rests (`backoff_start`). Member-specific facts (project, location, proxy) come
from the pool entry passed to every call.

`Http` is the one place AI Studio and Vertex calls go out: through the process's transport
(transport.py: TLS verified, answers capped, a POST never re-sent), with the member's HTTP
proxy per call and the whole-call deadline.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, NamedTuple

import orjson

from .backend_stream import MAX_ERROR_BODY
from .code_assist import BatchedChunks, Chunk, parse_backend_error
from .errors import BackendError, InvalidRequest, TransportError
from .settings import Settings

if TYPE_CHECKING:
    from .pool import Entry

log = logging.getLogger(__name__)


class Embeddings(NamedTuple):
    """What a backend's embeddings answer(s) gave."""

    vectors: list[dict[str, Any]]  # [{"values": [...]}, ...] in order
    tokens: int  # prompt tokens reported
    trace_id: str = ""  # Google's id of the answer when it names one (answer_id)

    @classmethod
    def joined(cls, parts: "list[Embeddings]") -> "Embeddings":
        """The answers of several calls for one request, in order (the first id found)."""
        return cls([v for p in parts for v in p.vectors], sum(p.tokens for p in parts),
                   next((p.trace_id for p in parts if p.trace_id), ""))


def answer_id(value: Any) -> str:
    """Google's id of a plain (AI Studio / Vertex AI) answer: its `responseId`, or ""."""
    rid = value.get("responseId") if isinstance(value, dict) else None
    return rid if isinstance(rid, str) else ""


class Backend:
    kind: ClassVar[str]
    # First cool-down of a 429 that carries no retry hint (None: DEFAULT_COOLDOWN_SECONDS).
    backoff_start: ClassVar[float | None] = None
    has_embeddings: ClassVar[bool] = False

    async def generate(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes | memoryview,
                       request_id: str) -> Chunk:
        raise NotImplementedError

    async def open_stream(self, entry: "Entry", headers: Mapping[str, str], model: str,
                          body: bytes | memoryview, request_id: str) -> "ChunkStream":
        raise NotImplementedError

    async def count_tokens(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes) -> Any:
        raise NotImplementedError

    async def embed(self, entry: "Entry", headers: Mapping[str, str], model: str,
                    requests: list[dict[str, Any]]) -> Embeddings:
        raise InvalidRequest(f"{self.kind} has no embeddings")

    def account_problem(self, err: BackendError) -> str | None:
        """Why `err` means the credential itself is unusable (DEAD), or None."""
        return None


class ChunkStream:
    """Chunks of an open streamed answer; `next()` gives None at the end. Always `aclose()`."""

    async def next(self) -> Chunk | None:
        raise NotImplementedError

    async def next_batch(self) -> list[Chunk] | None:
        """The chunks that are already here (at least one), or None at the end."""
        chunk = await self.next()
        return None if chunk is None else [chunk]

    async def aclose(self) -> None:
        raise NotImplementedError


# --- HTTP ------------------------------------------------------------------------------------

class Http:
    """Calls through the process's transport (transport.Transport), the member's proxy per call."""

    def __init__(self, settings: Settings, transport: Any) -> None:
        self._settings = settings
        self._transport = transport

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
                      proxy: str | None = None) -> tuple[int, bytes]:
        resp = await self._transport.request(method, url, headers=headers, body=body, proxy=proxy,
                                             timeout=self._settings.request_timeout)
        return resp.status, resp.body

    async def open_stream(self, url: str, *, headers: Mapping[str, str], body: bytes,
                          proxy: str | None = None) -> Any:
        """A streamed POST; an error answer is read (bounded), closed and raised as BackendError."""
        stream = await self._transport.open_stream("POST", url, headers=headers, body=body, proxy=proxy)
        if stream.status != 200:
            try:
                data = await stream.error_body()
            finally:
                await stream.aclose()
            raise parse_backend_error(stream.status, data[:MAX_ERROR_BODY])
        return stream


def json_answer(status: int, data: bytes) -> Any:
    if status != 200:
        raise parse_backend_error(status, data[:MAX_ERROR_BODY])
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TransportError("backend answered 200 with a body that is not JSON") from None


def plain_chunk(data: bytes, value: Any) -> Chunk:
    """A plain GenerateContentResponse (no envelope) as a Chunk; an error event raises."""
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, dict)), {})
    if not isinstance(value, dict):
        return Chunk(b"{}", None, "")
    error = value.get("error")
    if isinstance(error, dict) and "candidates" not in value:
        code = error.get("code")
        raise parse_backend_error(code if isinstance(code, int) else 500, orjson.dumps(value))
    usage = value.get("usageMetadata")
    return Chunk(data, usage if isinstance(usage, dict) else None, answer_id(value))


class PlainEventStream(BatchedChunks, ChunkStream):
    """SSE of plain GenerateContentResponse events, each passed on as the bytes that came."""

    def _convert(self, data: bytes) -> Chunk | None:
        return _event(data)


def _event(data: bytes) -> Chunk | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        log.warning("dropped an SSE event that is not valid JSON (%d bytes)", len(data))
        return None
    return plain_chunk(data, value)


# --- request bodies ----------------------------------------------------------------------------

def parse_object(body: bytes | memoryview, what: str = "GenerateContentRequest") -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"request body must be a JSON object (a Gemini {what})")
    return value


def embed_requests(body: bytes) -> list[dict[str, Any]]:
    """The `requests` of a batchEmbedContents body, each checked to carry content."""
    value = parse_object(body, "BatchEmbedContentsRequest")
    requests = value.get("requests")
    if not isinstance(requests, list) or not requests:
        raise InvalidRequest("batchEmbedContents needs a non-empty `requests` list")
    for i, req in enumerate(requests):
        if not isinstance(req, dict) or not isinstance(req.get("content"), dict):
            raise InvalidRequest(f"requests[{i}] needs a `content` object")
    return requests


def texts_of(content: dict[str, Any]) -> str:
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    return "\n".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
