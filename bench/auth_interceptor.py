"""The upstream's internal-auth check as a grpc.aio server interceptor: bench/grpc_hop.py's
floorB installs it (pseudo-option ["interceptor", 1]) to weigh what an interceptor costs per
call against the plain floor.

The upstream itself checks credentials per handler (services/upstream/internal_auth.guarded):
with an interceptor, grpc.aio runs a chain of coroutines (interceptor, continuation, lookup)
for every call, health checks included. The check and the refusal are the service's own
(`internal_auth.admit`, `internal_auth.REFUSAL`), so the two cannot drift apart.
"""
from __future__ import annotations

from typing import Awaitable, Callable

import grpc

from services.upstream.internal_auth import REFUSAL, Verifier, admit

# As the upstream serves them: health and reflection unguarded (see services/upstream/server.py).
OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


async def _refuse(request, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSAL)


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    kw = dict(request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(_refuse, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(_refuse, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(_refuse, **kw)
    return grpc.stream_stream_rpc_method_handler(_refuse, **kw)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """grpc.aio runs the interceptor and then the handler in the same task, one task per call,
    so the caller recorded by `admit` here is the handler's and no other call's."""

    def __init__(self, verifier: Verifier) -> None:
        self._verifier = verifier

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable],
                                details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS):
            return handler
        if not admit(self._verifier, details.invocation_metadata):
            return _refusing(handler)
        return handler
