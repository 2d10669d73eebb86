"""The gRPC server: a thin servicer over the pool, plus health and reflection.

Shutdown (SIGTERM/SIGINT): health turns NOT_SERVING, new calls are refused with
UNAVAILABLE/DRAINING, in-flight calls get DRAIN_SECONDS to finish, then the process exits 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import signal
import sys
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple

import grpc
import orjson
from google.api import httpbody_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gemini_cli.upstream.v1 import upstream_pb2, upstream_pb2_grpc

from . import chunked, errors, internal_auth
from .catalog import ModelInfo, build_catalog
from .code_assist import Chunk, CodeAssistClient
from .errors import Draining, InvalidRequest, UpstreamError
from .metrics import UpstreamMetrics
from .pool import Entry, Pool
from .pool_entry import CredentialReport, build_report
from . import credential_admin
from .credential_admin import CredentialAdminError
from .project import ProjectResolver
from .settings import Settings
from services.future_exceptions import mark_retrieved
from services.metrics_server import MetricsServer
from .token_endpoint import TokenEndpoint
from .backend_wait import count_backend_wait
from .transport import Transport

log = logging.getLogger(__name__)

SERVICE_NAME = upstream_pb2.DESCRIPTOR.services_by_name["Upstream"].full_name
# Inline media travels inside requests; the edge caps request sizes itself.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_STATES = {"READY": upstream_pb2.CredentialStatus.READY, "COOLING": upstream_pb2.CredentialStatus.COOLING,
           "DEAD": upstream_pb2.CredentialStatus.DEAD, "DISABLED": upstream_pb2.CredentialStatus.DISABLED}
_USAGE_FIELDS = (("promptTokenCount", "prompt_tokens"), ("candidatesTokenCount", "candidates_tokens"),
                 ("thoughtsTokenCount", "thoughts_tokens"), ("totalTokenCount", "total_tokens"),
                 ("cachedContentTokenCount", "cached_tokens"), ("toolUsePromptTokenCount", "tool_use_prompt_tokens"))


def model_id(raw: str) -> str:
    model = raw.strip().removeprefix("models/")
    if not _MODEL_ID.match(model):
        # Never echo a long id: the message travels in gRPC metadata, which has a size limit.
        shown = raw if len(raw) <= 64 else raw[:64] + "…"
        raise InvalidRequest(f"invalid model id {shown!r}" if raw else "model is required")
    return model


def request_body(body: httpbody_pb2.HttpBody) -> bytes:
    if not body.data:
        raise InvalidRequest("request body is required (a Gemini request as JSON)")
    return body.data


def usage_proto(usage: dict[str, Any]) -> upstream_pb2.Usage:
    values = {}
    for src, dst in _USAGE_FIELDS:
        value = usage.get(src)
        if isinstance(value, int) and not isinstance(value, bool):
            values[dst] = value
    return upstream_pb2.Usage(**values)


def response_message(chunk: Chunk, entry: Entry | None) -> upstream_pb2.GenerateResponse:
    msg = upstream_pb2.GenerateResponse()
    # Set in place: chunk=HttpBody(...) would copy the payload twice.
    msg.chunk.content_type = "application/json"
    msg.chunk.data = chunk.data
    if chunk.usage is not None:
        msg.usage.CopyFrom(usage_proto(chunk.usage))
    if entry is not None:  # first message only
        msg.trace_id = chunk.trace_id
        msg.credential_id = entry.cred.id
        msg.credential_kind = entry.cred.kind
    return msg


def credential_status(r: CredentialReport) -> upstream_pb2.CredentialStatus:
    status = upstream_pb2.CredentialStatus(
        id=r.id, kind=r.kind, state=_STATES[r.state], project=r.project, detail=r.detail,
        cooling_until=r.cooling_until, requests=r.requests, failures=r.failures, auth=r.auth,
        priority=r.priority, weight=r.weight, location=r.location, models=list(r.models),
        unsupported_models=list(r.unsupported), last_error=r.last_error, proxied=r.proxy, tier=r.tier)
    for model, (fraction, reset) in sorted(r.quota.items()):
        status.quota.add(model=model, remaining_fraction=fraction, reset_time=reset)
    return status


def batch_message(batch: list[Chunk], entry: Entry | None) -> upstream_pb2.GenerateResponse:
    """One message for the chunks that arrived together (GenerateRequest.coalesce): each in
    `chunks`, in order; the usage of the last chunk that had one (Gemini's is cumulative)."""
    msg = upstream_pb2.GenerateResponse()
    usage = None
    add = msg.chunks.add
    for chunk in batch:
        body = add()
        body.content_type = "application/json"
        body.data = chunk.data
        if chunk.usage is not None:
            usage = chunk.usage
    if usage is not None:
        msg.usage.CopyFrom(usage_proto(usage))
    if entry is not None:  # first message only
        msg.trace_id = batch[0].trace_id
        msg.credential_id = entry.cred.id
        msg.credential_kind = entry.cred.kind
    return msg


async def _headers_sent(headers: asyncio.Future) -> None:
    """Wait until the early headers (GenerateRequest.early_headers) went, never cancelling
    their send, even when our own task is: a batch whose awaiting task is cancelled is lost
    (grpc/grpc#43360)."""
    if not headers.done():
        await asyncio.wait((headers,))


class _CallFields(NamedTuple):
    """What a Generate's metrics and log line need of its request (not its body)."""
    model: str
    stream: bool
    caller: str

    @classmethod
    def of(cls, request: upstream_pb2.GenerateRequest) -> "_CallFields":
        return cls(request.model, request.stream, request.caller)


class UpstreamServicer(upstream_pb2_grpc.UpstreamServicer):
    def __init__(self, pool: Pool, catalog: list[ModelInfo], aliases: dict[str, str] | None = None) -> None:
        self._pool = pool
        self._aliases = aliases or {}
        self._catalog = catalog
        self.draining = False
        known = {m.id for m in catalog} | set(self._aliases)
        self.metrics = UpstreamMetrics(pool.report, lambda model: model.removeprefix("models/") in known,
                                       pool.sharing)

    def _model(self, raw: str) -> str:
        model = model_id(raw)
        return self._aliases.get(model, model)

    def _check_open(self) -> None:
        if self.draining:
            raise Draining("the upstream is shutting down; retry on another instance")

    @staticmethod
    def _generate_failed(err: UpstreamError, rid: str) -> tuple[str, Any]:
        """A Generate's failure logged: (its outcome label, the status to abort the call with)."""
        desc = errors.describe(err)
        outcome = f"{desc.code.name}/{desc.reason}"
        log.log(logging.WARNING if desc.code is not grpc.StatusCode.INVALID_ARGUMENT else logging.INFO,
                "generate id=%s failed: %s: %s", rid, outcome, desc.message)
        return outcome, errors.to_rpc_status(desc)

    def _generate_done(self, call: "_CallFields", rid: str, started: float, waited: list[float],
                       delivering: float, chunks: int, cred_id: str, cred_kind: str, outcome: str) -> None:
        elapsed = time.monotonic() - started
        self.metrics.observe("generate", call.model, cred_id, cred_kind, outcome, elapsed)
        if chunks:
            self.metrics.observe_overhead(call.model, call.stream,
                                          max(0.0, elapsed - waited[0] - delivering))
        log.info("generate id=%s caller=%s model=%s stream=%s credential=%s chunks=%d outcome=%s ms=%.0f",
                 rid, internal_auth.caller_of(call.caller), call.model, call.stream, cred_id or "-", chunks,
                 outcome, elapsed * 1000)

    async def GenerateUnary(self, request: upstream_pb2.GenerateRequest,
                            context: grpc.aio.ServicerContext) -> upstream_pb2.GenerateResponse:
        """Generate's non-streaming answer as a unary call: measured, logged and failing alike."""
        started = time.monotonic()
        waited = count_backend_wait()
        rid = request.request_id or uuid.uuid4().hex
        cred_id = cred_kind = ""
        outcome = "ok"
        try:
            self._check_open()
            if request.stream:
                raise InvalidRequest("GenerateUnary answers non-streaming calls only: use Generate to stream")
            model = self._model(request.model)
            chunk, entry = await self._pool.generate(model, request_body(request.body), rid)
            cred_id, cred_kind = entry.cred.id, entry.cred.kind
            return response_message(chunk, entry)
        except UpstreamError as err:
            outcome, status = self._generate_failed(err, rid)
            await context.abort_with_status(status)
            raise  # not reached: abort raises
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._generate_done(_CallFields.of(request), rid, started, waited, 0.0, 1 if cred_id else 0, cred_id,
                                cred_kind, outcome)

    async def Generate(self, request: upstream_pb2.GenerateRequest,
                       context: grpc.aio.ServicerContext) -> AsyncIterator[upstream_pb2.GenerateResponse]:
        started = time.monotonic()
        waited = count_backend_wait()
        delivering = 0.0  # time handing messages to gRPC (the edge's pace), not ours either
        rid = request.request_id or uuid.uuid4().hex
        call = _CallFields.of(request)
        coalesce = request.coalesce
        early_headers = request.early_headers
        headers: asyncio.Future | None = None
        chunks = 0
        cred_id = cred_kind = ""
        outcome = "ok"
        try:
            body = request.body
            # The request is not kept: a stream lasts minutes and the request's body (a long
            # conversation: 100 KB and more) would stay with it, once in the message and once
            # as bytes. The pool lets go of the body once the answer has started (see
            # generate_call for what gRPC itself would keep).
            del request
            self._check_open()
            model = self._model(call.model)
            body = request_body(body)
            if not call.stream:
                chunk, entry = await self._pool.generate(model, body, rid)
                cred_id, cred_kind = entry.cred.id, entry.cred.kind
                chunks = 1
                msg = response_message(chunk, entry)
                handed = time.monotonic()
                yield msg
                delivering += time.monotonic() - handed
            else:
                if early_headers:  # see GenerateRequest.early_headers
                    # Sent while the backend call starts, not before it (the first chunk waits
                    # for neither); waited for by _headers_sent, never cancelled.
                    headers = asyncio.ensure_future(context.send_initial_metadata(()))
                    headers.add_done_callback(mark_retrieved)
                stream = self._pool.stream_batches(model, body, rid)
                del body
                try:
                    async for batch, entry in stream:
                        if headers is not None:  # gRPC's first write must not send them again
                            await _headers_sent(headers)
                            headers = None
                        first = chunks == 0
                        chunks += len(batch)
                        if first:
                            cred_id, cred_kind = entry.cred.id, entry.cred.kind
                        if coalesce:
                            msg = batch_message(batch, entry if first else None)
                            handed = time.monotonic()
                            yield msg
                            delivering += time.monotonic() - handed
                        else:
                            for chunk in batch:
                                msg = response_message(chunk, entry if first else None)
                                first = False
                                handed = time.monotonic()
                                yield msg
                                delivering += time.monotonic() - handed
                            chunk = None
                        # Sent: neither is held while the next batch is read.
                        batch = msg = None
                finally:
                    await stream.aclose()
                    if headers is not None:  # gone before the status is sent
                        await _headers_sent(headers)
        except UpstreamError as err:
            outcome, status = self._generate_failed(err, rid)
            await context.abort_with_status(status)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._generate_done(call, rid, started, waited, delivering, chunks, cred_id, cred_kind, outcome)

    async def GenerateChunked(self, request_iterator: AsyncIterator[chunked.Part],
                              context: grpc.aio.ServicerContext) -> AsyncIterator[upstream_pb2.GenerateResponse]:
        """Generate with the body received in parts (see services/upstream/chunked.py)."""
        try:
            self._check_open()
            request = await chunked.receive(request_iterator, MAX_MESSAGE_BYTES)
        except UpstreamError as err:
            desc = errors.describe(err)
            log.info("generate (chunked) refused: %s/%s: %s", desc.code.name, desc.reason, desc.message)
            await context.abort_with_status(errors.to_rpc_status(desc))
            return
        answer = self.Generate(request, context)  # type: ignore[arg-type]  (reads the same fields)
        del request  # Generate lets go of the body once the answer has started
        async for msg in answer:
            yield msg

    async def generate_call(self, _requests: AsyncIterator[upstream_pb2.GenerateRequest],
                            context: grpc.aio.ServicerContext) -> None:
        """Generate as this server serves it: a stream-stream handler that reads the call's one
        request with context.read() (on the wire a unary-stream call is the same). grpc.aio's
        unary-stream handler keeps the request, as the bytes received and as the parsed
        message, until the call ends: minutes for a stream, with its whole body. Messages are
        written here as grpc.aio writes a generator's, so there is no extra hop per message."""
        request = await context.read()
        if request is grpc.aio.EOF:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Generate received no request")
        answer = self.Generate(request, context)
        del request
        write = context.write
        async for msg in answer:
            await write(msg)
            msg = None  # written: not held while the next one is made

    async def _unary(self, op: str, name: str, request, context: grpc.aio.ServicerContext,
                     call: Callable[[str, bytes | memoryview, str], Awaitable[tuple[Any, Any]]]):
        """One unary pool call (CountTokens, Embed): (request id, model, result, pool entry), or
        the RPC aborted with the pool's error; measured and logged the same way for both."""
        rid = request.request_id or uuid.uuid4().hex
        started = time.monotonic()
        try:
            self._check_open()
            model = self._model(request.model)
            result, entry = await call(model, request_body(request.body), rid)
        except UpstreamError as err:
            desc = errors.describe(err)
            self.metrics.observe(op, request.model, "", "", f"{desc.code.name}/{desc.reason}",
                                 time.monotonic() - started)
            log.warning("%s id=%s failed: %s/%s: %s", name, rid, desc.code.name, desc.reason, desc.message)
            await context.abort_with_status(errors.to_rpc_status(desc))
            raise  # not reached: abort raises
        self.metrics.observe(op, request.model, entry.cred.id, entry.cred.kind, "ok", time.monotonic() - started)
        return rid, model, result, entry

    async def CountTokens(self, request: upstream_pb2.CountTokensRequest,
                          context: grpc.aio.ServicerContext) -> upstream_pb2.CountTokensResponse:
        rid, model, result, entry = await self._unary("count_tokens", "count_tokens", request, context,
                                                      self._pool.count_tokens)
        log.info("count_tokens id=%s caller=%s model=%s credential=%s", rid, internal_auth.caller_of(request.caller),
                 model, entry.cred.id)
        return upstream_pb2.CountTokensResponse(
            total_tokens=_total_tokens(result),
            body=httpbody_pb2.HttpBody(content_type="application/json", data=orjson.dumps(result)))

    async def Embed(self, request: upstream_pb2.EmbedRequest,
                    context: grpc.aio.ServicerContext) -> upstream_pb2.EmbedResponse:
        rid, model, result, entry = await self._unary("embeddings", "embed", request, context, self._pool.embed)
        log.info("embed id=%s caller=%s model=%s credential=%s n=%d", rid, internal_auth.caller_of(request.caller), model,
                 entry.cred.id, len(result.vectors))
        return upstream_pb2.EmbedResponse(
            body=httpbody_pb2.HttpBody(content_type="application/json",
                                       data=orjson.dumps({"embeddings": result.vectors})),
            prompt_tokens=result.tokens, credential_id=entry.cred.id, credential_kind=entry.cred.kind,
            trace_id=result.trace_id)

    async def ListModels(self, request: upstream_pb2.ListModelsRequest,
                         context: grpc.aio.ServicerContext) -> upstream_pb2.ListModelsResponse:
        await self._pool.ensure_loaded()
        served = [m.to_proto() for m in self._catalog if self._pool.can_serve(m.id, m.kinds, m.embedding)]
        resp = upstream_pb2.ListModelsResponse(models=served, aliases=self._aliases)
        for r in self._pool.report():
            resp.credentials.append(credential_status(r))
        sharing = self._pool.sharing()
        if sharing is not None:
            resp.sharing.configured = True
            resp.sharing.connected = sharing.connected
            resp.sharing.detail = sharing.detail
            resp.sharing.replica_id = sharing.replica_id
        if not self._pool.entries:
            # Nothing loaded: say where we looked, so the operator sees it next to the models.
            resp.credentials.append(upstream_pb2.CredentialStatus(
                id="(none)", kind="", state=upstream_pb2.CredentialStatus.STATE_UNSPECIFIED,
                detail=self._pool.no_credentials_message()))
        return resp


    # --- admin -------------------------------------------------------------------------------

    def _status_of(self, entry: Entry) -> upstream_pb2.CredentialStatus:
        return credential_status(build_report([entry], time.time())[0])

    async def _admin_abort(self, context: grpc.aio.ServicerContext, err: CredentialAdminError) -> None:
        await context.abort(getattr(grpc.StatusCode, err.code), err.message)

    async def SetCredentialEnabled(self, request: upstream_pb2.SetCredentialEnabledRequest,
                                   context: grpc.aio.ServicerContext) -> upstream_pb2.CredentialStatus:
        await self._pool.ensure_loaded()
        entry = next((e for e in self._pool.entries if e.cred.id == request.id), None)
        if entry is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no credential has that id")
        try:
            await credential_admin.set_enabled(entry, request.enabled)
        except CredentialAdminError as err:
            await self._admin_abort(context, err)
        except OSError as exc:
            log.warning("credential %s: could not rewrite its file: %s", entry.cred.id, exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "its credential file cannot be rewritten")
        if self._pool.shared is not None:
            self._pool.shared.switched(entry.cred, request.enabled)
        log.info("credential %s %s by %s", entry.cred.id, "enabled" if request.enabled else "disabled",
                 internal_auth.caller_of(""))
        return self._status_of(entry)

    async def AddCredential(self, request: upstream_pb2.AddCredentialRequest,
                            context: grpc.aio.ServicerContext) -> upstream_pb2.CredentialStatus:
        await self._pool.ensure_loaded()
        try:
            kind, what, payload = credential_admin.recognise(request.content)
            directory = credential_admin.upload_dir(self._pool.settings, kind)
            if credential_admin.already_in_pool(self._pool.entries, kind, payload):
                raise CredentialAdminError("ALREADY_EXISTS", "the pool already has this credential")
            path = await asyncio.to_thread(credential_admin.write_new, directory, kind, payload)
        except CredentialAdminError as err:
            await self._admin_abort(context, err)
        except OSError as exc:
            log.warning("could not write an uploaded credential: %s", exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the credentials directory cannot be written")
        await self._pool.reload()
        entry = next((e for e in self._pool.entries if getattr(e.cred, "path", None) == path), None)
        if entry is None:
            path.unlink(missing_ok=True)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the pool could not use this credential")
        log.info("credential %s (%s) added by %s", entry.cred.id, what, internal_auth.caller_of(""))
        return self._status_of(entry)


class _Handlers:
    """Catches the method handlers the generated code would register."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.handlers = dict(handlers)


def _deserialize_part(raw: bytes) -> chunked.Part:
    try:
        return chunked.part_from_wire(raw)
    except chunked.WireError as exc:
        raise ValueError(f"malformed GenerateRequestPart: {exc}") from None


def add_servicer(servicer: UpstreamServicer, server: grpc.aio.Server, verifier: internal_auth.Verifier) -> None:
    """The generated registration, except that GenerateChunked's parts are read by hand (their
    `data` a view of the received bytes, not protobuf's copies), that Generate's request is
    read by generate_call (so that no copy of it stays for the length of the stream), and that
    every method checks its caller's internal credentials first (internal_auth.guarded)."""
    caught = _Handlers()
    upstream_pb2_grpc.add_UpstreamServicer_to_server(servicer, caught)
    caught.handlers["Generate"] = grpc.stream_stream_rpc_method_handler(
        servicer.generate_call, request_deserializer=upstream_pb2.GenerateRequest.FromString,
        response_serializer=upstream_pb2.GenerateResponse.SerializeToString)
    caught.handlers["GenerateChunked"] = grpc.stream_stream_rpc_method_handler(
        servicer.GenerateChunked, request_deserializer=_deserialize_part,
        response_serializer=upstream_pb2.GenerateResponse.SerializeToString)
    handlers = {name: internal_auth.guarded(handler, verifier) for name, handler in caught.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def _warmup(pool: Pool) -> None:
    try:
        await pool.warmup()
    except Exception:  # a warm-up failure must not go unnoticed, nor stop the server
        log.exception("credential warm-up failed")


def _total_tokens(result: Any) -> int:
    total = result.get("totalTokens", 0) if isinstance(result, dict) else 0
    try:
        return int(total)
    except (TypeError, ValueError):
        return 0


def _write_stats() -> None:
    figures = {"process": "upstream", "tasks": len(asyncio.all_tasks()), "gc_objects": len(gc.get_objects())}
    sys.stderr.write("stats " + orjson.dumps(figures).decode() + "\n")
    sys.stderr.flush()


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop` is set); returns the exit code."""
    try:
        verifier = internal_auth.verifier_for(settings.internal_tokens_file, settings.upstream_listen)
    except internal_auth.TokenFileError as exc:
        log.error("%s", exc)
        return 2
    if verifier.callers is None:
        log.warning("INTERNAL_TOKENS_FILE is not set: every process on this host can call the upstream")
    try:
        transport = Transport.from_settings(settings)  # one backend HTTP client for the process
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    http = TokenEndpoint(transport)  # token refreshes share the backends' client
    client = CodeAssistClient(settings, transport)
    resolver = ProjectResolver(client, poll_interval=settings.onboard_poll_interval,
                               max_polls=settings.onboard_max_polls)
    pool = Pool(settings, http, client, resolver)
    await pool.start()
    servicer = UpstreamServicer(pool, build_catalog(settings.models), settings.model_aliases)

    # No interceptor: each Upstream method checks internal credentials itself (add_servicer).
    # Health and reflection stay open: health is probed by the kubelet, Envoy and load
    # balancers, which carry no credentials; reflection only describes the API (proto/ is
    # public), it serves nothing and spends nothing.
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
        # The receive window stays at its default instead of growing with the measured
        # bandwidth: a large body sent in parts (GenerateChunked) then waits at the edge, not
        # in this process's buffers (with probing, ~8 MiB more held here for a 27 MiB body).
        ("grpc.http2.bdp_probe", 0),
        # The edge keeps its channel alive with pings every 30 s, also between calls: accept
        # them instead of answering GOAWAY "too_many_pings".
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        # Every 5 minutes a connection is asked to close (GOAWAY; calls on it go on, up to the
        # grace, longer than the edge's 600 s call deadline), so an edge that spreads calls over
        # a DNS name (several replicas) resolves it again and finds replicas added since.
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 660_000),
    ])
    add_servicer(servicer, server, verifier)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(settings.upstream_listen)
    except RuntimeError as exc:
        log.error("cannot listen on %s: %s", settings.upstream_listen, exc)
        return 2
    if port == 0:
        log.error("cannot listen on %s", settings.upstream_listen)
        return 2
    await server.start()
    metrics_server = MetricsServer.start(servicer.metrics.registry, settings.metrics_listen,
                                         settings.upstream_metrics_port, "upstream")
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info("upstream listening on %s", settings.upstream_listen)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        # `kill -USR1`: one stats line on stderr (soak runs watch tasks this way; nothing public).
        loop.add_signal_handler(signal.SIGUSR1, _write_stats)

    warmup: asyncio.Task[None] | None = None
    if settings.startup_warmup:
        warmup = asyncio.create_task(_warmup(pool), name="credential-warmup")
    else:
        await pool.ensure_loaded()

    await stop.wait()
    log.info("shutting down: draining for up to %gs", settings.drain_seconds)
    servicer.draining = True
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=settings.drain_seconds)
    if warmup is not None and not warmup.done():
        warmup.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warmup
    await pool.close()
    await transport.aclose()
    if metrics_server is not None:
        metrics_server.stop()
    log.info("upstream stopped")
    return 0
