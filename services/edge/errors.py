"""Errors as each API's clients expect them.

Every failure inside the edge is an `ApiError` (or becomes one in the handlers below), and is
rendered in the shape of the API the request addressed:

- OpenAI routes (`/v1/...`):  `{"error": {"message", "type", "param", "code"}}`
- Gemini routes (`/v1beta/...`, `/v1/models/M:method`): `{"error": {"code", "message", "status"}}`
- Anthropic routes (`/v1/messages...`): `{"type": "error", "error": {"type", "message"}}`, with
  503 sent as Anthropic's 529 overloaded_error

A 429 always carries `Retry-After`. Nothing a client sends can produce a 500: framework errors
(unknown path, wrong method, validation) are mapped to 4xx here too.
"""
from __future__ import annotations

import logging
import math
from typing import Literal, Mapping

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

log = logging.getLogger("edge.errors")

Style = Literal["openai", "google", "anthropic"]

# HTTP status -> google.rpc.Code name, as Google's REST APIs pair them.
GOOGLE_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# HTTP status -> OpenAI error "type".
OPENAI_TYPE: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


# HTTP status -> Anthropic error "type" (docs.claude.com/en/api/errors).
ANTHROPIC_TYPE: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_status(status: int) -> int:
    return 529 if status == 503 else status


def anthropic_type_for(status: int) -> str:
    return ANTHROPIC_TYPE.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def google_status_for(status: int) -> str:
    return GOOGLE_STATUS.get(status) or ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION")


def openai_type_for(status: int) -> str:
    return OPENAI_TYPE.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


class ApiError(Exception):
    """A failure with everything both error formats need."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 google_status: str | None = None, error_type: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.google_status = google_status or google_status_for(status)
        self.error_type = error_type or openai_type_for(status)
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r}, code={self.code!r})"


def retry_after_header(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def openai_error_dict(err: ApiError) -> dict:
    return {"error": {"message": err.message, "type": err.error_type, "param": err.param,
                      "code": err.code if err.code is not None else None}}


def google_error_dict(err: ApiError) -> dict:
    body: dict = {"code": err.status, "message": err.message, "status": err.google_status}
    if err.retry_after is not None:
        # google.rpc.RetryInfo, as Google's own 429 bodies carry it.
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{max(0.0, err.retry_after):.3f}s"}]
    return {"error": body}


def anthropic_error_dict(err: ApiError) -> dict:
    return {"type": "error", "error": {"type": anthropic_type_for(err.status), "message": err.message}}


def error_body(style: Style, err: ApiError) -> bytes:
    if style == "anthropic":
        return orjson.dumps(anthropic_error_dict(err))
    return orjson.dumps(openai_error_dict(err) if style == "openai" else google_error_dict(err))


def error_response(style: Style, err: ApiError) -> Response:
    headers = retry_after_header(err.retry_after) if err.status in (429, 503) else {}
    status = anthropic_status(err.status) if style == "anthropic" else err.status
    return Response(error_body(style, err), status_code=status, media_type="application/json",
                    headers=headers)


# --- which API a request addressed --------------------------------------------------------

def _used_google_key(headers: Mapping[str, str], query: str) -> bool:
    """The key came the way Google clients send it (x-goog-api-key or ?key=), not as Bearer."""
    if headers.get("authorization"):
        return False
    return bool(headers.get("x-goog-api-key")) or query.startswith("key=") or "&key=" in query


def style_for(path: str, root_path: str, headers: Mapping[str, str], query: str = "") -> Style:
    p = path[len(root_path):] if root_path and path.startswith(root_path) else path
    if p.startswith(("/v1beta/", "/v1alpha/")) or p in ("/v1beta", "/v1alpha"):
        return "google"
    if p.startswith("/v1/models/") and ":" in p.rsplit("/", 1)[-1]:
        return "google"
    if p == "/v1/messages" or p.startswith("/v1/messages/"):
        return "anthropic"
    # GET /v1/models[/{id}] is shared by both SDKs: answer in the dialect the caller speaks.
    if (p == "/v1/models" or p.startswith("/v1/models/")) and _used_google_key(headers, query):
        return "google"
    return "openai"


def request_style(request: Request) -> Style:
    return style_for(request.url.path, request.app.state.root_path, request.headers,
                     request.scope.get("query_string", b"").decode("latin-1"))


# --- handlers ------------------------------------------------------------------------------

_REASONS = {404: "Not found", 405: "Method not allowed"}


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return error_response(request_style(request), exc)

    async def on_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else _REASONS.get(status, "Error")
        if status == 404 and message == "Not Found":
            message = f"No route for {request.method} {request.url.path}"
        return error_response(request_style(request), ApiError(status, message))

    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg", "invalid request"))
        return error_response(request_style(request), ApiError(400, message, param=param))

    async def on_disconnect(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody is left to read this; it only keeps the server from logging a 500.
        return Response(status_code=499)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request_style(request), ApiError(500, "internal error in the gateway"))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
