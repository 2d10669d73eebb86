"""The upstream service's errors and how each one becomes a gRPC status.

Every failure the servicer can see is an `UpstreamError`. `describe()` turns it into a
`GrpcError` (code, message, ErrorInfo reason/metadata, optional retry delay) — a pure
function the tests check case by case — and `to_rpc_status()` packs that into a
`grpc.Status` whose `grpc-status-details-bin` trailer holds google.rpc.ErrorInfo and, when
the caller should come back later, google.rpc.RetryInfo.

ErrorInfo.reason is always one of ours (the REASON_* constants below, domain `DOMAIN`);
what the backend said travels in ErrorInfo.metadata: http_status, upstream_status,
upstream_reason, upstream_domain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "upstream.gemini-cli-gateway"

REASON_BACKEND = "BACKEND_ERROR"                      # the backend answered with an error
REASON_INVALID_REQUEST = "INVALID_REQUEST"            # the caller's request is malformed
REASON_NO_CREDENTIALS = "NO_CREDENTIALS"              # no credential file found
REASON_CREDENTIALS_DEAD = "CREDENTIALS_DEAD"          # every credential needs a new login
REASON_CREDENTIALS_INELIGIBLE = "CREDENTIALS_INELIGIBLE"  # every credential is refused by the backend
REASON_ALL_COOLING = "ALL_CREDENTIALS_COOLING"        # every usable credential is rate limited
REASON_CREDENTIALS_UNAVAILABLE = "CREDENTIALS_UNAVAILABLE"  # token endpoint / setup failing for now
REASON_UNREACHABLE = "UPSTREAM_UNREACHABLE"           # network failure reaching the backend
REASON_TIMEOUT = "UPSTREAM_TIMEOUT"                   # backend too slow
REASON_EMPTY = "UPSTREAM_EMPTY"                       # backend closed a stream without any event
REASON_STREAM_CUT = "STREAM_CUT"                      # the backend stream broke after it started
REASON_DRAINING = "DRAINING"                          # the server is shutting down
REASON_MODEL_NOT_SERVED = "MODEL_NOT_SERVED"          # no pool member serves the model
REASON_NO_EMBEDDINGS = "NO_EMBEDDINGS_MEMBER"         # no pool member has embeddings


class UpstreamError(Exception):
    """Base of every error the upstream service reports to its callers."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(eq=False)
class BackendError(UpstreamError):
    """An error answer from Code Assist, parsed from Google's error body."""

    http_status: int
    status: str = ""            # e.g. "RESOURCE_EXHAUSTED"
    message: str = ""
    reason: str = ""            # ErrorInfo.reason of the backend, e.g. "QUOTA_EXHAUSTED"
    retry_delay_s: float | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
    domain: str = ""

    def __post_init__(self) -> None:
        UpstreamError.__init__(self, self.message or f"backend answered HTTP {self.http_status}")

    def __str__(self) -> str:
        head = " ".join(part for part in (f"HTTP {self.http_status}", self.status, self.reason) if part)
        return f"{head}: {self.message}"


class TransportError(UpstreamError):
    """The backend could not be reached, or did not answer in time. `retry=False`: the backend
    did answer (too much), so another credential must not be spent on the same call."""

    def __init__(self, message: str, *, timeout: bool = False, retry: bool = True) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.retry = retry


class StreamCut(UpstreamError):
    """The backend stream broke after the first chunk went to the caller."""


class EmptyStream(UpstreamError):
    """The backend closed a stream without sending a single event."""


class InvalidRequest(UpstreamError):
    """The caller's request cannot be sent (bad model id, body that is not a JSON object)."""


