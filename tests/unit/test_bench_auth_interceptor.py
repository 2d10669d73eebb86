"""bench/auth_interceptor.py: the upstream's internal-auth check as a server interceptor (what
bench/grpc_hop.py's floorB weighs) admits and refuses as the service does, on a real grpc.aio
server in process."""
from __future__ import annotations

import grpc
import pytest

from bench.auth_interceptor import AuthInterceptor
from services.upstream import internal_auth
from services.upstream.internal_auth import Verifier, basic_credentials, htpasswd_line, parse_tokens

TOKEN = "bench-interceptor-token"


@pytest.fixture
async def channel():
    async def whoami(request: bytes, context) -> bytes:
        return internal_auth.current_identity().encode()

    handlers = {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
    server = grpc.aio.server(interceptors=[AuthInterceptor(Verifier(parse_tokens(htpasswd_line("edge", TOKEN))))])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Probe", handlers),
                                     grpc.method_handlers_generic_handler("grpc.health.v1.Health",
                                                                          {"Check": handlers["WhoAmI"]})))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


@pytest.mark.parametrize("method, authorization, answer", [
    ("/bench.Probe/WhoAmI", basic_credentials("edge", TOKEN), b"edge"),
    ("/bench.Probe/WhoAmI", basic_credentials("edge", TOKEN + "x"), None),
    ("/bench.Probe/WhoAmI", None, None),
    ("/grpc.health.v1.Health/Check", None, b""),  # open, as the upstream serves it: nobody recorded
])
async def test_interceptor_admits_and_refuses_as_the_service(channel, method: str, authorization: str | None,
                                                              answer: bytes | None):
    call = channel.unary_unary(method)
    metadata = (("authorization", authorization),) if authorization else ()
    if answer is not None:
        assert await call(b"", metadata=metadata, timeout=30) == answer
        return
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(b"", metadata=metadata, timeout=30)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, internal_auth.REFUSAL)
