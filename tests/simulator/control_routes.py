"""The `/_sim` control API: faults, accounts, the record, held replies, delivery settings, cloud keys."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import google_api
from .accounts import AccountError
from .faults import FaultError
from .state import Simulator


def ok(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")


def bad(message: str, status: int = 400) -> Response:
    return ok({"error": message}, status)


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
        return ok({"status": "ok"})

    async def add_fault(request: Request) -> Response:
        try:
            fault = sim.faults.add(await _control_json(request))
        except FaultError as exc:
            return bad(str(exc))
        return ok({"id": fault.id, "fault": fault.public()})

    async def list_faults(request: Request) -> Response:
        return ok(sim.faults.list())

    async def clear_faults(request: Request) -> Response:
        sim.faults.clear()
        return ok({"cleared": True})

    async def remove_fault(request: Request) -> Response:
        if not sim.faults.remove(request.path_params["fault_id"]):
            return bad("no such fault", 404)
        return ok({"removed": request.path_params["fault_id"]})

    async def add_account(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict):
            return bad("an account is a JSON object")
        try:
            return ok(sim.accounts.upsert(spec).public())
        except AccountError as exc:
            return bad(str(exc))

    async def list_accounts(request: Request) -> Response:
        return ok([a.public() for a in sim.accounts.accounts.values()])

    def account_action(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request) -> Response:
            rt = request.path_params["refresh_token"]
            if sim.accounts.lookup(rt) is None:
                return bad("unknown account", 404)
            acct = sim.accounts.revoke(rt) if action == "revoke" else sim.accounts.expire(rt)
            assert acct is not None
            return ok(acct.public())
        return act

    async def get_requests(request: Request) -> Response:
        q = request.query_params
        return ok(sim.log.entries(op=q.get("op"), account=q.get("account")))

    async def clear_requests(request: Request) -> Response:
        sim.log.clear()
        return ok({"cleared": True})

    async def release(request: Request) -> Response:
        held = list(sim.holds)
        sim.holds.clear()
        for gate in held:
            gate.set()
        return ok({"released": len(held)})

    async def get_config(request: Request) -> Response:
        return ok(sim.config())

    async def set_config(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict) or set(spec) - {"chunk_delay", "latency"}:
            return bad("config takes chunk_delay and latency (seconds)")
        for key, value in spec.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                return bad(f"{key} must be a number of seconds >= 0")
            setattr(sim, key, float(value))
        return ok(sim.config())

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


def cloud_control_routes(sim: Simulator) -> list[Route]:
    store = sim.cloud

    async def add_key(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict) or not isinstance(spec.get("key"), str) or not spec["key"]:
            return bad("a key is {key, revoked?, leaked?}")
        key = store.keys.setdefault(spec["key"], google_api.ApiKey(spec["key"]))
        key.revoked = bool(spec.get("revoked", False))
        key.leaked = bool(spec.get("leaked", False))
        return ok(key.public())

    async def add_sa(request: Request) -> Response:
        spec = await _control_json(request)
        if not isinstance(spec, dict) or not spec.get("client_email") or not spec.get("public_key_pem"):
            return bad("a service account is {client_email, public_key_pem, project?, revoked?, token_ttl?}")
        ttl = spec.get("token_ttl", 3600)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
            return bad("token_ttl is a number of seconds")
        sa = google_api.ServiceAccount(str(spec["client_email"]), str(spec["public_key_pem"]),
                                       spec.get("project"), bool(spec.get("revoked", False)),
                                       float(ttl))
        old = store.service_accounts.get(sa.client_email)
        sa.grants = old.grants if old else 0
        store.service_accounts[sa.client_email] = sa
        return ok(sa.public())

    async def list_sa(request: Request) -> Response:
        return ok([sa.public() for sa in store.service_accounts.values()])

    async def revoke_sa(request: Request) -> Response:
        email = request.path_params["email"]
        if email not in store.service_accounts:
            return bad("unknown service account", 404)
        store.revoke_sa(email)
        return ok(store.service_accounts[email].public())

    async def expire_sa(request: Request) -> Response:
        email = request.path_params["email"]
        for token, (owner, _) in list(store.tokens.items()):
            if owner == email:
                store.tokens[token] = (owner, 0.0)
        return ok({"expired": email})

    return [
        Route("/_sim/keys", add_key, methods=["POST"]),
        Route("/_sim/service_accounts", add_sa, methods=["POST"]),
        Route("/_sim/service_accounts", list_sa, methods=["GET"]),
        Route("/_sim/service_accounts/{email}/revoke", revoke_sa, methods=["POST"]),
        Route("/_sim/service_accounts/{email}/expire", expire_sa, methods=["POST"]),
    ]
