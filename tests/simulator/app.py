"""The simulator as a Starlette app: every backend's routes, the /_sim control API, Google's 404."""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import errors, google_api, google_api_handlers
from .call import Call, shape_delivery
from .code_assist import protocol_routes
from .control_routes import bad, cloud_control_routes, control_routes
from .state import Simulator

log = logging.getLogger("tests.simulator")


def cloud_routes(sim: Simulator) -> list[Route]:
    def make(path: str, backend: str, handler: Callable[..., Awaitable[Any]]) -> Route:
        async def endpoint(request: Request) -> Response:
            call = Call(sim, "unknown", request)
            try:
                reply, fault = await handler(call, backend)
            except Exception:  # a simulator bug: still answer, and keep the record honest
                log.exception("simulator error on %s", path)
                return google_api_handlers.crashed(call, backend)
            return shape_delivery(call, reply, fault)

        return Route(path, endpoint, methods=["GET", "POST"])

    return google_api.routes(make)


def _unknown_route(sim: Simulator) -> Route:
    """Anything else gets Google's 404, and is recorded so a wrong path is easy to spot."""
    async def unknown(request: Request) -> Response:
        if request.url.path.startswith("/_sim/"):
            return bad("no such control endpoint (or method)", 404)
        call = Call(sim, "unknown", request)
        return shape_delivery(call, call.error(404, errors.google_error(404)), None)

    return Route("/{path:path}", unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/_sim/"):
        return bad(str(exc.detail), exc.status_code)
    body = errors.google_error(exc.status_code, None if exc.status_code == 404 else str(exc.detail))
    return Response(orjson.dumps(body), exc.status_code, media_type="application/json")


def create_app(strict_accounts: bool = False, chunk_delay: float = 0.0, latency: float = 0.0,
               sim: Simulator | None = None, embed_response_ids: bool = False) -> Starlette:
    """A simulator app; its state is `app.state.sim` (a Simulator)."""
    sim = sim or Simulator(strict_accounts=strict_accounts, chunk_delay=chunk_delay, latency=latency,
                           embed_response_ids=embed_response_ids)
    app = Starlette(routes=[*protocol_routes(sim), *cloud_routes(sim), *control_routes(sim),
                            *cloud_control_routes(sim), _unknown_route(sim)],
                    exception_handlers={HTTPException: _http_error})
    app.state.sim = sim
    return app
