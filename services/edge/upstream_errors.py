"""What an upstream failure is at the edge.

gRPC failures become a typed `UpstreamError` carrying the HTTP status to show the client, the
google.rpc status name, the message, and Retry-After (from google.rpc.RetryInfo in
`grpc-status-details-bin`).

Status mapping (gRPC -> HTTP towards the client):

    INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE  -> 400
    PERMISSION_DENIED                                     -> 403
    NOT_FOUND                                             -> 404
    ALREADY_EXISTS, ABORTED                               -> 409
    RESOURCE_EXHAUSTED                                    -> 429 + Retry-After
      (gRPC's own "message larger than max"               -> 413)
    CANCELLED                                             -> 499
    UNIMPLEMENTED                                         -> 501
    UNAUTHENTICATED                                       -> 502 (status UNAVAILABLE)
    UNKNOWN, INTERNAL, DATA_LOSS                          -> 502
    UNAVAILABLE                                           -> 503 (+ Retry-After when given)
    DEADLINE_EXCEEDED                                     -> 504

UNAUTHENTICATED is deliberately not passed on as 401: it means the gateway's own backend
credentials failed, not the client's license key. A 401 would make SDKs tell the user their key
is wrong; 502 says "the gateway's backend refused it", which is what happened.
"""
from __future__ import annotations

import logging
import re

import grpc
from google.rpc import error_details_pb2, status_pb2

from services.edge.errors import ApiError

log = logging.getLogger("edge.upstream")

_C = grpc.StatusCode
# grpc code -> (HTTP status, google.rpc status name shown to the client)
_MAP: dict[grpc.StatusCode, tuple[int, str]] = {
    _C.INVALID_ARGUMENT: (400, "INVALID_ARGUMENT"),
    _C.FAILED_PRECONDITION: (400, "FAILED_PRECONDITION"),
    _C.OUT_OF_RANGE: (400, "OUT_OF_RANGE"),
    _C.PERMISSION_DENIED: (403, "PERMISSION_DENIED"),
    _C.NOT_FOUND: (404, "NOT_FOUND"),
    _C.ALREADY_EXISTS: (409, "ALREADY_EXISTS"),
    _C.ABORTED: (409, "ABORTED"),
    _C.RESOURCE_EXHAUSTED: (429, "RESOURCE_EXHAUSTED"),
    _C.CANCELLED: (499, "CANCELLED"),
    _C.UNIMPLEMENTED: (501, "UNIMPLEMENTED"),
    _C.UNAUTHENTICATED: (502, "UNAVAILABLE"),
    _C.UNKNOWN: (502, "UNKNOWN"),
    _C.INTERNAL: (502, "INTERNAL"),
    _C.DATA_LOSS: (502, "DATA_LOSS"),
    _C.UNAVAILABLE: (503, "UNAVAILABLE"),
    _C.DEADLINE_EXCEEDED: (504, "DEADLINE_EXCEEDED"),
}


# What clients are told when the failure is the gateway's or its backend's, not their request's.
# The upstream's own message (backend text, credential file names, internal paths) goes to the
# edge's log with the request id, never to the client.
_PROJECT_PATH = re.compile(r"projects/[^/\s`'\"]+(?:/locations/[^/\s`'\"]+)?")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PUBLIC_MESSAGES: dict[int, str] = {
    403: "the gateway's backend account may not serve this request",
    501: "this operation is not supported by the gateway's backend",
    502: "the gateway's backend failed to answer",
    503: "the gateway's backend is unavailable; retry shortly",
    504: "the gateway's backend did not answer in time",
}


def public_message(http_status: int, code: grpc.StatusCode, detail: str) -> str | None:
    """The message a client may see for an upstream failure, or None to show the detail."""
    if code == _C.UNAUTHENTICATED:
        return "the gateway's backend credentials were rejected"
    if code == _C.UNAVAILABLE and "failed to connect" in detail.lower():
        return "the gateway's upstream service is unreachable"
    if http_status == 429:
        return "the gateway's backend is rate limited; retry later"
    if http_status == 403 or http_status >= 500:
        return _PUBLIC_MESSAGES.get(http_status) or _PUBLIC_MESSAGES[502]
    # 400/404/409 are about the client's request, and it needs to know what; but Vertex names the
    # member's project and location in resource paths, and some messages name an account.
    redacted = _EMAIL.sub("[account]", _PROJECT_PATH.sub("projects/[project]", detail))
    return redacted if redacted != detail else None


class UpstreamError(Exception):
    def __init__(self, http_status: int, google_status: str, message: str, retry_after: float | None = None,
                 *, grpc_code: grpc.StatusCode | None = None, reason: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.google_status = google_status
        self.message = message          # safe to show to clients
        self.detail = detail or message  # what the upstream said: for the logs only
        self.retry_after = retry_after
        self.grpc_code = grpc_code
        self.reason = reason

    def to_api_error(self, request_id: str | None = None) -> ApiError:
        """The client's error. With `request_id`, a withheld detail is logged under it and the
        message names it, so an operator can find the detail from what the client reports."""
        code = self.reason.lower() if self.reason else (self.grpc_code.name.lower() if self.grpc_code else None)
        message = self.message
        if request_id and self.detail != self.message:
            log.warning("request %s: upstream %s (%d): %s", request_id, self.google_status, self.http_status,
                        self.detail)
            message = f"{message} (request id {request_id})"
        return ApiError(self.http_status, message, code=code, google_status=self.google_status,
                        retry_after=self.retry_after)

    def __repr__(self) -> str:
        return f"UpstreamError({self.http_status}, {self.google_status}, {self.message!r})"


def _status_details(metadata) -> tuple[float | None, str | None]:
    """(retry delay in seconds, ErrorInfo reason) from grpc-status-details-bin, if present."""
    raw = None
    for key, value in metadata or ():
        if key == "grpc-status-details-bin":
            raw = value
            break
    if not raw:
        return None, None
    try:
        status = status_pb2.Status.FromString(raw)
    except Exception:  # a malformed detail must not hide the error itself
        return None, None
    retry, reason = None, None
    for any_ in status.details:
        if any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            any_.Unpack(info)
            retry = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        elif any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            reason = info.reason or info.metadata.get("upstream_reason") or None
    return retry, reason


def map_rpc_error(code: grpc.StatusCode, details: str | None, trailing_metadata=None) -> UpstreamError:
    http, gstatus = _MAP.get(code, (502, "UNKNOWN"))
    retry, reason = _status_details(trailing_metadata)
    detail = details or code.name
    if code == _C.RESOURCE_EXHAUSTED and "message larger than max" in detail.lower():
        # gRPC's own size limit, not a quota: retrying cannot help.
        return UpstreamError(413, "INVALID_ARGUMENT", "the request is too large for the upstream service",
                             grpc_code=code, reason="REQUEST_TOO_LARGE", detail=detail)
    if http == 429 and retry is None:
        retry = 1.0
    message = public_message(http, code, detail) or detail
    return UpstreamError(http, gstatus, message, retry, grpc_code=code, reason=reason, detail=detail)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> UpstreamError:
    """The UpstreamError that replaces a gRPC error (raised `from None`). The gRPC error's
    traceback is dropped: its frames hold the call and the task that holds the error, a
    reference cycle of ~30 objects per failed call that only the cyclic GC would free."""
    exc.__traceback__ = None
    return map_rpc_error(exc.code(), exc.details(), exc.trailing_metadata())
