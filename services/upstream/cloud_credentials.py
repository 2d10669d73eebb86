"""Credential kinds for AI Studio and Vertex AI (backends.md §1.1, §2.1, §2.2).

- `ApiKeyCredential`: an AI Studio API key, or a Vertex AI express-mode key; sent as
  `x-goog-api-key`. Nothing to refresh.
- `ServiceAccountCredential`: a Vertex AI service-account JSON key. Its access token comes
  from the JWT-bearer grant: an RS256 assertion signed with the key (google-auth's signer),
  POSTed form-encoded to VERTEX_TOKEN_URL without blocking the event loop.
- `AuthorizedUserCredential`: gcloud Application Default Credentials of a user
  (`type: authorized_user`), refreshed like the Gemini CLI's OAuth login but with its own
  client id and secret. gcloud's file is never written to.

Both token kinds refresh ahead of expiry (google-auth's 3 min 45 s threshold), once at a time
per credential (single flight), and a token the backend answered 401 to is replaced once
for all the calls that saw it.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Mapping

from . import token_endpoint
from .credentials import Credential, CredentialState, fingerprint
from .errors import RefreshError
from .token_credential import TokenEndpointCredential

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth's REFRESH_THRESHOLD.
REFRESH_AHEAD_S = 225.0
ASSERTION_LIFETIME_S = 3600


def key_id(prefix: str, secret: str) -> str:
    """A stable, non-secret id for a key: the prefix and 8 hex digits of its hash."""
    return f"{prefix}-{hashlib.sha256(secret.encode()).hexdigest()[:8]}"


class ApiKeyCredential(Credential):
    needs_project = False

    def __init__(self, id: str, key: str, *, kind: str, express: bool = False,
                 path: Path | None = None) -> None:
        super().__init__(id)
        self.kind = kind  # type: ignore[misc]  # one class serves two backends
        self.auth = "express-key" if express else "api-key"  # type: ignore[misc]
        self.path = path
        self._key = key
        self._headers = {"x-goog-api-key": key}

    def fingerprint(self) -> str:
        return fingerprint(self._key)

    def reload(self, data: Any) -> bool:
        key = data.strip() if isinstance(data, str) else ""
        if not key or key == self._key:
            return False
        self._key = key
        self._headers = {"x-goog-api-key": key}
        if self.state is CredentialState.DEAD:
            self.revive(f"new key in {self.path}")
        return True

    def ready_headers(self) -> dict[str, str] | None:
        return None if self.state is CredentialState.DEAD else self._headers

    async def _refresh_headers(self) -> dict[str, str]:
        # Never reached: a key is ready whenever it is not DEAD, and auth_headers() refuses DEAD.
        return self._headers

    async def refresh(self, rejected: Mapping[str, str] | None = None) -> None:
        # A key cannot be refreshed. Express keys get 401 on some methods (backends.md §2.1):
        # set the key aside for a while rather than call it dead.
        raise RefreshError("the backend answered 401 to this API key", permanent=False)


class _TokenGrantCredential(TokenEndpointCredential):
    """A Vertex AI credential whose token is kept in memory only (its file is never written)."""

    kind = "vertex-ai"
    needs_project = False
    grant_name: ClassVar[str] = "token grant"
    # A Google token endpoint's 403 with an OAuth error refuses the key or account too.
    refusal_statuses = frozenset({400, 401, 403})
    refresh_ahead_ms = REFRESH_AHEAD_S * 1000

    def __init__(self, id: str, info: dict[str, Any], *, http: token_endpoint.TokenHttp, token_url: str,
                 timeout: float, path: Path | None, project: str | None) -> None:
        super().__init__(id, http=http, token_url=token_url, timeout=timeout, project_override=project)
        self.path = path
        self._info = info
        self._token = ""
        self._expires_at = 0.0
        self._headers: dict[str, str] = {}

    def _form(self) -> dict[str, str]:
        raise NotImplementedError

    def _secret(self, info: dict[str, Any]) -> Any:
        raise NotImplementedError

    def reload(self, data: Any) -> bool:
        if not isinstance(data, dict) or self._secret(data) == self._secret(self._info):
            return False
        try:
            self._adopt(data)
        except ValueError as exc:
            log.warning("credential %s: new file content not usable: %s", self.id, exc)
            return False
        self._token, self._expires_at, self._headers = "", 0.0, {}
        if self.state is CredentialState.DEAD:
            self.revive(f"new key material in {self.path}")
        return True

    def _adopt(self, info: dict[str, Any]) -> None:
        self._info = info

    def fingerprint(self) -> str:
        return fingerprint(repr(self._secret(self._info)))

    def token_record(self) -> dict[str, Any] | None:
        if not self._token:
            return None
        return {"at": self._token, "exp": int(self._expires_at * 1000), "fp": [self.fingerprint()]}

    def take_token(self, record: Mapping[str, Any], rejected: str | None) -> bool:
        shared = self._shared_token(record, rejected)
        if shared is None:
            return False
        token, expiry = shared
        self._token, self._expires_at = token, expiry / 1000
        self._headers = {"Authorization": f"Bearer {token}"}
        return True

    async def _obtain(self, rejected: str | None = None) -> None:
        """A new token: under the replicas' lease when shared, else from the token endpoint."""
        await self._under_lease(rejected, self._grant)

    def needs_refresh(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return not self._token or self._expires_at <= now + REFRESH_AHEAD_S

    def ready_headers(self) -> dict[str, str] | None:
        if self.state is CredentialState.DEAD or self.needs_refresh():
            return None
        return self._headers

    async def _refresh_headers(self) -> dict[str, str]:
        await self._flight.run(self._obtain)
        return self._headers

    async def refresh(self, rejected: Mapping[str, str] | None = None) -> None:
        if self.state is CredentialState.DEAD:
            raise RefreshError(self.detail, permanent=True, ineligible=self.ineligible)
        if rejected is not None and not self._flight.running:
            if self._headers and self._headers.get("Authorization") != rejected.get("Authorization"):
                return  # another call already replaced the rejected token
        refused = rejected.get("Authorization", "").removeprefix("Bearer ") if rejected is not None else None
        await self._flight.run(lambda: self._obtain(refused))

    async def _grant(self) -> None:
        reply = await self._request_token(self._form())
        expires_in = reply.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) \
            else 3600.0
        self._token = reply["access_token"]
        self._expires_at = time.time() + lifetime
        self._headers = {"Authorization": f"Bearer {self._token}"}
        log.info("credential %s: access token obtained (%s)", self.id, self.grant_name)


