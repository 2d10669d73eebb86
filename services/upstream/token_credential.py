"""A credential whose access token comes from a token endpoint: the base of the Code Assist
OAuth login (oauth_credential.py) and of the Vertex AI service-account and authorized-user kinds
(cloud_credentials.py).

It holds what every such kind needs once: the endpoint's HTTP session, URL and timeout, the
single flight that makes concurrent callers share one refresh, the `refreshes` counter, the
replicas' refresh lease, and the mapping of the endpoint's answer (a token, a refusal that
condemns the secret, or a failure worth retrying).
"""
from __future__ import annotations

import abc
import time
from typing import Any, Awaitable, Callable, ClassVar, Mapping, NoReturn

from . import token_endpoint
from .credentials import Credential
from .errors import RefreshError
from .singleflight import SingleFlight


class TokenEndpointCredential(Credential):
    """A credential that gets its bearer token by a grant at a token endpoint."""

    # HTTP statuses that, with an OAuth `error` field, refuse the grant itself: the secret is
    # dead (revoked, deleted, disabled) and only an operator can bring it back.
    refusal_statuses: ClassVar[frozenset[int]] = frozenset({400, 401})
    # A token this close to its expiry is due for refresh (and is not taken from another replica).
    refresh_ahead_ms: ClassVar[float]

    def __init__(self, id: str, *, http: token_endpoint.TokenHttp, token_url: str, timeout: float,
                 project_override: str | None = None) -> None:
        super().__init__(id, project_override=project_override)
        self._http = http
        self._token_url = token_url
        self._timeout = timeout
        self._flight: SingleFlight[None] = SingleFlight()
        self.refreshes = 0

    async def _under_lease(self, rejected: str | None, obtain: Callable[[], Awaitable[None]]) -> None:
        """Run `obtain` (a refresh here) under the replicas' lease when shared, else at once."""
        if self.shared is not None:
            await self.shared.tokens.refresh(self, rejected, obtain)
        else:
            await obtain()

    def _shared_token(self, record: Mapping[str, Any], rejected: str | None) -> tuple[str, float] | None:
        """The access token and its expiry (epoch ms) in another replica's token `record` when it is
        for this secret, is not the `rejected` one, and is not due for refresh; else None."""
        fps, token, expiry = record.get("fp"), record.get("at"), record.get("exp")
        if not isinstance(fps, list) or self.fingerprint() not in fps:
            return None
        if not isinstance(token, str) or not token or token == rejected:
            return None
        if not isinstance(expiry, (int, float)) or expiry <= time.time() * 1000 + self.refresh_ahead_ms:
            return None
        return token, expiry

    async def _request_token(self, form: dict[str, str]) -> dict[str, Any]:
        """The endpoint's token reply (it has a string `access_token`) to the grant `form`.

        Raises RefreshError: permanent (and the credential is DEAD) when the endpoint refuses
        the grant, else transient."""
        self.refreshes += 1
        status, reply = await token_endpoint.request_token(self._http, self._token_url, form, self._timeout)
        if status != 200 or not isinstance(reply, dict) or not isinstance(reply.get("access_token"), str):
            self._refused(status, reply)
        return reply

    def _refused(self, status: int, reply: Any) -> NoReturn:
        error, description = token_endpoint.refusal(reply)
        if status in self.refusal_statuses and error:
            detail = self._dead_detail(error, description)
            self.mark_dead(detail)
            raise RefreshError(detail, permanent=True)
        raise RefreshError(f"token endpoint answered HTTP {status}" + (f" ({error})" if error else ""),
                           permanent=False)

    @abc.abstractmethod
    def _dead_detail(self, error: str, description: str) -> str:
        """What the operator reads when the endpoint refused the grant (`error`: its OAuth code)."""
