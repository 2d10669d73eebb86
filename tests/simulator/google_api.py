"""AI Studio and Vertex AI beside Code Assist in the same simulator (backends.md §1, §2).

Paths:
  AI Studio   /v1beta/models/{m}:generateContent | :streamGenerateContent | :countTokens |
              :batchEmbedContents | :embedContent, GET /v1beta/models[/{m}]      (x-goog-api-key)
  Vertex      /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:{method}  (Bearer)
              /v1/publishers/google/models/{m}:{method}                 (express, x-goog-api-key)
              methods: generateContent, streamGenerateContent, countTokens, predict, embedContent;
              GET /v1beta1/publishers/google/models
  Token       /token with grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer: the assertion's
              RS256 signature is checked against the public key registered for its `iss`.

Keys: any key works unless registered as revoked/leaked (POST /_sim/keys); with
--strict-accounts only registered keys work. Service accounts must be registered
(POST /_sim/service_accounts {client_email, public_key_pem, project?, revoked?, token_ttl?}).
Faults match the key, the service account's e-mail (or an ADC user's refresh token) as
`account`, ops generate/stream/count/embed/refresh, as for Code Assist.
"""
from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson
from google.auth import exceptions as auth_exceptions
from google.auth import jwt
from starlette.responses import Response
from starlette.routing import Route

from . import errors
from .faults import Fault
from .models import EMBEDDING_MODELS

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
HELP = "type.googleapis.com/google.rpc.Help"
AI_DOMAIN = "generativelanguage.googleapis.com"
VERTEX_DOMAIN = "aiplatform.googleapis.com"
RATE_LIMIT_URL = "https://ai.google.dev/gemini-api/docs/rate-limits"


@dataclass
class ApiKey:
    key: str
    revoked: bool = False
    leaked: bool = False

    def public(self) -> dict[str, Any]:
        return {"key": "..." + self.key[-6:], "revoked": self.revoked, "leaked": self.leaked}


@dataclass
class ServiceAccount:
    client_email: str
    public_key_pem: str
    project: str | None = None
    revoked: bool = False
    token_ttl: float = 3600.0
    grants: int = 0

    def public(self) -> dict[str, Any]:
        return {"client_email": self.client_email, "project": self.project, "revoked": self.revoked,
                "token_ttl": self.token_ttl, "grants": self.grants}


@dataclass
class CloudStore:
    keys: dict[str, ApiKey] = field(default_factory=dict)
    service_accounts: dict[str, ServiceAccount] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)   # token → (email, expires_at)
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))

    def grant(self, sa: ServiceAccount) -> dict[str, Any]:
        sa.grants += 1
        token = f"ya29.vertex-{hashlib.sha256(sa.client_email.encode()).hexdigest()[:8]}-{next(self.seq):06d}"
        self.tokens[token] = (sa.client_email, time.time() + sa.token_ttl)
        if len(self.tokens) > 10_000:
            self.tokens.pop(next(iter(self.tokens)))
        ttl = sa.token_ttl
        return {"access_token": token, "expires_in": int(ttl) if ttl == int(ttl) else ttl, "token_type": "Bearer"}

    def revoke_sa(self, email: str) -> None:
        sa = self.service_accounts[email]
        sa.revoked = True
        for token, (owner, _) in list(self.tokens.items()):
            if owner == email:
                self.tokens[token] = (owner, 0.0)


# --- the JWT-bearer grant --------------------------------------------------------------------

def jwt_grant(store: CloudStore, form: dict[str, str], token_url: str) -> tuple[int, dict[str, Any], str | None]:
    """(status, body, account) for a JWT-bearer grant."""
    assertion = form.get("assertion", "")
    try:
        claims = jwt.decode(assertion, verify=False)
    except (ValueError, auth_exceptions.GoogleAuthError):
        return 400, errors.oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token."), None
    email = str(claims.get("iss", ""))
    sa = store.service_accounts.get(email)
    if sa is None:
        return 400, errors.oauth_error("invalid_grant", "Invalid grant: account not found"), email
    try:
        claims = jwt.decode(assertion, certs=sa.public_key_pem, verify=True)
    except (ValueError, auth_exceptions.GoogleAuthError):
        return 400, errors.oauth_error("invalid_grant", "Invalid JWT Signature."), email
    if claims.get("aud") != token_url or "cloud-platform" not in str(claims.get("scope", "")):
        return 400, errors.oauth_error("invalid_grant", "Invalid JWT: audience or scope is wrong."), email
    if sa.revoked:
        return 400, errors.oauth_error("invalid_grant", "Invalid JWT Signature."), email
    return 200, store.grant(sa), email


