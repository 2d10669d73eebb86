"""The token endpoint (`POST /token`): Code Assist's refresh grant and Vertex AI's JWT-bearer grant."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import orjson

from . import errors, google_api
from .call import Call, take_fault
from .faults import Fault
from .reply import Reply


async def refresh(call: Call) -> tuple[Reply, Fault | None]:
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
    fault, replaced = take_fault(call)
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
    fault, replaced = take_fault(call)
    if replaced is not None:
        return replaced, None
    url = str(call.request.url).split("?", 1)[0]
    status, body, account = google_api.jwt_grant(call.sim.cloud, form, url)
    call.entry["account"] = account
    return call.json(status, body), fault
