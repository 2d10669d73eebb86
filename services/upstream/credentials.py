"""Backend credentials: what the pool holds and asks for request headers.

`Credential` is the interface every kind implements: Code Assist OAuth (`OAuthCredential` in
oauth_credential.py: a Gemini CLI `oauth_creds.json` file whose access token is refreshed with
its refresh token, single flight per credential, and written back atomically), and the AI
Studio / Vertex AI kinds in cloud_credentials.py. The kinds whose access token comes from a
token endpoint share `TokenEndpointCredential` (token_credential.py).

Credentials come back: a DEAD credential whose file is rewritten with new secret material
(a new login, a new key) is READY again (`reload`); one refused for its account (licence,
tier) is probed again after INELIGIBLE_RECHECK_SECONDS (the pool decides when).
"""
from __future__ import annotations

import abc
import enum
import hashlib
import logging
import time
from typing import Any, Callable, ClassVar, Mapping

from .errors import RefreshError

log = logging.getLogger(__name__)


def fingerprint(secret: str) -> str:
    """A non-secret name for secret material (shared DEAD marks and token records carry it)."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


class CredentialState(enum.Enum):
    READY = "READY"
    DEAD = "DEAD"          # needs an operator: new login, licence, verification
    DISABLED = "DISABLED"  # switched off in its file ("disabled": true)


class Credential(abc.ABC):
    """One identity the pool can send backend calls with."""

    kind: ClassVar[str]           # backend: gemini-cli-oauth, ai-studio-key, vertex-ai
    auth: ClassVar[str] = "oauth"  # how it authenticates: oauth, api-key, service-account, ...
    # Code Assist calls carry a discovered project; the other backends do not discover one.
    needs_project: ClassVar[bool] = True
    # Several replicas (REDIS_URL): the shared state (shared_state.SharedState), and who hears
    # of DEAD marks and revivals made here (not those learnt from another replica).
    shared: Any = None
    on_change: Callable[["Credential"], None] | None = None

    def __init__(self, id: str, *, project_override: str | None = None) -> None:
        self.id = id
        self.state = CredentialState.READY
        self.detail = ""
        # The backend refused the account (tier, licence, ToS) rather than its login.
        self.ineligible = False
        self.project_override = project_override or None
        self.discovered_project: str | None = None
        # Code Assist tier found by project discovery (free-tier, standard-tier, ...).
        self.tier = ""
        self.dead_at = 0.0

    @property
    def project(self) -> str | None:
        return self.project_override or self.discovered_project

    @property
    def project_unknown(self) -> bool:
        """A Code Assist project is needed and not known yet: ProjectResolver has work to do."""
        return self.needs_project and not self.project

    @property
    def usable(self) -> bool:
        return self.state is CredentialState.READY

    @property
    def share_key(self) -> str:
        """The member's name in state shared between replicas: the same on every replica."""
        return f"{self.kind}/{self.id}"

    def fingerprint(self) -> str:
        """Names the secret material held now (changes with a new login or key)."""
        return ""

    def token_record(self) -> dict[str, Any] | None:
        """The current access token as other replicas may take it (None: nothing to share)."""
        return None

    def take_token(self, record: Mapping[str, Any], rejected: str | None) -> bool:
        """Use a token another replica refreshed, if it is for this secret, not expiring and not
        the `rejected` one. True when taken."""
        return False

    def mark_dead(self, detail: str, *, ineligible: bool = False, dead_at: float | None = None,
                  notify: bool = True) -> None:
        changed = self.state is not CredentialState.DEAD
        if changed:
            log.error("credential %s is DEAD: %s", self.id, detail)
        self.state = CredentialState.DEAD
        self.detail = detail
        self.ineligible = ineligible
        self.dead_at = time.time() if dead_at is None else dead_at
        if changed and notify and self.on_change is not None:
            self.on_change(self)

    def revive(self, why: str, *, notify: bool = True) -> None:
        """READY again (a new login or key arrived, or an ineligible account is probed again)."""
        changed = self.state is CredentialState.DEAD
        if changed:
            log.warning("credential %s is back: %s", self.id, why)
        self.state = CredentialState.READY
        self.detail = ""
        self.ineligible = False
        self.discovered_project = None
        if changed and notify and self.on_change is not None:
            self.on_change(self)

    def reload(self, data: Any) -> bool:
        """The credential's file changed to `data`: take new secret material. True when the
        secret changed (a DEAD credential is then READY again)."""
        return False

    @abc.abstractmethod
    def ready_headers(self) -> dict[str, str] | None:
        """The headers to send now when no refresh is due (and the credential is not DEAD), else
        None. The one place each kind says when it is ready: the pool's per-call fast path asks
        it first (sparing a coroutine and a timeout), and auth_headers() is built on it."""

    async def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a backend call; refreshes first when needed.

        Raises RefreshError (permanent → the credential is now DEAD)."""
        headers = self.ready_headers()
        if headers is not None:
            return headers
        if self.state is CredentialState.DEAD:
            raise RefreshError(self.detail, permanent=True, ineligible=self.ineligible)
        return await self._refresh_headers()

    @abc.abstractmethod
    async def _refresh_headers(self) -> dict[str, str]:
        """The headers after the refresh that ready_headers() found due (not DEAD): concurrent
        callers share one refresh (single flight)."""

    @abc.abstractmethod
    async def refresh(self, rejected: Mapping[str, str] | None = None) -> None:
        """Get new auth material. With `rejected` (headers the backend answered 401 to),
        refresh only if those are still the current ones, so that many calls failing
        together cause a single refresh."""
