"""The edge's only way to the upstream service: the gRPC contract, over one channel per process.

Failures become `UpstreamError` (upstream_errors.py); a stream is read as an `UpstreamStream`
(upstream_stream.py); Generate's requests are put in wire form by generate_wire.py.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import Any, Callable

import grpc
from grpc.aio import _call as _aio_call  # Call.cancel without the task cancel, see _cancel_call
from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2 as pb
from gemini_cli.upstream.v1 import upstream_pb2_grpc as pb_grpc
from services.edge.generate_wire import CHUNKED_ABOVE, Body, body_size, chunked_parts, generate_request, joined
from services.edge.upstream_errors import UpstreamError, from_rpc_error
from services.edge.upstream_stream import UpstreamStream

log = logging.getLogger("edge.upstream")

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
    """A Generate method's multi-callable taking requests serialized by generate_request (bytes in, no
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
            # No bandwidth-delay probing: with it, every answer's first data made this side
            # send a PING (and the upstream answer it) to size a receive window that answers of
            # text never fill, on the way to each stream's first chunk: ~4.7 fewer futex
            # wake-ups per streamed request here (strace), less CPU on both sides. The upstream's
            # server does the same (services/upstream/server.py).
            ("grpc.http2.bdp_probe", 0),
        ])
        return cls(channel, **kw)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def _call(self, model: str, body: Body, stream: bool, request_id: str, caller: str):
        """A Generate call (GenerateChunked for a large body), its request handed to gRPC."""
        if body_size(body) > CHUNKED_ABOVE:
            return self._generate_chunked(chunked_parts(model, body, stream, request_id, caller,
                                                        coalesce=self._coalesce), timeout=self._timeout)
        return self._generate(generate_request(model, joined(body), stream, request_id, caller, self._coalesce),
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
        request = generate_request(model, joined(body), False, request_id, caller)
        del body
        call = self._generate_unary(request, timeout=self._timeout)
        # Awaited shielded: a caller cancelled (its client left) must not cancel the task that
        # waits for gRPC's batch (that loses the batch's native memory, grpc/grpc#43360);
        # cancelling the call ends that task, with the call.
        waiting = asyncio.get_running_loop().create_task(_answer(call))  # see UpstreamStream.next
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            _cancel_call(call)
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED and exc.details() in _NO_METHOD:
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
