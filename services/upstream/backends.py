"""What every backend client offers the pool, and the HTTP plumbing AI Studio and Vertex share.

A `Backend` turns the pool's operations (generate, open_stream, count_tokens, embed) into
its own HTTP calls and parses its own error bodies into `BackendError`; it also says which
errors mean "this credential is unusable" (`account_problem`) and how long a 429 without a
retry hint rests (`backoff_start`). Member-specific facts (project, location, proxy) come
from the pool entry passed to every call.

`Http` is the one place AI Studio and Vertex calls go out: one client per HTTP proxy, the
whole-call deadline, and transport failures as `TransportError`.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator, ClassVar, Mapping

import httpx
import orjson

from .code_assist import Chunk, parse_backend_error
from .errors import BackendError, InvalidRequest, TransportError
from .settings import Settings
from .sse import SSEParser

if TYPE_CHECKING:
    from .pool import Entry

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 64 * 1024
# Error answers are read at most this far; a success answer at most MAX_RESPONSE_BYTES.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


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
                    requests: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
        """([{"values": [...]}, ...] in order, prompt tokens reported)."""
        raise InvalidRequest(f"{self.kind} has no embeddings")

    def account_problem(self, err: BackendError) -> str | None:
        """Why `err` means the credential itself is unusable (DEAD), or None."""
        return None


class ChunkStream:
    """Chunks of an open streamed answer; `next()` gives None at the end. Always `aclose()`."""

    async def next(self) -> Chunk | None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


# --- HTTP ------------------------------------------------------------------------------------

class Http:
    def __init__(self, settings: Settings, default: httpx.AsyncClient) -> None:
        self._settings = settings
        self._default = default
        self._proxied: dict[str, httpx.AsyncClient] = {}

    def client(self, proxy: str | None) -> httpx.AsyncClient:
        if not proxy:
            return self._default
        client = self._proxied.get(proxy)
        if client is None:
            s = self._settings
            client = self._proxied[proxy] = httpx.AsyncClient(
                proxy=proxy, follow_redirects=False,
                timeout=httpx.Timeout(connect=s.connect_timeout, read=s.read_timeout, write=s.read_timeout,
                                      pool=s.connect_timeout))
        return client

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None = None,
                      proxy: str | None = None) -> tuple[int, bytes]:
        seconds = self._settings.request_timeout
        try:
            async with asyncio.timeout(seconds):
                resp = await self.client(proxy).request(method, url, content=body, headers=headers)
        except TimeoutError:
            raise TransportError(f"backend gave no answer within {seconds:g}s", timeout=True) from None
        except httpx.TimeoutException as exc:
            raise TransportError(f"backend timed out ({type(exc).__name__})", timeout=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"backend unreachable ({type(exc).__name__})") from None
        return resp.status_code, resp.content

    async def open_stream(self, url: str, *, headers: Mapping[str, str], body: bytes,
                          proxy: str | None = None) -> httpx.Response:
        """A streamed POST; an error answer is read (bounded), closed and raised as BackendError."""
        client = self.client(proxy)
        request = client.build_request("POST", url, content=body, headers=headers)
        try:
            resp = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise TransportError(f"backend timed out ({type(exc).__name__})", timeout=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"backend unreachable ({type(exc).__name__})") from None
        if resp.status_code != 200:
            try:
                data = bytearray()
                async for piece in resp.aiter_bytes():
                    data += piece
                    if len(data) >= MAX_ERROR_BODY:
                        break
            except httpx.HTTPError:
                pass
            finally:
                await resp.aclose()
            raise parse_backend_error(resp.status_code, bytes(data[:MAX_ERROR_BODY]))
        return resp


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
    rid = value.get("responseId")
    return Chunk(data, usage if isinstance(usage, dict) else None, rid if isinstance(rid, str) else "")


class PlainEventStream(ChunkStream):
    """SSE of plain GenerateContentResponse events, each passed on as the bytes that came."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._it = self._chunks()

    async def next(self) -> Chunk | None:
        try:
            return await self._it.__anext__()
        except StopAsyncIteration:
            return None

    async def _chunks(self) -> AsyncIterator[Chunk]:
        parser = SSEParser()
        try:
            async for piece in self._response.aiter_bytes():
                for data in parser.feed(piece):
                    chunk = _event(data)
                    if chunk is not None:
                        yield chunk
            for data in parser.close():
                chunk = _event(data)
                if chunk is not None:
                    yield chunk
        except httpx.TimeoutException as exc:
            raise TransportError(f"backend stream stalled ({type(exc).__name__})", timeout=True) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"backend stream broke ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        await self._it.aclose()
        await self._response.aclose()


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
