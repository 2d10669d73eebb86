"""HTTP client for the Code Assist backend (the Gemini CLI's `v1internal` API).

Backend calls go through the process's `transport.Transport` (aiohttp: bounded keep-alive
pool, TLS always verified, answers size-capped, a POST never re-sent), and so do the OAuth
token endpoint's (`token_endpoint.TokenEndpoint`). Request envelopes are built
by splicing the caller's request bytes into
`{"model":…,"project":…,"user_prompt_id":…,"request":<bytes>}` and sent as parts, so a large
request is never re-serialized nor copied (one under 128 KiB is joined: one send). Error
answers become `BackendError`, network failures `TransportError`.
"""
from __future__ import annotations

import logging
import platform
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import msgspec
import orjson

from .backend_stream import MAX_ERROR_BODY, BackendStream
from .errors import BackendError, InvalidRequest, TransportError
from .settings import Settings
from .sse import BAD, decode
from .transport import Transport

log = logging.getLogger(__name__)

SETUP_METADATA = {"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}


# --- envelopes ---------------------------------------------------------------------------

_ASCII_SPACE = frozenset(b" \t\n\r\x0b\x0c")  # what bytes.strip() removes
# Checks the syntax of the whole document but builds only its top-level members, each left raw:
# a body of a million tiny values is not turned into a million objects just to be checked.
_MEMBERS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _first(body: bytes | memoryview | msgspec.Raw) -> bytes:
    view = memoryview(body)
    for i in range(min(len(view), 4096)):
        if view[i] not in _ASCII_SPACE:
            return bytes(view[i:i + 1])
    return b""


def _members(body: bytes | memoryview | msgspec.Raw, what: str) -> dict[str, msgspec.Raw]:
    if _first(body) != b"{":
        raise InvalidRequest(f"request body must be a JSON object (a Gemini {what})")
    try:
        return _MEMBERS.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("request body is not valid JSON: nested too deeply") from None


def check_body(body: bytes | memoryview) -> None:
    """The caller's body must be one JSON object, or splicing it would build a broken (or
    hijacked) envelope."""
    _members(body, "GenerateContentRequest")




# Searched in place: a body received in parts is a memoryview, which has no substring search.
_SESSION_ID = re.compile(rb'"session_id"')


def _strip(body: bytes | memoryview) -> bytes | memoryview:
    if isinstance(body, bytes):
        return body.strip()  # the same object when there is nothing to strip
    start, end = 0, len(body)
    while start < end and body[start] in _ASCII_SPACE:
        start += 1
    while end > start and body[end - 1] in _ASCII_SPACE:
        end -= 1
    return body[start:end]


def envelope_parts(model: str, project: str | None, user_prompt_id: str,
                   body: bytes | memoryview, session_id: str | None = None) -> tuple[bytes, bytes | memoryview, bytes]:
    """The envelope as three parts to send one after the other: the caller's body is not copied.

    With `session_id`, it goes inside `request` as the Gemini CLI sends it (unless the
    caller's request already has one): the request's closing brace is replaced."""
    head = {"model": model}
    if project:
        head["project"] = project
    head["user_prompt_id"] = user_prompt_id
    # orjson output of a dict ends with "}": drop it and append the raw request.
    prefix = orjson.dumps(head)[:-1] + b',"request":'
    request = _strip(body)
    if session_id is None or _SESSION_ID.search(request):
        return prefix, request, b"}"
    view = memoryview(request)
    end = len(view) - 1  # the request's "}"
    last = end - 1
    while last >= 0 and view[last] in _ASCII_SPACE:
        last -= 1
    sep = b"" if last >= 0 and view[last] == 0x7B else b","  # "{": an empty object
    return prefix, view[:end], sep + b'"session_id":' + orjson.dumps(session_id) + b"}}"


def build_envelope(model: str, project: str | None, user_prompt_id: str, body: bytes | memoryview,
                   session_id: str | None = None) -> bytes:
    return b"".join(envelope_parts(model, project, user_prompt_id, body, session_id))


Content = bytes | tuple[bytes | memoryview, ...] | list[bytes | memoryview]


def build_count_body(model: str, body: bytes) -> bytes:
    """Gemini countTokens body → Code Assist's `{request:{model:"models/<id>", contents}}`; the
    contents are spliced in as sent, not parsed."""
    value = _members(body, "CountTokensRequest") if body.strip() else {}
    inner = value.get("generateContentRequest")
    if inner is not None and _first(inner) == b"{":
        value = _MEMBERS.decode(inner)
    contents = value.get("contents")
    if contents is None or _first(contents) != b"[":
        raise InvalidRequest("countTokens needs `contents` (or `generateContentRequest.contents`)")
    return b"".join((b'{"request":{"model":', orjson.dumps(f"models/{model}"), b',"contents":',
                     memoryview(contents), b"}}"))


# --- errors -------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_MESSAGE_DELAY = re.compile(r"(?:reset after|retry in|retry after)\s+([0-9][0-9.hmsµun]*)", re.IGNORECASE)


def parse_duration(value: Any) -> float | None:
    """Seconds in a google.protobuf.Duration ("21599.96s", {"seconds":…,"nanos":…}) or a Go
    duration ("5h59m59.96s", "500ms"); None when it is neither."""
    if isinstance(value, dict):
        try:
            return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip(".")
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0 or pos != len(text):
        return None
    return total


def _loads_lenient(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # Streamed error arrays sometimes carry doubled commas (the Gemini CLI repairs them too).
    repaired = re.sub(rb",\s*,", b",", body)
    try:
        return orjson.loads(repaired)
    except orjson.JSONDecodeError:
        return None


def parse_backend_error(http_status: int, body: bytes) -> BackendError:
    """A Google error body — `{"error":{…}}`, the streaming `[{"error":{…}}]`, or an OAuth
    `{"error":"…","error_description":"…"}` — as a BackendError. Never raises."""
    data = _loads_lenient(body)
    if isinstance(data, list):
        data = next((item for item in data if isinstance(item, dict)), None)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, str):
        description = data.get("error_description") if isinstance(data, dict) else None
        return BackendError(http_status, status="", message=str(description or err), reason=err)
    if not isinstance(err, dict):
        text = body[:500].decode("utf-8", "replace").strip()
        return BackendError(http_status, message=text or f"backend answered HTTP {http_status}")

    status = err.get("status") if isinstance(err.get("status"), str) else ""
    message = err.get("message") if isinstance(err.get("message"), str) else ""
    details = [d for d in err.get("details", []) if isinstance(d, dict)] if isinstance(err.get("details"), list) else []
    reason = domain = ""
    retry: float | None = None
    quota_reset: float | None = None
    for detail in details:
        kind = str(detail.get("@type", ""))
        if kind.endswith("google.rpc.ErrorInfo"):
            reason = reason or str(detail.get("reason") or "")
            domain = domain or str(detail.get("domain") or "")
            meta = detail.get("metadata")
            if isinstance(meta, dict) and quota_reset is None:
                quota_reset = parse_duration(meta.get("quotaResetDelay"))
        elif kind.endswith("google.rpc.RetryInfo") and retry is None:
            retry = parse_duration(detail.get("retryDelay"))
    if not reason and isinstance(err.get("errors"), list):
        first = next((e for e in err["errors"] if isinstance(e, dict)), {})
        reason = str(first.get("reason") or "")
        domain = domain or str(first.get("domain") or "")
    if retry is None:
        retry = quota_reset
    if retry is None and message:
        match = _MESSAGE_DELAY.search(message)
        if match:
            retry = parse_duration(match.group(1))
    return BackendError(http_status, status=status, message=message or f"backend answered HTTP {http_status}",
                        reason=reason, retry_delay_s=retry, details=details, domain=domain)


# --- chunks -------------------------------------------------------------------------------

@dataclass(slots=True)
class Chunk:
    """One Gemini GenerateContentResponse, envelope removed."""

    data: bytes
    usage: dict[str, Any] | None
    trace_id: str


def unwrap(event: Any) -> Chunk:
    """Code Assist `{response, traceId}` → Chunk; an error event raises BackendError."""
    if isinstance(event, list):
        # The streaming error form: [{"error": {...}}].
        event = next((item for item in event if isinstance(item, dict)), {})
    if not isinstance(event, dict):
        return Chunk(b"{}", None, "")
    response = event.get("response")
    if not isinstance(response, dict):
        error = event.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise parse_backend_error(code if isinstance(code, int) else 500, orjson.dumps(event))
        # The CLI reads a reply without `response` as one without candidates.
        response = {}
    usage = response.get("usageMetadata")
    trace = event.get("traceId")
    # An exact-size copy: orjson's result keeps its whole working buffer (4-8 KiB for an event
    # of a few hundred bytes), and a chunk stays referenced while its stream waits for the
    # next event, so 1,000 open streams held ~10 MiB of unused buffer (0.2 µs per event).
    return Chunk(memoryview(orjson.dumps(response)).tobytes(), usage if isinstance(usage, dict) else None,
                 trace if isinstance(trace, str) else "")


# --- client -------------------------------------------------------------------------------

def _platform() -> tuple[str, str]:
    arch = platform.machine().lower()
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(arch, arch or "unknown")
    return sys.platform, arch


class CodeAssistClient:
    def __init__(self, settings: Settings, transport: Transport) -> None:
        self._settings = settings
        self._transport = transport
        self._base = settings.base_url
        self._stream_url = f"{self._base}:streamGenerateContent?alt=sse"
        self._request_timeout = settings.request_timeout
        self._platform, self._arch = _platform()
        self._ua: dict[str, str] = {}

    def user_agent(self, model: str) -> str:
        ua = self._ua.get(model)
        if ua is None:
            ua = f"GeminiCLI/{self._settings.cli_version}/{model or 'gemini-2.5-pro'} ({self._platform}; {self._arch}; terminal)"
            if len(self._ua) < 256:
                self._ua[model] = ua
        return ua

    def _headers(self, auth: Mapping[str, str], model: str) -> dict[str, str]:
        headers = {"User-Agent": self.user_agent(model), "Content-Type": "application/json"}
        headers.update(auth)
        return headers

    async def _unary(self, method: str, url: str, auth: Mapping[str, str], model: str,
                     content: Content | None = None) -> Any:
        resp = await self._transport.request(method, url, headers=self._headers(auth, model), body=content,
                                             timeout=self._request_timeout)
        if resp.status != 200:
            raise parse_backend_error(resp.status, resp.body[:MAX_ERROR_BODY])
        try:
            return orjson.loads(resp.body)
        except orjson.JSONDecodeError:
            raise TransportError("backend answered 200 with a body that is not JSON") from None

    async def call(self, rpc: str, auth: Mapping[str, str], body: Content, model: str = "") -> Any:
        """POST `{base}:{rpc}` with a JSON body (bytes, or parts sent in order); the parsed JSON answer."""
        return await self._unary("POST", f"{self._base}:{rpc}", auth, model, body)

    async def get_operation(self, name: str, auth: Mapping[str, str]) -> Any:
        return await self._unary("GET", f"{self._base}/{name.lstrip('/')}", auth, "")

    async def generate(self, auth: Mapping[str, str], model: str, envelope: Content) -> Chunk:
        return unwrap(await self.call("generateContent", auth, envelope, model))

    async def count_tokens(self, auth: Mapping[str, str], model: str, body: bytes) -> Any:
        return await self.call("countTokens", auth, body, model)

    async def open_stream(self, auth: Mapping[str, str], model: str, envelope: Content) -> "EventStream":
        """Start a streamGenerateContent call; raises on an error answer, before any chunk."""
        stream = await self._transport.open_stream("POST", self._stream_url, headers=self._headers(auth, model),
                                                   body=envelope)
        if stream.status != 200:
            try:
                body = await stream.error_body()
            finally:
                await stream.aclose()
            raise parse_backend_error(stream.status, body)
        return EventStream(stream)


class BatchedChunks:
    """The chunks of an open SSE answer, also in batches: `next_batch()` gives every chunk of
    the events that one read from the backend brought (what had arrived by then, nothing
    waited for; the answer's first event alone, see next_batch), `next()` one at a time. An error event after good ones in the same read is
    raised on the call after the one that returns them: events reach the caller in order.
    Subclasses say how an event's data becomes a Chunk (`_convert`: None drops it)."""

    def __init__(self, stream: BackendStream) -> None:
        self._stream = stream
        self._batches = stream.batches()
        self._pending: list[Chunk] = []
        self._failure: BaseException | None = None
        # Events of the first read held back, still as received, while the first leaves alone.
        self._unconverted: list[bytes] = []
        self._started = False

    def _convert(self, data: bytes) -> Chunk | None:
        raise NotImplementedError

    def _converted(self, raw: list[bytes]) -> list[Chunk]:
        out: list[Chunk] = []
        for data in raw:
            try:
                chunk = self._convert(data)
            except BackendError as exc:
                if not out:
                    raise
                self._failure = exc
                return out
            if chunk is not None:
                out.append(chunk)
        return out

    async def next_batch(self) -> list[Chunk] | None:
        """The next chunks (at least one), or None at the end of the stream.

        The answer's first event comes alone even when others came with it: they are
        converted and handed on by the next call, after the first chunk is on its way."""
        if self._pending:
            out, self._pending = self._pending, []
            return out
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._unconverted:
            raw, self._unconverted = self._unconverted, []
            out = self._converted(raw)
            if out:
                return out
        async for raw in self._batches:
            held: list[bytes] = []
            if not self._started and len(raw) > 1:
                raw, held = raw[:1], raw[1:]
            out = self._converted(raw)
            if not out and held:  # the first event was dropped: the rest go on together
                out, held = self._converted(held), []
            if out:
                self._started = True
                self._unconverted = held
                return out
        return None

    async def next(self) -> Chunk | None:
        """The next chunk, or None at the end of the stream."""
        if not self._pending:
            batch = await self.next_batch()
            if batch is None:
                return None
            self._pending = batch
        return self._pending.pop(0)

    async def aclose(self) -> None:
        await self._batches.aclose()
        await self._stream.aclose()


class EventStream(BatchedChunks):
    """The chunks of an open Code Assist SSE answer (envelopes removed). Always `aclose()` it
    (closing early drops the backend connection, which is how a caller's cancellation reaches
    the backend)."""

    def _convert(self, data: bytes) -> Chunk | None:
        event = decode(data)
        return None if event is BAD else unwrap(event)