# --- error bodies ----------------------------------------------------------------------------

def ai_studio_429(model: str | None, retry_delay: float | None, message: str | None) -> dict[str, Any]:
    """With a delay: a per-minute quota and RetryInfo; without: the per-day quota (no delay)."""
    per = "PerMinute" if retry_delay is not None else "PerDay"
    violation = {"quotaMetric": f"{AI_DOMAIN}/generate_content_free_tier_requests",
                 "quotaId": f"GenerateRequests{per}PerProjectPerModel-FreeTier",
                 "quotaDimensions": {"location": "global", "model": model or ""}, "quotaValue": "10"}
    details: list[dict[str, Any]] = [
        {"@type": QUOTA_FAILURE, "violations": [violation]},
        {"@type": HELP, "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_URL}]}]
    if retry_delay is not None:
        details.append({"@type": errors.RETRY_INFO, "retryDelay": f"{int(retry_delay) if retry_delay == int(retry_delay) else retry_delay}s"})
    return errors.google_error(429, message or "You exceeded your current quota, please check your plan and billing "
                               f"details. For more information on this error, head to: {RATE_LIMIT_URL}.",
                               details=details)


def api_key_invalid() -> dict[str, Any]:
    return errors.google_error(400, "API key not valid. Please pass a valid API key.", details=[
        errors.error_info("API_KEY_INVALID", {"service": AI_DOMAIN}, domain="googleapis.com"),
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
         "message": "API key not valid. Please pass a valid API key."}])


def vertex_403(project: str, location: str, model: str) -> dict[str, Any]:
    resource = f"projects/{project}/locations/{location}/publishers/google/models/{model}"
    return errors.google_error(
        403, f"Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/{resource}' "
        "(or it may not exist).", reason=None,
        details=[errors.error_info("IAM_PERMISSION_DENIED", {"permission": "aiplatform.endpoints.predict",
                                                            "resource": resource}, domain=VERTEX_DOMAIN)])


def fault_body(backend: str, fault: Fault, model: str | None) -> dict[str, Any]:
    status = fault.status or 500
    if status == 429:
        if backend == "vertex":
            return errors.google_error(429, fault.message or errors.GENERIC_429_MESSAGE)
        return ai_studio_429(model, fault.retry_delay, fault.message)
    if status == 400 and fault.reason == "API_KEY_INVALID":
        return api_key_invalid()
    domain = VERTEX_DOMAIN if backend == "vertex" else AI_DOMAIN
    details = [errors.error_info(fault.reason, domain=domain)] if fault.reason else None
    return errors.google_error(status, fault.message, details=details)


# --- embeddings -----------------------------------------------------------------------------

def vector(text: str, dims: int) -> list[float]:
    """A deterministic unit-ish vector for a text."""
    seed = hashlib.sha256(text.encode()).digest()
    return [round(((seed[i % 32] + i * 7) % 251) / 251.0 - 0.5, 6) for i in range(dims)]


def _texts(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    return " ".join(p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str))


def _dims(model: str, value: Any) -> int:
    default = EMBEDDING_MODELS[model]
    return value if isinstance(value, int) and 1 <= value <= default else default


Handler = Callable[..., Awaitable[Response]]


def routes(make: Callable[[str, str, Handler], Route]) -> list[Route]:
    """The protocol routes; `make(path, backend, handler)` wires each into the app's call flow."""
    from . import google_api_handlers as h

    return [
        make("/v1beta/models", "ai-studio", h.ai_studio),
        make("/v1beta1/publishers/google/models", "vertex-express", h.vertex),
        make("/v1beta/models/{rest:path}", "ai-studio", h.ai_studio),
        make("/v1/projects/{project}/locations/{location}/publishers/google/models/{rest:path}", "vertex", h.vertex),
        make("/v1beta1/projects/{project}/locations/{location}/publishers/google/models/{rest:path}", "vertex",
             h.vertex),
        make("/v1/publishers/google/models/{rest:path}", "vertex-express", h.vertex),
        make("/v1beta1/publishers/google/models/{rest:path}", "vertex-express", h.vertex),
    ]


def ok(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status, media_type="application/json")
