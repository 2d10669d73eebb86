"""The edge's only way to the upstream service: the gRPC contract, over one channel per process.

gRPC failures become a typed `UpstreamError` carrying the HTTP status to show the client, the
google.rpc status name, the message, and Retry-After (from google.rpc.RetryInfo in
`grpc-status-details-bin`).

Status mapping (gRPC -> HTTP towards the client):

    INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE  -> 400
    PERMISSION_DENIED                                     -> 403
    NOT_FOUND                                             -> 404
    ALREADY_EXISTS, ABORTED                               -> 409
    RESOURCE_EXHAUSTED                                    -> 429 + Retry-After
      (gRPC's own "message larger than max"               -> 413)
    CANCELLED                                             -> 499
    UNIMPLEMENTED                                         -> 501
    UNAUTHENTICATED                                       -> 502 (status UNAVAILABLE)
    UNKNOWN, INTERNAL, DATA_LOSS                          -> 502
    UNAVAILABLE                                           -> 503 (+ Retry-After when given)
    DEADLINE_EXCEEDED                                     -> 504

UNAUTHENTICATED is deliberately not passed on as 401: it means the gateway's own backend
credentials failed, not the client's license key. A 401 would make SDKs tell the user their key
is wrong; 502 says "the gateway's backend refused it", which is what happened.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Sequence

import grpc
from grpc.aio import _call as _aio_call  # Call.cancel without the task cancel, see _cancel_call
import orjson
from google.api import httpbody_pb2
from google.rpc import error_details_pb2, status_pb2

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc
from services.edge.errors import ApiError
from services.future_exceptions import mark_retrieved

log = logging.getLogger("edge.upstream")

_C = grpc.StatusCode
# grpc code -> (HTTP status, google.rpc status name shown to the client)
_MAP: dict[grpc.StatusCode, tuple[int, str]] = {
    _C.INVALID_ARGUMENT: (400, "INVALID_ARGUMENT"),
    _C.FAILED_PRECONDITION: (400, "FAILED_PRECONDITION"),
    _C.OUT_OF_RANGE: (400, "OUT_OF_RANGE"),
    _C.PERMISSION_DENIED: (403, "PERMISSION_DENIED"),
    _C.NOT_FOUND: (404, "NOT_FOUND"),
    _C.ALREADY_EXISTS: (409, "ALREADY_EXISTS"),
    _C.ABORTED: (409, "ABORTED"),
    _C.RESOURCE_EXHAUSTED: (429, "RESOURCE_EXHAUSTED"),
    _C.CANCELLED: (499, "CANCELLED"),
    _C.UNIMPLEMENTED: (501, "UNIMPLEMENTED"),
    _C.UNAUTHENTICATED: (502, "UNAVAILABLE"),
    _C.UNKNOWN: (502, "UNKNOWN"),
    _C.INTERNAL: (502, "INTERNAL"),
    _C.DATA_LOSS: (502, "DATA_LOSS"),
    _C.UNAVAILABLE: (503, "UNAVAILABLE"),
    _C.DEADLINE_EXCEEDED: (504, "DEADLINE_EXCEEDED"),
}

_MAX_MESSAGE = 256 * 1024 * 1024
# Calls go round-robin over every address of the target, and only to upstreams whose
# grpc.health.v1 Watch says SERVING: one that is stopping (health turns NOT_SERVING as it
# drains) or gone is skipped for new calls. No retryPolicy on purpose: a Generate that reached an
# upstream may have started at the backend and must never run twice. gRPC's transparent retry
# only re-sends a call that never left this process (e.g. its connection was already closed),
# which is safe.
SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                             "healthCheckConfig": {"serviceName": ""}})
_GENERATE = f"/{pb.DESCRIPTOR.services_by_name['Upstream'].full_name}/Generate"
_GENERATE_CHUNKED = f"/{pb.DESCRIPTOR.services_by_name['Upstream'].full_name}/GenerateChunked"
_GENERATE_UNARY = f"/{pb.DESCRIPTOR.services_by_name['Upstream'].full_name}/GenerateUnary"
# What a gRPC server answers for a method it does not have (an upstream older than GenerateUnary),
# or one whose servicer leaves it to the generated base class: either way nothing ran.
_NO_METHOD = ("Method not found!", "Method not implemented!")
# A body larger than CHUNKED_ABOVE goes with GenerateChunked, in parts of PART_BYTES: one
# message of tens of MB would be held by this process as the body, the serialized message and
# the gRPC core's copy at once, and again several times over by the upstream. Small parts keep
# what sits in gRPC buffers on both sides small (1 MiB parts: the upstream held ~8 MiB more).
CHUNKED_ABOVE = 1 << 20
PART_BYTES = 256 * 1024
# A request body: bytes, or pieces to send one after the other (large media among small JSON,
# never joined into one copy).
Body = bytes | bytearray | memoryview | Sequence[bytes | bytearray | memoryview]
_BUFFER = (bytes, bytearray, memoryview)
# Wire pieces of GenerateRequest.body (field 2) = HttpBody{content_type (1), data (2)}.
_BODY_TAG = b"\x12"
_DATA_TAG = b"\x12"
_HTTPBODY_HEAD = httpbody_pb2.HttpBody(content_type="application/json").SerializeToString()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def body_size(body: Body) -> int:
    if isinstance(body, _BUFFER):
        return memoryview(body).nbytes
    return sum(memoryview(p).nbytes for p in body)


def _joined(body: Body) -> bytes | bytearray | memoryview:
    return body if isinstance(body, _BUFFER) else b"".join(body)


def chunked_parts(model: str, body: Body, stream: bool, request_id: str, caller: str,
                  part_bytes: int = PART_BYTES, coalesce: bool = True) -> Iterator[bytes]:
    """GenerateRequestPart messages in wire form, made one at a time as gRPC takes them: the
    first carries the call and the body's size, each carries up to `part_bytes` of the body."""
    head = pb.GenerateRequest(model=model, stream=stream, request_id=request_id, caller=caller,
                              coalesce=stream and coalesce, early_headers=stream)
    head.body.content_type = "application/json"
    encoded = head.SerializeToString()
    lead = b"\x0a" + _varint(len(encoded)) + encoded + b"\x10" + _varint(body_size(body))
    pieces = [body] if isinstance(body, _BUFFER) else body
    gathered: list[memoryview] = []
    room = part_bytes
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while view.nbytes:
            take = view[:room]
            gathered.append(take)
            room -= take.nbytes
            view = view[take.nbytes:]
            if room == 0:
                yield b"".join((lead, b"\x1a", _varint(part_bytes), *gathered))
                lead, gathered, room = b"", [], part_bytes
    if gathered or lead:
        n = part_bytes - room
        yield b"".join((lead, b"\x1a", _varint(n), *gathered))


