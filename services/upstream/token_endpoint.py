"""OAuth token endpoints (Google's, or the Vertex/ADC one) over the process's backend Transport.

Token refreshes are form POSTs with small JSON answers; they go through the same aiohttp session
as the backend calls (same CAs, same proxy environment, same connection cap) instead of a second
HTTP library: httpx and its stack (httpcore, h2, anyio) cost every upstream ~3.5 MiB of resident
memory for a few requests an hour (issue #15, idle RSS).

Credentials accept anything with this `post()` whose answer has `status_code` and `content`:
an httpx.AsyncClient does too (the unit tests route it to an in-process simulator).
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Protocol
from urllib.parse import urlencode

import orjson

from .errors import RefreshError, TransportError

if TYPE_CHECKING:
    from .transport import Transport


class TokenReply(NamedTuple):
    status_code: int
    content: bytes


class TokenAnswer(Protocol):
    status_code: int
    content: bytes


class TokenHttp(Protocol):
    async def post(self, url: str, *, data: Mapping[str, str], timeout: float,
                   headers: Mapping[str, str]) -> TokenAnswer: ...


class TokenEndpoint:
    """`TokenHttp` over a Transport (which the server closes)."""

    def __init__(self, transport: "Transport") -> None:
        self._transport = transport

    async def post(self, url: str, *, data: Mapping[str, str], timeout: float,
                   headers: Mapping[str, str]) -> TokenReply:
        resp = await self._transport.request(
            "POST", url, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode(data).encode(), timeout=timeout)
        return TokenReply(resp.status, resp.body)


async def request_token(http: TokenHttp, url: str, form: Mapping[str, str], timeout: float) -> tuple[int, Any]:
    """(HTTP status, the answer's JSON or None) of a token request; a RefreshError that a later
    refresh may overcome when the endpoint cannot be reached."""
    try:
        resp = await http.post(url, data=form, timeout=timeout, headers={"Accept": "application/json"})
    except _unreachable() as exc:
        raise RefreshError(f"token endpoint unreachable: {_describe(exc)}", permanent=False) from exc
    try:
        return resp.status_code, orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        return resp.status_code, None


def refusal(reply: Any) -> tuple[str, str]:
    """(error, error_description) of a token endpoint's error answer (RFC 6749 §5.2), "" for
    what it lacks."""
    if not isinstance(reply, dict):
        return "", ""
    return str(reply.get("error") or ""), str(reply.get("error_description") or "")


def _unreachable() -> tuple[type[BaseException], ...]:
    """What a `post()` raises when the endpoint cannot be reached: TransportError, and httpx's
    HTTPError once httpx is loaded (an httpx.AsyncClient passed as TokenHttp). Called in an
    `except` clause, so only when something was raised."""
    httpx = sys.modules.get("httpx")
    return (TransportError, httpx.HTTPError) if httpx is not None else (TransportError,)


def _describe(exc: BaseException) -> str:
    """Why the endpoint was unreachable, in words fit for a credential's report: TransportError
    messages say what happened (timeout, refused) and hold no address."""
    return str(exc) if isinstance(exc, TransportError) else type(exc).__name__