class ServiceAccountCredential(_TokenGrantCredential):
    auth = "service-account"
    grant_name = "JWT-bearer grant"

    def __init__(self, id: str, info: dict[str, Any], **kwargs: Any) -> None:
        project = kwargs.pop("project", None) or info.get("project_id")
        super().__init__(id, info, project=project if isinstance(project, str) else None, **kwargs)
        self._adopt(info)

    def _adopt(self, info: dict[str, Any]) -> None:
        # Imported with the first service account: google-auth's signer brings `cryptography`
        # (~9 MiB) into an upstream that may never use one.
        from google.auth import crypt

        # Raises ValueError on a key that is not an RSA private key in PEM.
        self._signer = crypt.RSASigner.from_service_account_info(info)
        self.email = str(info["client_email"])
        self._info = info

    def _secret(self, info: dict[str, Any]) -> Any:
        return info.get("private_key_id"), info.get("private_key"), info.get("client_email")

    def assertion(self, now: float | None = None) -> str:
        iat = int(time.time() if now is None else now)
        payload = {"iss": self.email, "scope": SCOPE, "aud": self._token_url, "iat": iat,
                   "exp": iat + ASSERTION_LIFETIME_S}
        from google.auth import jwt

        return jwt.encode(self._signer, payload).decode()

    def _form(self) -> dict[str, str]:
        return {"grant_type": JWT_GRANT, "assertion": self.assertion()}

    def _dead_detail(self, error: str, description: str) -> str:
        return (f"the token endpoint refused the service account {self.email} ({error}: "
                f"{description or 'no description'}): its key was deleted or the account disabled; "
                f"create a new key and replace {self.path or 'its file'}")


class AuthorizedUserCredential(_TokenGrantCredential):
    """gcloud `application_default_credentials.json` of a user."""

    auth = "authorized-user"
    grant_name = "refresh-token grant"

    def __init__(self, id: str, info: dict[str, Any], **kwargs: Any) -> None:
        project = kwargs.pop("project", None) or info.get("quota_project_id")
        super().__init__(id, info, project=project if isinstance(project, str) else None, **kwargs)

    def _secret(self, info: dict[str, Any]) -> Any:
        return info.get("refresh_token"), info.get("client_id")

    def _form(self) -> dict[str, str]:
        return {"grant_type": "refresh_token", "refresh_token": str(self._info.get("refresh_token", "")),
                "client_id": str(self._info.get("client_id", "")),
                "client_secret": str(self._info.get("client_secret", ""))}

    def _dead_detail(self, error: str, description: str) -> str:
        return (f"refresh of the Application Default Credentials refused ({error}: "
                f"{description or 'no description'}); run `gcloud auth application-default login` again "
                f"(it rewrites {self.path or 'the file'})")


def vertex_file_kind(data: Any) -> str | None:
    """"service_account", "authorized_user", or None for anything else."""
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    if kind == "service_account" and data.get("private_key") and data.get("client_email"):
        return "service_account"
    if kind == "authorized_user" and data.get("refresh_token") and data.get("client_id"):
        return "authorized_user"
    return None