# What clients are told when the failure is the gateway's or its backend's, not their request's.
# The upstream's own message (backend text, credential file names, internal paths) goes to the
# edge's log with the request id, never to the client.
_PROJECT_PATH = re.compile(r"projects/[^/\s`'\"]+(?:/locations/[^/\s`'\"]+)?")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PUBLIC_MESSAGES: dict[int, str] = {
    403: "the gateway's backend account may not serve this request",
    501: "this operation is not supported by the gateway's backend",
    502: "the gateway's backend failed to answer",
    503: "the gateway's backend is unavailable; retry shortly",
    504: "the gateway's backend did not answer in time",
}


def public_message(http_status: int, code: grpc.StatusCode, detail: str) -> str | None:
    """The message a client may see for an upstream failure, or None to show the detail."""
    if code == _C.UNAUTHENTICATED:
        return "the gateway's backend credentials were rejected"
    if code == _C.UNAVAILABLE and "failed to connect" in detail.lower():
        return "the gateway's upstream service is unreachable"
    if http_status == 429:
        return "the gateway's backend is rate limited; retry later"
    if http_status == 403 or http_status >= 500:
        return _PUBLIC_MESSAGES.get(http_status) or _PUBLIC_MESSAGES[502]
    # 400/404/409 are about the client's request, and it needs to know what; but Vertex names the
    # member's project and location in resource paths, and some messages name an account.
    redacted = _EMAIL.sub("[account]", _PROJECT_PATH.sub("projects/[project]", detail))
    return redacted if redacted != detail else None


