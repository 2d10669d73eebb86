"""Code Assist's protocol routes (`/v1internal:*` and `/token`): checks in README order, then the answer."""
from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import errors, responder
from .accounts import Account
from .call import SSE, Call, now_iso, read_json, response_id, shape_delivery, take_fault, trace_id
from .faults import Fault
from .models import KNOWN_MODELS
from .oauth import refresh
from .reply import Reply
from .request_fields import RequestError
from .state import Simulator
from .validation import validate

log = logging.getLogger("tests.simulator")

V1 = "/v1internal"


# The handlers below answer an authenticated call whose fault (if any) did not replace the answer.

def _project_ok(acct: Account, body: dict[str, Any]) -> bool:
    return acct.onboarded and body.get("project") == acct.project


def _model_problem(call: Call) -> Reply | None:
    if not call.model:
        return call.error(400, errors.google_error(400, "model is required."))
    if call.model not in KNOWN_MODELS:
        return call.error(404, errors.google_error(404))
    return None


async def _generate(call: Call, acct: Account, body: dict[str, Any]) -> Reply:
    if not _project_ok(acct, body):
        return call.error(403, errors.google_error(403))
    problem = _model_problem(call)
    if problem is not None:
        return problem
    model = call.model
    assert model is not None
    request = body.get("request")
    try:
        validate(model, request)
        answer = responder.answer(model, request)
    except RequestError as exc:
        return call.error(400, errors.google_error(400, str(exc)))
    seq = call.entry["seq"]
    trace, rid, created = trace_id(seq), response_id(seq), now_iso()
    call.entry["trace_id"] = trace  # what a test expects the gateway to pass on
    headers = [(b"x-cloudaicompanion-trace-id", trace.encode())]
    if call.op == "generate":
        reply = call.json(200, {"response": responder.unary_response(answer, model, rid, created), "traceId": trace},
                          headers)
    elif call.request.query_params.get("alt") == "sse":
        pieces = [b"data: " + orjson.dumps({"response": chunk, "traceId": trace}) + b"\r\n\r\n"
                  for chunk in responder.stream_responses(answer, model, rid, created)]
        reply = Reply(200, pieces, SSE, entry=call.entry, streaming=True,
                      headers=[(b"cache-control", b"no-cache"), *headers])
    else:
        # Without alt=sse the backend answers the stream as one JSON array of responses.
        reply = call.json(200, [{"response": chunk, "traceId": trace}
                                for chunk in responder.stream_responses(answer, model, rid, created)], headers)
    if answer.chunk_delay is not None:
        reply.between = answer.chunk_delay
    if answer.burst:
        reply.burst()
    return reply


async def _count(call: Call, acct: Account, body: dict[str, Any]) -> Reply:
    problem = _model_problem(call)
    if problem is not None:
        return problem
    try:
        total = responder.count_tokens(body.get("request"))
    except RequestError as exc:
        return call.error(400, errors.google_error(400, str(exc)))
    return call.json(200, {"totalTokens": total})


async def _load(call: Call, acct: Account, body: dict[str, Any]) -> Reply:
    return call.json(200, call.sim.accounts.load(acct))


async def _onboard(call: Call, acct: Account, body: dict[str, Any]) -> Reply:
    status, payload = call.sim.accounts.onboard(acct, body)
    return call.json(status, payload)


async def _operation(call: Call, acct: Account, body: dict[str, Any]) -> Reply:
    name = "operations/" + call.request.path_params["op_id"]
    result = call.sim.accounts.poll(acct, name)
    if result is None:
        return call.error(404, errors.google_error(404, f"Operation {name} not found."))
    return call.json(200, result)


async def _quota(call: Call, acct: Account, body: dict[str, Any]) -> Reply:
    if not _project_ok(acct, body):
        return call.error(403, errors.google_error(403))
    reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))
    buckets = [{"remainingAmount": str(int(1000 * acct.quota.get(m, 1.0))), "remainingFraction": acct.quota.get(m, 1.0),
                "resetTime": reset, "tokenType": "REQUESTS", "modelId": m} for m in KNOWN_MODELS]
    return call.json(200, {"buckets": buckets})


Handler = Callable[[Call, Account, dict[str, Any]], Awaitable[Reply]]


def _model_of(op: str, body: dict[str, Any]) -> str | None:
    if op in ("generate", "stream"):
        model = body.get("model")
        return model if isinstance(model, str) else None
    if op == "count":
        inner = body.get("request")
        model = inner.get("model") if isinstance(inner, dict) else None
        if isinstance(model, str):
            return model.removeprefix("models/")
    return None


def protocol_endpoint(sim: Simulator, op: str, handler: Handler | None) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        call = Call(sim, op, request)
        try:
            return await _serve(call, handler)
        except Exception:  # a simulator bug: still answer, and keep the record honest
            log.exception("simulator error on %s", op)
            return call.error(500, errors.google_error(500))

    return endpoint


async def _serve(call: Call, handler: Handler | None) -> Reply:
    if handler is None:  # the token endpoint reads a form, not JSON
        reply, fault = await refresh(call)
    else:
        reply, fault = await _protocol(call, handler)
    return shape_delivery(call, reply, fault)


async def _protocol(call: Call, handler: Handler) -> tuple[Reply, Fault | None]:
    body, bad = await read_json(call) if call.request.method == "POST" else ({}, None)
    acct, auth_problem = call.sim.accounts.identify(call.request.headers.get("authorization"))
    call.entry["account"] = acct.refresh_token if acct else None
    if bad is not None:
        return bad, None
    call.model = _model_of(call.op, body)
    call.entry["model"] = call.model
    fault, replaced = take_fault(call)
    if replaced is not None:
        return replaced, None
    if auth_problem is not None or acct is None:
        return call.error(401, errors.unauthenticated(auth_problem or "CREDENTIALS_MISSING")), fault
    return await handler(call, acct, body), fault


def protocol_routes(sim: Simulator) -> list[Route]:
    def route(path: str, op: str, handler: Handler | None, method: str = "POST") -> Route:
        return Route(path, protocol_endpoint(sim, op, handler), methods=[method])

    return [
        route("/token", "refresh", None),
        route(f"{V1}:loadCodeAssist", "load", _load),
        route(f"{V1}:onboardUser", "onboard", _onboard),
        route(f"{V1}/operations/{{op_id:path}}", "operation", _operation, "GET"),
        route(f"{V1}:generateContent", "generate", _generate),
        route(f"{V1}:streamGenerateContent", "stream", _generate),
        route(f"{V1}:countTokens", "count", _count),
        route(f"{V1}:retrieveUserQuota", "quota", _quota),
    ]