class CredentialError(UpstreamError):
    """A credential cannot be used. `permanent`: it needs an operator (new login, licence)."""

    def __init__(self, message: str, *, permanent: bool, ineligible: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        # Permanent because the backend refuses the account (tier, licence, ToS), not because
        # its login is gone.
        self.ineligible = ineligible


class RefreshError(CredentialError):
    """The OAuth token endpoint did not give a new access token."""


class ProjectError(CredentialError):
    """The credential's Code Assist project could not be found or set up."""


class NoCredentials(UpstreamError):
    """No credential at all: nothing was found where the service looked."""


class PoolExhausted(UpstreamError):
    """No credential of the pool can serve the call now."""

    def __init__(self, message: str, *, code: grpc.StatusCode, reason: str,
                 retry_delay_s: float | None = None, last: UpstreamError | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.retry_delay_s = retry_delay_s
        self.last = last


class Draining(UpstreamError):
    """The server is shutting down and takes no new calls."""


# --- mapping ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GrpcError:
    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay_s: float | None = None


_HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    412: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_to_grpc(http_status: int) -> grpc.StatusCode:
    if http_status in _HTTP_TO_GRPC:
        return _HTTP_TO_GRPC[http_status]
    if http_status >= 500:
        return grpc.StatusCode.UNAVAILABLE
    if http_status >= 400:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.UNKNOWN


def backend_metadata(err: BackendError) -> dict[str, str]:
    meta = {"http_status": str(err.http_status)}
    if err.status:
        meta["upstream_status"] = err.status
    if err.reason:
        meta["upstream_reason"] = err.reason
    if err.domain:
        meta["upstream_domain"] = err.domain
    return meta


def describe(err: BaseException) -> GrpcError:
    """What the caller is told about `err` (pure; covers every error the service raises)."""
    if isinstance(err, BackendError):
        return GrpcError(http_to_grpc(err.http_status), err.message or str(err), REASON_BACKEND,
                         backend_metadata(err), err.retry_delay_s)
    if isinstance(err, PoolExhausted):
        meta: dict[str, str] = {}
        if isinstance(err.last, BackendError):
            meta = backend_metadata(err.last)
        return GrpcError(err.code, err.message, err.reason, meta, err.retry_delay_s)
    if isinstance(err, InvalidRequest):
        return GrpcError(grpc.StatusCode.INVALID_ARGUMENT, err.message, REASON_INVALID_REQUEST)
    if isinstance(err, NoCredentials):
        return GrpcError(grpc.StatusCode.UNAUTHENTICATED, err.message, REASON_NO_CREDENTIALS)
    if isinstance(err, StreamCut):
        return GrpcError(grpc.StatusCode.UNAVAILABLE, err.message, REASON_STREAM_CUT)
    if isinstance(err, EmptyStream):
        return GrpcError(grpc.StatusCode.UNAVAILABLE, err.message, REASON_EMPTY)
    if isinstance(err, TransportError):
        if err.timeout:
            return GrpcError(grpc.StatusCode.DEADLINE_EXCEEDED, err.message, REASON_TIMEOUT)
        return GrpcError(grpc.StatusCode.UNAVAILABLE, err.message, REASON_UNREACHABLE)
    if isinstance(err, CredentialError):
        if err.permanent:
            code = grpc.StatusCode.PERMISSION_DENIED if err.ineligible else grpc.StatusCode.UNAUTHENTICATED
            reason = REASON_CREDENTIALS_INELIGIBLE if err.ineligible else REASON_CREDENTIALS_DEAD
            return GrpcError(code, err.message, reason)
        return GrpcError(grpc.StatusCode.UNAVAILABLE, err.message, REASON_CREDENTIALS_UNAVAILABLE)
    if isinstance(err, Draining):
        return GrpcError(grpc.StatusCode.UNAVAILABLE, err.message, REASON_DRAINING)
    return GrpcError(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}", "INTERNAL")


def _duration(seconds: float) -> duration_pb2.Duration:
    seconds = max(0.0, seconds)
    whole = math.floor(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)) % 1_000_000_000)


def to_rpc_status(desc: GrpcError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=desc.reason, domain=DOMAIN, metadata=desc.metadata)
    details = [any_pb2.Any()]
    details[0].Pack(info)
    if desc.retry_delay_s is not None:
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=_duration(desc.retry_delay_s)))
        details.append(retry)
    proto = status_pb2.Status(code=getattr(code_pb2, desc.code.name), message=desc.message, details=details)
    return rpc_status.to_status(proto)


async def abort(context: grpc.aio.ServicerContext, err: BaseException) -> None:
    """End the RPC with `err`'s status (raises, as ServicerContext.abort does)."""
    await context.abort_with_status(to_rpc_status(describe(err)))