class UpstreamError(Exception):
    def __init__(self, http_status: int, google_status: str, message: str, retry_after: float | None = None,
                 *, grpc_code: grpc.StatusCode | None = None, reason: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.google_status = google_status
        self.message = message          # safe to show to clients
        self.detail = detail or message  # what the upstream said: for the logs only
        self.retry_after = retry_after
        self.grpc_code = grpc_code
        self.reason = reason

    def to_api_error(self, request_id: str | None = None) -> ApiError:
        """The client's error. With `request_id`, a withheld detail is logged under it and the
        message names it, so an operator can find the detail from what the client reports."""
        code = self.reason.lower() if self.reason else (self.grpc_code.name.lower() if self.grpc_code else None)
        message = self.message
        if request_id and self.detail != self.message:
            log.warning("request %s: upstream %s (%d): %s", request_id, self.google_status, self.http_status,
                        self.detail)
            message = f"{message} (request id {request_id})"
        return ApiError(self.http_status, message, code=code, google_status=self.google_status,
                        retry_after=self.retry_after)

    def __repr__(self) -> str:
        return f"UpstreamError({self.http_status}, {self.google_status}, {self.message!r})"


def _status_details(metadata) -> tuple[float | None, str | None]:
    """(retry delay in seconds, ErrorInfo reason) from grpc-status-details-bin, if present."""
    raw = None
    for key, value in metadata or ():
        if key == "grpc-status-details-bin":
            raw = value
            break
    if not raw:
        return None, None
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # a malformed detail must not hide the error itself
        return None, None
    retry, reason = None, None
    for any_ in status.details:
        if any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            any_.Unpack(info)
            retry = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        elif any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            reason = info.reason or info.metadata.get("upstream_reason") or None
    return retry, reason


def map_rpc_error(code: grpc.StatusCode, details: str | None, trailing_metadata=None) -> UpstreamError:
    http, gstatus = _MAP.get(code, (502, "UNKNOWN"))
    retry, reason = _status_details(trailing_metadata)
    detail = details or code.name
    if code == _C.RESOURCE_EXHAUSTED and "message larger than max" in detail.lower():
        # gRPC's own size limit, not a quota: retrying cannot help.
        return UpstreamError(413, "INVALID_ARGUMENT", "the request is too large for the upstream service",
                             grpc_code=code, reason="REQUEST_TOO_LARGE", detail=detail)
    if http == 429 and retry is None:
        retry = 1.0
    message = public_message(http, code, detail) or detail
    return UpstreamError(http, gstatus, message, retry, grpc_code=code, reason=reason, detail=detail)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> UpstreamError:
    """The UpstreamError that replaces a gRPC error (raised `from None`). The gRPC error's
    traceback is dropped: its frames hold the call and the task that holds the error, a
    reference cycle of ~30 objects per failed call that only the cyclic GC would free."""
    exc.__traceback__ = None
    return map_rpc_error(exc.code(), exc.details(), exc.trailing_metadata())


@dataclass(slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    thoughts: int = 0
    total: int = 0
    cached: int = 0

    @classmethod
    def from_proto(cls, u: pb.Usage) -> "Usage":
        total = u.total_tokens or (u.prompt_tokens + u.candidates_tokens + u.thoughts_tokens)
        return cls(u.prompt_tokens, u.candidates_tokens, u.thoughts_tokens, total, u.cached_tokens)


def output_chars(chunk: bytes) -> int:
    """Characters of generated output in one Gemini response chunk: text (thoughts included)
    and the JSON of function calls. Chunks that carry usage are not counted (their usage is)."""
    try:
        data = orjson.loads(chunk)
    except orjson.JSONDecodeError:
        return len(chunk)
    n = 0
    cands = data.get("candidates") if isinstance(data, dict) else None
    for cand in cands if isinstance(cands, list) else ():
        content = cand.get("content") if isinstance(cand, dict) else None
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                n += len(text)
            elif "functionCall" in part:
                n += len(orjson.dumps(part["functionCall"]))
    return n


def events_of(msg: pb.GenerateResponse) -> list[bytes]:
    """The backend events a message carries, in order: several in `chunks` (a coalesced
    stream: the events that reached the upstream together), else the one in `chunk`."""
    if msg.chunks:
        return [c.data for c in msg.chunks if c.data]
    data = msg.chunk.data
    return [data] if data else []


# Output of a stream that carried no usage yet is counted (parsed) only when it is needed, or
# when this much of it waits: a cut stream is billed by it, a whole one never needs it. Backends
# send usage only with the last event, so each open stream holds up to this much: 4 KiB (it was
# 64, then 16: 1,000 long answers held 16 MiB). A real answer's events (a few hundred bytes
# each, JSON around the text) pass 16 KiB within a few dozen events, so nearly every answer
# is parsed anyway; a lower bound only parses sooner, not more (orjson, ~1 µs per event), and
# a short answer (the bench's 21 events: ~3 KiB) still never is.
_UNCOUNTED_BYTES = 4 * 1024
# ... or as soon as the oldest of it has waited this long: a stream held open for minutes (a
# slow answer, events seconds apart) is then counted as it goes and keeps about one event
# between two, not 4 KiB each (1,000 held streams: ~4 MiB of the edge's peak). An answer that
# streams within a second is still never parsed: one clock read per message is its whole cost.
_UNCOUNTED_SECONDS = 1.0
_clock = time.monotonic  # the clock of that age (a test sets its own)


def _forget_request(call: grpc.aio.UnaryStreamCall) -> None:
    """grpc.aio's UnaryStreamCall keeps the request it sent (here the serialized body) for as
    long as the call object lives, though it only needs it to send it once. An answer's first
    message means it was sent; a streamed answer then lasts up to minutes, and each open stream
    held a copy of its request (a long conversation's: 100 KB and more)."""
    if getattr(call, "_request", None) is not None:
        call._request = None


class UpstreamStream:
    """One streamed Generate call, read with `next()` (or iterated).

    Reads survive the cancellation of whoever awaits them: each runs in a task of its own that
    `next()` awaits shielded, and `cancel()` ends the call, which ends that read. Cancelling the
    task that awaits a gRPC read directly (how a client that leaves reaches the edge) loses the
    read batch's native memory in grpc.aio (grpc/grpc#43360: about 150 bytes per call, never
    freed; the edge grew in a straight line under a soak with abandoned streams).
    Before the first message, what is pending is the batch that receives the response headers,
    and cancelling the call fails it, whichever way (grpc/grpc#43360 again: ~110 bytes per
    stream whose client left before its first chunk): streams ask the upstream to send its
    headers at once (GenerateRequest.early_headers), so that batch is over long before."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, *, count_text: bool = False) -> None:
        self._call = call
        self._read: asyncio.Future | None = None
        self.usage: Usage | None = None
        self.trace_id = ""
        # Which credential (kind, id) served the call: sent with the first message.
        self.credential_kind = ""
        self.credential_id = ""
        # perf_counter() at the first message (it carries the credential): time to first chunk.
        self.first_at: float | None = None
        self.messages = 0
        self._counted_chars = 0
        self._uncounted: list[bytes] = []
        self._uncounted_bytes = 0
        self._uncounted_since = 0.0  # _clock() when the oldest of them came
        self._count_text = count_text

    @property
    def text_chars(self) -> int:
        """Characters of output streamed in messages without usage: what a stream cut before
        the backend's usage is billed by (see Meter.finish_stream)."""
        if self._uncounted:
            self._counted_chars += sum(map(output_chars, self._uncounted))
            self._uncounted, self._uncounted_bytes = [], 0
        return self._counted_chars

    def _seen(self, msg: pb.GenerateResponse) -> pb.GenerateResponse:
        self.messages += 1
        if self.messages == 1:
            _forget_request(self._call)
        if msg.HasField("usage"):
            # usageMetadata is cumulative in Gemini streams: the last one is the total (and
            # once there is one, the text count is never read).
            self.usage = Usage.from_proto(msg.usage)
            self._count_text = False
            self._uncounted, self._uncounted_bytes = [], 0
        elif self._count_text:
            now = _clock()
            if not self._uncounted:
                self._uncounted_since = now
            for data in events_of(msg):
                self._uncounted.append(data)
                self._uncounted_bytes += len(data)
            if self._uncounted_bytes > _UNCOUNTED_BYTES or now - self._uncounted_since >= _UNCOUNTED_SECONDS:
                _ = self.text_chars
        if msg.trace_id and not self.trace_id:
            self.trace_id = msg.trace_id
        if msg.credential_kind and not self.credential_kind:
            self.credential_kind, self.credential_id = msg.credential_kind, msg.credential_id
            self.first_at = time.perf_counter()
        return msg

    async def next(self) -> pb.GenerateResponse | None:
        read = self._read
        if read is None:
            read = self._read = asyncio.ensure_future(self._call.read())
            read.add_done_callback(mark_retrieved)
        try:
            msg = await asyncio.shield(read)
        except asyncio.CancelledError:
            if read.done():  # the call itself was cancelled (ours, by cancel())
                self._read = None
            raise  # else our caller was cancelled: the read goes on until cancel() or its message
        except grpc.aio.AioRpcError as exc:
            self._read = None
            raise from_rpc_error(exc) from None
        self._read = None
        if msg is grpc.aio.EOF:
            return None
        return self._seen(msg)

    async def __aiter__(self) -> AsyncIterator[pb.GenerateResponse]:
        while (msg := await self.next()) is not None:
            yield msg

    def cancel(self) -> None:
        # Safe to call at any time; tells the upstream to stop working (and free its backend call).
        if not self._call.done():
            self._call.cancel()


async def _answer(call: grpc.aio.UnaryUnaryCall) -> pb.GenerateResponse:
    return await call


def _cancel_call(call: grpc.aio.UnaryUnaryCall) -> None:
    """End the call in gRPC's core only: its completion then ends the task that waits for the
    answer. UnaryUnaryCall.cancel() would also cancel that task while it waits for gRPC's batch
    (grpc/grpc#43360, see UpstreamStream)."""
    if not call.done():
        _aio_call.Call.cancel(call)


class _Authenticated:
    """The stub, with the edge's internal-caller credentials on every call (whatever the RPC)."""

    def __init__(self, stub: pb_grpc.UpstreamStub, metadata: grpc.aio.Metadata) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str):
        method = functools.partial(getattr(self._stub, name), metadata=self._metadata)
        setattr(self, name, method)  # looked up once per RPC name
        return method


def _serialized_call(open_call: Callable[..., Any], method: str, metadata: grpc.aio.Metadata | None) -> Any:
    """A Generate method's multi-callable taking requests serialized by _request (bytes in, no
    protobuf copy of the body), with the same internal-caller credentials as the stub's calls."""
    call = open_call(method, request_serializer=None, response_deserializer=pb.GenerateResponse.FromString)
    return call if metadata is None else functools.partial(call, metadata=metadata)


class UpstreamClient:
    def __init__(self, channel: grpc.aio.Channel, *, timeout: float = 600.0, small_timeout: float = 30.0,
                 models_ttl: float = 30.0, authorization: str = "", coalesce: bool = True) -> None:
        self._channel = channel
        # Ask the upstream to send the events that reach it together in one message
        # (STREAM_COALESCE; off only to measure what it saves).
        self._coalesce = coalesce
        # Built once: a tuple would be checked and converted by grpc.aio on every call.
        metadata = grpc.aio.Metadata(("authorization", authorization)) if authorization else None
        stub = pb_grpc.UpstreamStub(channel)
        self._stub = _Authenticated(stub, metadata) if metadata is not None else stub
        self._generate = _serialized_call(channel.unary_stream, _GENERATE, metadata)
        self._generate_unary = _serialized_call(channel.unary_unary, _GENERATE_UNARY, metadata)
        # Non-streaming answers go over GenerateUnary until an upstream says it has no such
        # method (an older one, while a deployment rolls): then over Generate, as before.
        self._unary = True
        self._generate_chunked = _serialized_call(channel.stream_stream, _GENERATE_CHUNKED, metadata)
        self._timeout = timeout
        self._small_timeout = small_timeout
        self._models_ttl = models_ttl
        self._models: list[pb.Model] | None = None
        self._by_id: dict[str, pb.Model] = {}
        self._aliases: dict[str, str] = {}
        self._models_at = 0.0
        self._models_inflight: asyncio.Future | None = None
        self.credential_statuses: list[pb.CredentialStatus] = []
        # Streams now open (a metrics gauge, set by the app): up when one opens, down when its
        # call ends, whichever way.
        self.open_streams: Any = None

    @classmethod
    def connect(cls, addr: str, **kw) -> "UpstreamClient":
        """A channel to one upstream (`host:port`) or several: any gRPC target naming more than
        one address, e.g. `ipv4:10.0.0.1:50051,10.0.0.2:50051`, or `dns:///upstream-headless:50051`
        (a headless Kubernetes Service: every ready pod). See SERVICE_CONFIG for how calls spread."""
        channel = grpc.aio.insecure_channel(addr, options=[
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ])
        return cls(channel, **kw)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    @staticmethod
    def _request(model: str, body: bytes | bytearray | memoryview, stream: bool, request_id: str,
                 caller: str, coalesce: bool = True) -> bytes:
        """A GenerateRequest already in wire form. The small fields are serialized by protobuf;
        the body field is appended by hand (a message field may come last on the wire), so the
        (maybe tens of MB) body is copied once, not into a message and again out of it.
        Streams are coalesced: the events that reach the upstream together come in one message."""
        head = pb.GenerateRequest(model=model, stream=stream, request_id=request_id, caller=caller,
                                  coalesce=stream and coalesce, early_headers=stream).SerializeToString()
        data_len = _varint(memoryview(body).nbytes)
        inner_len = len(_HTTPBODY_HEAD) + 1 + len(data_len) + memoryview(body).nbytes
        return b"".join((head, _BODY_TAG, _varint(inner_len), _HTTPBODY_HEAD, _DATA_TAG, data_len, body))

    def _call(self, model: str, body: Body, stream: bool, request_id: str, caller: str):
        """A Generate call (GenerateChunked for a large body), its request handed to gRPC."""
        if body_size(body) > CHUNKED_ABOVE:
            return self._generate_chunked(chunked_parts(model, body, stream, request_id, caller,
                                                        coalesce=self._coalesce), timeout=self._timeout)
        return self._generate(self._request(model, _joined(body), stream, request_id, caller, self._coalesce),
                              timeout=self._timeout)

    def stream(self, model: str, body: Body, *, request_id: str = "", caller: str = "") -> UpstreamStream:
        call = self._call(model, body, True, request_id, caller)
        del body
        gauge = self.open_streams
        if gauge is not None:
            gauge.inc()
            call.add_done_callback(lambda _call: gauge.dec())
        return UpstreamStream(call, count_text=True)

    def known_model(self, model: str) -> bool:
        """The model is in the cached catalogue (or is an alias): no I/O, for metric labels."""
        return model in self._by_id or model in self._aliases

    async def generate(self, model: str, body: Body, *, request_id: str = "",
                       caller: str = "") -> pb.GenerateResponse:
        """A non-streaming answer: the single response message (its chunk is the whole answer).

        A unary GenerateUnary call (a large body goes with GenerateChunked). A unary-unary call is
        about a third less gRPC work on each side than Generate's unary-stream call with one
        message (fewer batches, no read of the end of the stream; bench/grpc_hop.py)."""
        if not self._unary or body_size(body) > CHUNKED_ABOVE:
            return await self.generate_streamed(model, body, request_id=request_id, caller=caller)
        request = self._request(model, _joined(body), False, request_id, caller)
        del body
        call = self._generate_unary(request, timeout=self._timeout)
        # Awaited shielded: a caller cancelled (its client left) must not cancel the task that
        # waits for gRPC's batch (that loses the batch's native memory, grpc/grpc#43360);
        # cancelling the call ends that task, with the call.
        waiting = asyncio.ensure_future(_answer(call))
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            _cancel_call(call)
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() == _C.UNIMPLEMENTED and exc.details() in _NO_METHOD:
                log.warning("the upstream has no GenerateUnary (an older version): non-streaming calls use Generate")
                self._unary = False
                return await self.generate_streamed(model, request, request_id=request_id, caller=caller,
                                                    serialized=True)
            raise from_rpc_error(exc) from None

    async def generate_streamed(self, model: str, body: Body, *, request_id: str = "", caller: str = "",
                                serialized: bool = False) -> pb.GenerateResponse:
        """A non-streaming answer over the server-streaming Generate (a large body, or an older
        upstream); `serialized`: `body` is already the GenerateRequest in wire form."""
        if serialized:
            call = self._generate(body, timeout=self._timeout)
        else:
            call = self._call(model, body, False, request_id, caller)
        del body  # the call holds what it still has to send; a large body is not kept twice while we wait
        s = UpstreamStream(call)
        try:
            msg = await s.next()
            if msg is None:
                raise UpstreamError(502, "UNKNOWN", "the upstream returned no response")
            # Drain to EOF so a status sent after the message is not lost.
            while await s.next() is not None:
                pass
            return msg
        finally:
            s.cancel()

    async def count_tokens(self, model: str, body: bytes, *, request_id: str = "",
                           caller: str = "") -> pb.CountTokensResponse:
        req = pb.CountTokensRequest(model=model, request_id=request_id, caller=caller,
                                    body=httpbody_pb2.HttpBody(content_type="application/json", data=body))
        try:
            return await self._stub.CountTokens(req, timeout=self._small_timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def embed(self, model: str, body: bytes, *, request_id: str = "", caller: str = "") -> pb.EmbedResponse:
        """One Embed call: `body` is a Gemini batchEmbedContents request."""
        req = pb.EmbedRequest(model=model, request_id=request_id, caller=caller)
        req.body.content_type = "application/json"
        req.body.data = body
        try:
            return await self._stub.Embed(req, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def list_models(self, *, fresh: bool = False) -> list[pb.Model]:
        """The upstream's model list, cached for `models_ttl` seconds; concurrent callers share
        one call; a stale list is served when a refresh fails."""
        now = time.monotonic()
        if not fresh and self._models is not None and now - self._models_at < self._models_ttl:
            return self._models
        if self._models_inflight is None:
            self._models_inflight = asyncio.ensure_future(self._fetch_models())
        fut = self._models_inflight
        try:
            return await asyncio.shield(fut)
        except UpstreamError:
            if self._models is not None:
                return self._models
            raise
        finally:
            if fut.done() and self._models_inflight is fut:
                self._models_inflight = None

    async def _fetch_models(self) -> list[pb.Model]:
        try:
            resp = await self._stub.ListModels(pb.ListModelsRequest(), timeout=self._small_timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        self._models = list(resp.models)
        self.credential_statuses = list(resp.credentials)
        self._by_id = {m.id: m for m in self._models}
        self._aliases = dict(resp.aliases)
        self._models_at = time.monotonic()
        return self._models

    async def credentials(self) -> list[pb.CredentialStatus]:
        """Every credential's state, asked now (the admin console; never cached)."""
        await self._fetch_models()
        return self.credential_statuses

    async def set_credential_enabled(self, credential_id: str, enabled: bool) -> pb.CredentialStatus:
        try:
            return await self._stub.SetCredentialEnabled(
                pb.SetCredentialEnabledRequest(id=credential_id, enabled=enabled), timeout=self._small_timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def add_credential(self, content: bytes) -> pb.CredentialStatus:
        try:
            return await self._stub.AddCredential(pb.AddCredentialRequest(content=content),
                                                  timeout=self._small_timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def model(self, model_id: str) -> pb.Model | None:
        """The catalogue entry of a model (thinking range, limits), or None when the upstream
        does not list it or cannot be asked right now: callers then go on without it and the
        backend call itself reports what is wrong."""
        try:
            await self.list_models()
        except UpstreamError:
            return None
        return self._by_id.get(model_id)

    async def aliases(self) -> dict[str, str]:
        """The upstream's alias map (MODEL_ALIASES), cached with the model list."""
        await self.list_models()
        return self._aliases

    async def ready(self) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        try:
            resp = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING
