"""The admin console (`GET {ROOT_PATH}/admin`, one static page) and its JSON API under
`{ROOT_PATH}/admin/api/`, a thin HTTP face of services/edge/admin_service.py.

Every API call carries the admin token as `Authorization: Bearer` (no cookie, so no CSRF);
it is checked in constant time before any body is read, failed tries are rate limited per
source, and a license key never opens these routes (nor does the admin token open the API
routes: it is not a license key). Errors are JSON `{"error": {"message", "type", "code"}}`.
"""
from __future__ import annotations

import hmac
import logging
from html import escape
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from services.edge.admin_service import (AdminError, AdminService, credential_view, key_view, parse_expiry,
                                         usage_row_view)
from services.edge.admin_token import AdminTokenCheck, FailedLogins
from services.edge.body import read_body
from services.edge.errors import ApiError
from services.edge.store import KEY_SCHEME

class AdminRoute(APIRoute):
    """An admin route whose unexpected failures (a store that is down, a timeout) answer 503 in
    JSON, as the API routes do, never a bare 500."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except (ApiError, HTTPException, RequestValidationError, ClientDisconnect):
                raise
            except Exception:
                log.exception("admin API: %s %s failed", request.method, request.url.path)
                raise ApiError(503, "the license store or the upstream is unavailable; try again shortly",
                               code="admin_unavailable", retry_after=1.0) from None

        return guarded


router = APIRouter(route_class=AdminRoute)
log = logging.getLogger("edge.admin")
STATIC = Path(__file__).resolve().parents[1] / "admin_static"
_ASSETS = {"admin.js": "text/javascript; charset=utf-8", "admin.css": "text/css; charset=utf-8"}
# The page loads only its own script and style; nothing it renders can run code.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_JSON_BYTES = 64 * 1024
MAX_CREDENTIAL_BYTES = 64 * 1024
_KEY_FIELDS = {"name", "models", "rpm", "tpm", "quota", "max_concurrent", "expires"}


@dataclass
class AdminState:
    check: AdminTokenCheck
    failures: FailedLogins
    service: AdminService


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _source(request: Request) -> str:
    """Who is trying: the client address Envoy saw (when Envoy proves it forwarded the
    request), else the peer."""
    expected: bytes = request.app.state.proxy_token
    proof = request.headers.get("x-gateway-proxy-token", "").encode()
    forwarded = request.headers.get("x-forwarded-for", "")
    if expected and forwarded and hmac.compare_digest(proof, expected):
        return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return request.client.host if request.client else "?"


async def require_admin(request: Request) -> AdminService:
    state: AdminState = request.app.state.admin
    source = _source(request)
    wait = state.failures.retry_after(source)
    if wait > 0:
        raise ApiError(429, "too many failed admin logins from this address; wait and try again",
                       code="admin_login_rate_limited", retry_after=wait)
    scheme, _, token = (request.headers.get("authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "admin token required: send 'Authorization: Bearer <admin token>'",
                       code="admin_token_required")
    if not state.check.verify(token):
        state.failures.failed(source)
        if token.startswith(KEY_SCHEME):
            raise ApiError(403, "a license key does not open the admin API; use the admin token",
                           code="license_key_not_admin")
        raise ApiError(401, "invalid admin token", code="invalid_admin_token")
    # ADMIN_TOKEN set to a license key's value would make that key an admin: refuse it.
    if await request.app.state.ctx.keys.lookup(token) is not None:
        raise ApiError(403, "this token is also a license key; set ADMIN_TOKEN to a value of its own",
                       code="license_key_not_admin")
    state.failures.succeeded(source)
    return state.service


def _admin_error(exc: AdminError) -> ApiError:
    return ApiError(exc.status, exc.message, code=exc.code)


async def _object(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_JSON_BYTES)
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise ApiError(400, "the body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    return data


def _number(data: dict[str, Any], name: str) -> int | None:
    v = data.get(name)
    if v is None or v == "":
        return None
    if isinstance(v, str) and v.strip().isdigit():
        return int(v.strip())
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    raise ApiError(400, f"{name} must be a whole number >= 0 (or empty for no limit)", param=name)


def _key_fields(data: dict[str, Any]) -> dict[str, Any]:
    unknown = set(data) - _KEY_FIELDS
    if unknown:
        raise ApiError(400, f"unknown fields: {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
    out: dict[str, Any] = {}
    if "name" in data:
        if not isinstance(data["name"], str):
            raise ApiError(400, "name must be a string", param="name")
        out["name"] = data["name"]
    if "models" in data:
        out["models"] = data["models"] or ()
    for name in ("rpm", "tpm", "quota", "max_concurrent"):
        if name in data:
            out[name] = _number(data, name)
    if "expires" in data:
        v = data["expires"]
        if v is not None and not isinstance(v, str):
            raise ApiError(400, "expires is 30d, 12h, 2026-12-31, an ISO date-time or null", param="expires")
        out["expires_at"] = parse_expiry(v)
    return out


# --- the page ------------------------------------------------------------------------------

async def page(request: Request) -> Response:
    # ROOT_PATH is a validated path ("/gemini_cli"): safe in an attribute and a URL.
    html = (STATIC / "index.html").read_text().replace("{{ROOT}}", escape(request.app.state.root_path))
    return Response(html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSETS:
        raise ApiError(404, "no such file", code="not_found")
    return Response((STATIC / name).read_bytes(), media_type=_ASSETS[name], headers=_PAGE_HEADERS)


router.add_route("/admin", page, methods=["GET"], include_in_schema=False)
router.add_route("/admin/", page, methods=["GET"], include_in_schema=False)
router.add_route("/admin/static/{name}", asset, methods=["GET"], include_in_schema=False)


# --- the API -----------------------------------------------------------------------------------

@router.get("/admin/api/session", include_in_schema=False)
async def session(request: Request, admin: AdminService = Depends(require_admin)) -> Response:
    return _json({"ok": True, "token_from_setting": request.app.state.admin.check.from_setting})


@router.get("/admin/api/keys", include_in_schema=False)
async def list_keys(admin: AdminService = Depends(require_admin)) -> Response:
    now = time.time()
    return _json({"keys": [key_view(r, now) for r in await admin.list_keys()]})


@router.post("/admin/api/keys", include_in_schema=False)
async def create_key(request: Request, admin: AdminService = Depends(require_admin)) -> Response:
    try:
        fields = _key_fields(await _object(request))
        key, rec = await admin.create_key(fields.pop("name", ""), **fields)
    except AdminError as exc:
        raise _admin_error(exc) from None
    # The one time the key is shown: never cached anywhere.
    return _json({"key": key, "record": key_view(rec)}, 201)


@router.get("/admin/api/keys/{key_id}", include_in_schema=False)
async def get_key(key_id: int, admin: AdminService = Depends(require_admin)) -> Response:
    try:
        return _json({"record": key_view(await admin.key(key_id))})
    except AdminError as exc:
        raise _admin_error(exc) from None


@router.patch("/admin/api/keys/{key_id}", include_in_schema=False)
async def edit_key(key_id: int, request: Request, admin: AdminService = Depends(require_admin)) -> Response:
    try:
        fields = _key_fields(await _object(request))
        if not fields:
            raise ApiError(400, "nothing to change", code="invalid_request")
        return _json({"record": key_view(await admin.update_key(key_id, fields))})
    except AdminError as exc:
        raise _admin_error(exc) from None


@router.post("/admin/api/keys/{key_id}/{action}", include_in_schema=False)
async def key_action(key_id: int, action: str, admin: AdminService = Depends(require_admin)) -> Response:
    try:
        if action == "revoke":
            rec, changed = await admin.revoke(key_id)
            return _json({"record": key_view(rec), "changed": changed})
        if action in ("enable", "disable"):
            return _json({"record": key_view(await admin.set_enabled(key_id, action == "enable"))})
    except AdminError as exc:
        raise _admin_error(exc) from None
    raise ApiError(404, f"no key action {action!r}: use revoke, enable or disable", code="not_found")


def _query_int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}", param=name)
    return int(raw)


@router.get("/admin/api/usage", include_in_schema=False)
async def usage(request: Request, admin: AdminService = Depends(require_admin)) -> Response:
    key_id = _query_int(request, "key_id", None, 0, 2**62)
    days = _query_int(request, "days", 30, 1, 3660)
    since = time.time() - days * 86400
    by_day = await admin.usage_by_day(key_id, since)
    summary = await admin.usage_summary(key_id, since)
    return _json({"days": days, "keys": {str(k): v for k, v in (await admin.key_names()).items()},
                  "by_day": [asdict(d) for d in by_day], "summary": [asdict(s) for s in summary]})


@router.get("/admin/api/requests", include_in_schema=False)
async def recent_requests(request: Request, admin: AdminService = Depends(require_admin)) -> Response:
    key_id = _query_int(request, "key_id", None, 0, 2**62)
    limit = _query_int(request, "limit", 50, 1, 1000)
    rows = await admin.recent(key_id, limit or 50)
    names = await admin.key_names()
    return _json({"requests": [usage_row_view(r, names) for r in rows]})


@router.get("/admin/api/credentials", include_in_schema=False)
async def credentials(admin: AdminService = Depends(require_admin)) -> Response:
    try:
        return _json({"credentials": [credential_view(c) for c in await admin.credentials()]})
    except AdminError as exc:
        raise _admin_error(exc) from None


@router.post("/admin/api/credentials", include_in_schema=False)
async def add_credential(request: Request, admin: AdminService = Depends(require_admin)) -> Response:
    """The body is the credential file itself (JSON or an API key as text), pasted or uploaded."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_CREDENTIAL_BYTES:
        raise ApiError(413, f"a credential file is at most {MAX_CREDENTIAL_BYTES} bytes", code="request_too_large")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_CREDENTIAL_BYTES:
            raise ApiError(413, f"a credential file is at most {MAX_CREDENTIAL_BYTES} bytes",
                           code="request_too_large")
        parts.append(chunk)
    try:
        status = await admin.add_credential(b"".join(parts))
    except AdminError as exc:
        raise _admin_error(exc) from None
    return _json({"credential": credential_view(status)}, 201)


@router.post("/admin/api/credentials/{credential_id}/{action}", include_in_schema=False)
async def credential_action(credential_id: str, action: str,
                            admin: AdminService = Depends(require_admin)) -> Response:
    if action not in ("enable", "disable"):
        raise ApiError(404, f"no credential action {action!r}: use enable or disable", code="not_found")
    try:
        status = await admin.set_credential_enabled(credential_id, action == "enable")
    except AdminError as exc:
        raise _admin_error(exc) from None
    return _json({"credential": credential_view(status)})
