"""Error bodies in the shapes Google's backends really send (see shared/protocol/code-assist.md §5).

Pure functions returning dicts; the app serialises them. Streaming callers wrap the same
body in a one-element JSON array, as `alt=sse` errors arrive from the real backend.
"""
from __future__ import annotations

import re
import time
from typing import Any

DOMAIN = "cloudcode-pa.googleapis.com"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

DEFAULT_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
          "or other valid authentication credential. See "
          "https://developers.google.com/identity/sign-in/web/devconsole-project."),
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}

GENERIC_429_MESSAGE = ("Resource exhausted. Please try again later. Please refer to "
                       "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.")

_DURATION = re.compile(r"^\d+(\.\d+)?s$")


def google_error(code: int, message: str | None = None, status: str | None = None, reason: str | None = None,
                 details: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """Google's RPC error body; `reason` adds an ErrorInfo detail."""
    if reason:
        details = [error_info(reason), *(details or [])]
    err: dict[str, Any] = {
        "code": code,
        "message": message if message is not None else DEFAULT_MESSAGES.get(code, "Error"),
        "status": status or STATUS_NAMES.get(code, "UNKNOWN"),
    }
    err.update(extra)
    if details:
        err["details"] = details
    return {"error": err}


def error_info(reason: str, metadata: dict[str, str] | None = None, domain: str = DOMAIN) -> dict[str, Any]:
    info: dict[str, Any] = {"@type": ERROR_INFO, "reason": reason, "domain": domain}
    if metadata:
        info["metadata"] = metadata
    return info


def parse_duration(value: str | float | int) -> float:
    """'2.5s' or a number of seconds -> seconds. Raises ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError("retry_delay must be a duration like '2.5s'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("retry_delay must not be negative")
        return float(value)
    if not isinstance(value, str) or not _DURATION.match(value):
        raise ValueError("retry_delay must be a duration like '2.5s'")
    return float(value[:-1])


def format_duration(seconds: float) -> str:
    """Protobuf Duration JSON form: '2.5s', '21599.960323804s'."""
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"


def human_duration(seconds: float) -> str:
    """The backend's quotaResetDelay style: '5h59m59.96s', '2.5s'."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours >= 1:
        out += f"{int(hours)}h"
    if minutes >= 1 or out:
        out += f"{int(minutes)}m"
    sec_text = f"{secs:.2f}".rstrip("0").rstrip(".")
    return out + f"{sec_text}s"


def rate_limited(model: str | None, retry_delay: float | None, reason: str | None = None,
                 message: str | None = None) -> dict[str, Any]:
    """429. With a delay: the structured form (ErrorInfo + RetryInfo); without: the generic body."""
    if retry_delay is None and reason is None:
        return google_error(429, message or GENERIC_429_MESSAGE,
                            errors=[{"domain": "global", "reason": "rateLimitExceeded"}])
    reason = reason or "RATE_LIMIT_EXCEEDED"
    metadata: dict[str, str] = {"uiMessage": "true"}
    if model:
        metadata["model"] = model
    details: list[dict[str, Any]] = []
    if retry_delay is not None:
        metadata["quotaResetDelay"] = human_duration(retry_delay)
        metadata["quotaResetTimeStamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                        time.gmtime(time.time() + retry_delay))
        default_msg = f"You have exhausted your capacity on this model. Your quota will reset after " \
                      f"{metadata['quotaResetDelay']}."
    else:
        default_msg = "You have exhausted your capacity on this model."
    details.append(error_info(reason, metadata))
    if retry_delay is not None:
        details.append({"@type": RETRY_INFO, "retryDelay": format_duration(retry_delay)})
    return google_error(429, message or default_msg, details=details)


def unauthenticated(reason: str = "ACCESS_TOKEN_EXPIRED") -> dict[str, Any]:
    return google_error(401, details=[error_info(reason, {"service": DOMAIN, "method":
                                                          "google.internal.cloud.code.v1internal.CloudCode"},
                                                 domain="googleapis.com")])


def fault_body(code: int, model: str | None, retry_delay: float | None, reason: str | None,
               message: str | None) -> dict[str, Any]:
    """The body a scripted HTTP-status fault answers with."""
    if code == 429:
        return rate_limited(model, retry_delay, reason, message)
    if code == 401:
        return unauthenticated(reason or "ACCESS_TOKEN_EXPIRED")
    return google_error(code, message, reason=reason)


# --- OAuth token endpoint (RFC 6749 error form, not Google's RPC form) -----------------------

def oauth_error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": description}


INVALID_GRANT = oauth_error("invalid_grant", "Token has been expired or revoked.")

OAUTH_FAULTS = {
    400: oauth_error("invalid_request", "Bad Request"),
    401: oauth_error("invalid_client", "Unauthorized"),
    403: oauth_error("access_denied", "Forbidden"),
    429: oauth_error("rate_limit_exceeded", "Rate limit exceeded"),
    500: oauth_error("internal_failure", "Backend Error"),
    503: oauth_error("temporarily_unavailable", "The service is currently unavailable."),
}
