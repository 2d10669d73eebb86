"""The gRPC server: the Upstream servicer (servicer.py) registered, plus health and reflection.

Shutdown (SIGTERM/SIGINT): health turns NOT_SERVING, new calls are refused with
UNAVAILABLE/DRAINING, in-flight calls get DRAIN_SECONDS to finish, then the process exits 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys

import grpc
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gemini_cli.upstream.v1 import upstream_pb2, upstream_pb2_grpc

from . import chunked, internal_auth
from .catalog import build_catalog
from .code_assist import CodeAssistClient
from .pool import Pool
from .project import ProjectResolver
from .servicer import MAX_MESSAGE_BYTES, UpstreamServicer
from .settings import Settings
from services.metrics_server import MetricsServer
from .token_endpoint import TokenEndpoint
from .transport import Transport

log = logging.getLogger(__name__)

SERVICE_NAME = upstream_pb2.DESCRIPTOR.services_by_name["Upstream"].full_name


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
