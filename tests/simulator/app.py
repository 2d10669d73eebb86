"""The Code Assist simulator as a Starlette app: protocol routes and the /_sim control API."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import errors, google_api, responder
from .accounts import Account, AccountError, AccountStore
from .faults import Fault, FaultError, FaultTable
from .record import RequestLog, redact_body
from .reply import Reply

log = logging.getLogger("tests.simulator")

JSON = b"application/json; charset=UTF-8"
SSE = b"text/event-stream"
V1 = "/v1internal"


class Simulator:
    """All mutable state of one simulator instance."""

    def __init__(self, strict_accounts: bool = False, chunk_delay: float = 0.0, latency: float = 0.0,
                 embed_response_ids: bool = False) -> None:
        self.accounts = AccountStore(strict=strict_accounts)
        self.cloud = google_api.CloudStore()
        self.faults = FaultTable()
        self.log = RequestLog()
        # Replies waiting at a "hold" fault until POST /_sim/release (reply.py).
        self.holds: set[asyncio.Event] = set()
        self.chunk_delay = chunk_delay
        self.latency = latency
        self.embed_response_ids = embed_response_ids

    def config(self) -> dict[str, float]:
        return {"chunk_delay": self.chunk_delay, "latency": self.latency}


# --- helpers -------------------------------------------------------------------------------

def _now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def trace_id(seq: int) -> str:
    return hashlib.sha256(b"trace-%d" % seq).hexdigest()[:16]


def response_id(seq: int) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(b"response-%d" % seq).digest()[:16]).decode().rstrip("=")


class Call:
    """One protocol request being answered: its record entry and how errors are shaped."""

    def __init__(self, sim: Simulator, op: str, request: Request) -> None:
        self.sim = sim
        self.op = op
        self.request = request
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        self.entry = sim.log.start(op, path, request.headers)
        self.model: str | None = None

    def json(self, status: int, obj: Any, headers: list[tuple[bytes, bytes]] | None = None) -> Reply:
        return Reply(status, [orjson.dumps(obj)], JSON, entry=self.entry, headers=headers)

    def error(self, status: int, body: dict[str, Any]) -> Reply:
        # Streaming errors arrive as a JSON array, as the real alt=sse endpoint sends them.
        reply = self.json(status, [body] if self.op == "stream" else body)
        if status == 401:
            reply.raw_headers.append((b"www-authenticate", b'Bearer realm="https://accounts.google.com/"'))
        return reply


async def _read_json(call: Call) -> tuple[Any, Reply | None]:
    raw = await call.request.body()
    if not raw:
        return {}, None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, call.error(400, errors.google_error(400, "Invalid JSON payload received. Unexpected token."))
    if not isinstance(body, dict):
        return None, call.error(400, errors.google_error(
            400, "Invalid JSON payload received. Expected an object at the top level."))
    call.entry["body"] = redact_body(body)
    return body, None


def _fault_reply(call: Call, fault: Fault) -> Reply | None:
    """The reply for a fault that replaces the answer; None for faults that alter delivery."""
    if fault.kind == "hang":
        reply = call.json(200, {})
        reply.hang = True
        return reply
    if fault.kind == "invalid_grant":
        return call.json(400, errors.INVALID_GRANT)
    status = fault.status
    if status is None:
        return None
    if call.op == "refresh":
        return call.json(status, errors.OAUTH_FAULTS[status])
    return call.error(status, errors.fault_body(status, call.model, fault.retry_delay, fault.reason, fault.message))


def _take_fault(call: Call) -> tuple[Fault | None, Reply | None]:
    """(fault that alters delivery, None) or (None, reply that replaces the answer) or (None, None)."""
    fault = call.sim.faults.take(call.entry["account"], call.op, call.model)
    if fault is None:
        return None, None
    call.entry["fault"] = fault.kind
    replaced = _fault_reply(call, fault)
    return (None, replaced) if replaced is not None else (fault, None)


def _shape_delivery(call: Call, reply: Reply, fault: Fault | None) -> Reply:
    reply.latency = call.sim.latency
    if reply.between is None:
        reply.between = call.sim.chunk_delay
    if fault is not None:
        if fault.kind == "slow":
            if reply.streaming:
                reply.before_each = fault.delay
            else:
                reply.latency += fault.delay
        elif fault.kind == "cut":
            reply.cut(fault.after_chunks)
        elif fault.kind == "hold":
            reply.hold(fault.after_chunks, call.sim.holds)
    return reply


# --- protocol handlers ---------------------------------------------------------------------

async def _refresh(call: Call) -> tuple[Reply, Fault | None]:
    """The token endpoint: a form, OAuth-style errors, and no bearer token."""
    raw = await call.request.body()
    ctype = call.request.headers.get("content-type", "")
    try:
        form = orjson.loads(raw) if "json" in ctype else dict(parse_qsl(raw.decode(), keep_blank_values=True))
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        form = None
    if not isinstance(form, dict):
        return call.json(400, errors.oauth_error("invalid_request", "Could not parse the request body.")), None
    call.entry["body"] = {k: v for k, v in form.items() if k != "assertion"}
    if form.get("grant_type") == google_api.JWT_GRANT:
        return _jwt_grant(call, form)
    rt = form.get("refresh_token")
    if isinstance(rt, str) and rt:
        call.entry["account"] = rt
    fault, replaced = _take_fault(call)
    if replaced is not None:
        return replaced, None
    if form.get("grant_type") != "refresh_token":
        reply = call.json(400, errors.oauth_error("unsupported_grant_type",
                                                  f"Invalid grant_type: {form.get('grant_type', '')}"))
    elif not isinstance(rt, str) or not rt:
        reply = call.json(400, errors.oauth_error("invalid_request", "Missing required parameter: refresh_token"))
    else:
        tokens = call.sim.accounts.refresh(rt)
        reply = call.json(200, tokens) if tokens is not None else call.json(400, errors.INVALID_GRANT)
    return reply, fault


def _jwt_grant(call: Call, form: dict[str, Any]) -> tuple[Reply, Fault | None]:
    """Vertex AI service accounts: the JWT-bearer grant, the signature checked."""
    try:
        claims = google_api.jwt.decode(str(form.get("assertion", "")), verify=False)
        call.entry["account"] = str(claims.get("iss", "")) or None
    except Exception:  # not a JWT: the grant below says so
        pass
    fault, replaced = _take_fault(call)
    if replaced is not None:
        return replaced, None
    url = str(call.request.url).split("?", 1)[0]
    status, body, account = google_api.jwt_grant(call.sim.cloud, form, url)
    call.entry["account"] = account
    return call.json(status, body), fault


# The handlers below answer an authenticated call whose fault (if any) did not replace the answer.

def _project_ok(acct: Account, body: dict[str, Any]) -> bool:
    return acct.onboarded and body.get("project") == acct.project


def _model_problem(call: Call) -> Reply | None:
    if not call.model:
        return call.error(400, errors.google_error(400, "model is required."))
    if call.model not in responder.KNOWN_MODELS:
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
        responder.validate(model, request)
        answer = responder.answer(model, request)
    except responder.RequestError as exc:
        return call.error(400, errors.google_error(400, str(exc)))
    seq = call.entry["seq"]
    trace, rid, created = trace_id(seq), response_id(seq), _now_iso()
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
    except responder.RequestError as exc:
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
                "resetTime": reset, "tokenType": "REQUESTS", "modelId": m} for m in responder.KNOWN_MODELS]
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
        reply, fault = await _refresh(call)
    else:
        reply, fault = await _protocol(call, handler)
    return _shape_delivery(call, reply, fault)


async def _protocol(call: Call, handler: Handler) -> tuple[Reply, Fault | None]:
    body, bad = await _read_json(call) if call.request.method == "POST" else ({}, None)
    acct, auth_problem = call.sim.accounts.identify(call.request.headers.get("authorization"))
    call.entry["account"] = acct.refresh_token if acct else None
    if bad is not None:
        return bad, None
    call.model = _model_of(call.op, body)
    call.entry["model"] = call.model
    fault, replaced = _take_fault(call)
    if replaced is not None:
        return replaced, None
    if auth_problem is not None or acct is None:
        return call.error(401, errors.unauthenticated(auth_problem or "CREDENTIALS_MISSING")), fault
    return await handler(call, acct, body), fault


# --- control API ---------------------------------------------------------------------------

def _ok(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")


def _bad(message: str, status: int = 400) -> Response:
    return _ok({"error": message}, status)


async def _control_json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(400, f"invalid JSON: {exc}") from None


def control_routes(sim: Simulator) -> list[Route]:
    async def health(request: Request) -> Response:
        return _ok({"status": "ok"})

    async def add_fault(request: Request) -> Response:
        try:
            fault = sim.faults.add(await _control_json(request))
        except FaultError as exc:
            return _bad(str(exc))
        return _ok({"id": fault.id, "fault": fault.public()})

    async def list_faults(request: Request) -> Response:
        return _ok(sim.faults.list())

    async def clear_faults(request: Request) -> Response:
        sim.faults.clear()
        return _ok({"cleared": True})

    async def remove_fault(request: Request) -> Response:
        if not sim.faults.remove(request.path_params["fault_id"]):
            return _bad("no such fault", 404)
        return _ok({"removed": request.path_params["fault_id"]})

    async def add_account(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict):
            return _bad("an account is a JSON object")
        try:
            return _ok(sim.accounts.upsert(spec).public())
        except AccountError as exc:
            return _bad(str(exc))

    async def list_accounts(request: Request) -> Response:
        return _ok([a.public() for a in sim.accounts.accounts.values()])

    def account_action(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request) -> Response:
            rt = request.path_params["refresh_token"]
            if sim.accounts.lookup(rt) is None:
                return _bad("unknown account", 404)
            acct = sim.accounts.revoke(rt) if action == "revoke" else sim.accounts.expire(rt)
            assert acct is not None
            return _ok(acct.public())
        return act

    async def get_requests(request: Request) -> Response:
        q = request.query_params
        return _ok(sim.log.entries(op=q.get("op"), account=q.get("account")))

    async def clear_requests(request: Request) -> Response:
        sim.log.clear()
        return _ok({"cleared": True})

    async def release(request: Request) -> Response:
        held = list(sim.holds)
        sim.holds.clear()
        for gate in held:
            gate.set()
        return _ok({"released": len(held)})

    async def get_config(request: Request) -> Response:
        return _ok(sim.config())

    async def set_config(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict) or set(spec) - {"chunk_delay", "latency"}:
            return _bad("config takes chunk_delay and latency (seconds)")
        for key, value in spec.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                return _bad(f"{key} must be a number of seconds >= 0")
            setattr(sim, key, float(value))
        return _ok(sim.config())

    return [
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/faults", add_fault, methods=["POST"]),
        Route("/_sim/faults", list_faults, methods=["GET"]),
        Route("/_sim/faults", clear_faults, methods=["DELETE"]),
        Route("/_sim/faults/{fault_id}", remove_fault, methods=["DELETE"]),
        Route("/_sim/accounts", add_account, methods=["POST"]),
        Route("/_sim/accounts", list_accounts, methods=["GET"]),
        Route("/_sim/accounts/{refresh_token:path}/revoke", account_action("revoke"), methods=["POST"]),
        Route("/_sim/accounts/{refresh_token:path}/expire", account_action("expire"), methods=["POST"]),
        Route("/_sim/requests", get_requests, methods=["GET"]),
        Route("/_sim/requests", clear_requests, methods=["DELETE"]),
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/release", release, methods=["POST"]),
        Route("/_sim/config", set_config, methods=["POST"]),
    ]


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


def cloud_routes(sim: Simulator) -> list[Route]:
    def make(path: str, backend: str, handler: Callable[..., Awaitable[Any]]) -> Route:
        async def endpoint(request: Request) -> Response:
            call = Call(sim, "unknown", request)
            try:
                reply, fault = await handler(call, backend)
            except Exception:  # a simulator bug: still answer, and keep the record honest
                log.exception("simulator error on %s", path)
                return call.json(500, errors.google_error(500))
            return _shape_delivery(call, reply, fault)

        return Route(path, endpoint, methods=["GET", "POST"])

    return google_api.routes(make)


def cloud_control_routes(sim: Simulator) -> list[Route]:
    store = sim.cloud

    async def add_key(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict) or not isinstance(spec.get("key"), str) or not spec["key"]:
            return _bad("a key is {key, revoked?, leaked?}")
        key = store.keys.setdefault(spec["key"], google_api.ApiKey(spec["key"]))
        key.revoked = bool(spec.get("revoked", False))
        key.leaked = bool(spec.get("leaked", False))
        return _ok(key.public())

    async def add_sa(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict) or not spec.get("client_email") or not spec.get("public_key_pem"):
            return _bad("a service account is {client_email, public_key_pem, project?, revoked?, token_ttl?}")
        sa = google_api.ServiceAccount(str(spec["client_email"]), str(spec["public_key_pem"]),
                                       spec.get("project"), bool(spec.get("revoked", False)),
                                       float(spec.get("token_ttl", 3600)))
        old = store.service_accounts.get(sa.client_email)
        sa.grants = old.grants if old else 0
        store.service_accounts[sa.client_email] = sa
        return _ok(sa.public())

    async def list_sa(request: Request) -> Response:
        return _ok([sa.public() for sa in store.service_accounts.values()])

    async def revoke_sa(request: Request) -> Response:
        email = request.path_params["email"]
        if email not in store.service_accounts:
            return _bad("unknown service account", 404)
        store.revoke_sa(email)
        return _ok(store.service_accounts[email].public())

    async def expire_sa(request: Request) -> Response:
        email = request.path_params["email"]
        for token, (owner, _) in list(store.tokens.items()):
            if owner == email:
                store.tokens[token] = (owner, 0.0)
        return _ok({"expired": email})

    return [
        Route("/_sim/keys", add_key, methods=["POST"]),
        Route("/_sim/service_accounts", add_sa, methods=["POST"]),
        Route("/_sim/service_accounts", list_sa, methods=["GET"]),
        Route("/_sim/service_accounts/{email}/revoke", revoke_sa, methods=["POST"]),
        Route("/_sim/service_accounts/{email}/expire", expire_sa, methods=["POST"]),
    ]


def _unknown_route(sim: Simulator) -> Route:
    """Anything else gets Google's 404, and is recorded so a wrong path is easy to spot."""
    async def unknown(request: Request) -> Response:
        if request.url.path.startswith("/_sim/"):
            return _bad("no such control endpoint (or method)", 404)
        call = Call(sim, "unknown", request)
        return _shape_delivery(call, call.error(404, errors.google_error(404)), None)

    return Route("/{path:path}", unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/_sim/"):
        return _bad(str(exc.detail), exc.status_code)
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
