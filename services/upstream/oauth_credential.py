"""Code Assist OAuth: a Gemini CLI `oauth_creds.json` file whose access token is refreshed with
its refresh token, single flight per credential, and written back atomically; and the scan for
such files (the upstream's, and `make run`'s check before it starts)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import orjson

from . import token_store, token_endpoint
from .credentials import CredentialState, fingerprint
from .errors import RefreshError
from .token_credential import TokenEndpointCredential

log = logging.getLogger(__name__)

# Refresh this long before the token expires (google-auth-library's eager threshold).
EAGER_REFRESH_MS = 5 * 60 * 1000
# Refresh tokens remembered per lineage (rotations) when replicas share tokens.
_LINEAGE = 4


class OAuthCredential(TokenEndpointCredential):
    """A Gemini CLI oauth_creds.json file."""

    kind = "gemini-cli-oauth"
    refresh_ahead_ms = EAGER_REFRESH_MS

    def __init__(self, path: Path, data: dict[str, Any], *, http: token_endpoint.TokenHttp, token_url: str,
                 client_id: str, client_secret: str, timeout: float = 30.0) -> None:
        project = data.get("project_id")
        super().__init__(path.stem, http=http, token_url=token_url, timeout=timeout,
                         project_override=project if isinstance(project, str) else None)
        self.path = path
        self._data = dict(data)
        self._client_id = client_id
        self._client_secret = client_secret
        self._headers: dict[str, str] | None = None
        # Fingerprints of the refresh tokens of this login (more than one after rotations).
        self._lineage = [self.fingerprint()]
        if data.get("disabled") is True:
            self.state = CredentialState.DISABLED
            self.detail = "disabled in its credential file"

    # --- token state -----------------------------------------------------------------------

    @property
    def access_token(self) -> str:
        token = self._data.get("access_token")
        return token if isinstance(token, str) else ""

    def fingerprint(self) -> str:
        return fingerprint(str(self._data.get("refresh_token") or ""))

    def token_record(self) -> dict[str, Any] | None:
        if not self.access_token:
            return None
        record: dict[str, Any] = {"at": self.access_token, "exp": self._expiry_ms() or
                                  int(time.time() * 1000) + 3600 * 1000, "fp": self._lineage[-_LINEAGE:]}
        if len(self._lineage) > 1:
            record["rt"] = self._data.get("refresh_token")  # rotated: replicas whose file is older need it
        return record

    def take_token(self, record: Mapping[str, Any], rejected: str | None) -> bool:
        shared = self._shared_token(record, rejected)
        if shared is None:
            return False
        token, expiry = shared
        rotated = record.get("rt")
        if isinstance(rotated, str) and rotated:
            self._data["refresh_token"] = rotated
        self._data["access_token"] = token
        self._data["expiry_date"] = int(expiry)
        self._lineage = [str(f) for f in record["fp"]][-_LINEAGE:]
        self._set_headers()
        return True

    def reload(self, data: Any) -> bool:
        if not isinstance(data, dict):
            return False
        disabled = data.get("disabled") is True
        if disabled and self.state is not CredentialState.DISABLED:
            self.state, self.detail = CredentialState.DISABLED, "disabled in its credential file"
        elif not disabled and self.state is CredentialState.DISABLED:
            self.state, self.detail = CredentialState.READY, ""
        if not looks_like_oauth_creds(data) or data.get("refresh_token") == self._data.get("refresh_token"):
            return False
        if fingerprint(str(data["refresh_token"])) in self._lineage:
            return False  # an older refresh token of this login (another replica rotated it)
        # A new login: the old token, project and death are history.
        self._data = dict(data)
        self._lineage = [self.fingerprint()]
        self._headers = None
        project = data.get("project_id")
        self.project_override = project if isinstance(project, str) and project else self.project_override
        if self.state is CredentialState.DEAD:
            self.revive(f"new login in {self.path}")
        self.discovered_project = None
        return True

    def _expiry_ms(self) -> int | None:
        value = self._data.get("expiry_date")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        return None

    def needs_refresh(self, now_ms: int | None = None) -> bool:
        if not self.access_token:
            return True
        expiry = self._expiry_ms()
        if expiry is None:
            # google-auth-library treats a token without expiry as valid until a 401 says not.
            return False
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        return expiry <= now_ms + EAGER_REFRESH_MS

    # --- interface -------------------------------------------------------------------------

    def ready_headers(self) -> dict[str, str] | None:
        # No _headers until _refresh() took up the file's token (first use, a new login), fresh or not.
        if self.state is CredentialState.DEAD or self._headers is None or self.needs_refresh():
            return None
        return self._headers

    async def _refresh_headers(self) -> dict[str, str]:
        await self._refresh(rejected_token=None)
        assert self._headers is not None
        return self._headers

    async def refresh(self, rejected: Mapping[str, str] | None = None) -> None:
        token = ""
        if rejected is not None:
            token = rejected.get("Authorization", "").removeprefix("Bearer ")
        await self._refresh(rejected_token=token if rejected is not None else None)

    # --- refresh ---------------------------------------------------------------------------

    async def _refresh(self, rejected_token: str | None) -> None:
        if self.state is CredentialState.DEAD:
            raise RefreshError(self.detail, permanent=True, ineligible=self.ineligible)
        if not self._flight.running:
            if rejected_token is None:
                if not self.needs_refresh():
                    self._set_headers()
                    return
            elif self.access_token and self.access_token != rejected_token and not self.needs_refresh():
                return  # another call already replaced the rejected token
        await self._flight.run(lambda: self._refresh_now(rejected_token))

    async def _refresh_now(self, rejected_token: str | None) -> None:
        await self._under_lease(rejected_token, lambda: self._refresh_local(rejected_token))

    async def _refresh_local(self, rejected_token: str | None) -> None:
        if await self._adopt_from_disk(rejected_token):
            return
        await self._refresh_from_endpoint()

    async def _adopt_from_disk(self, rejected_token: str | None) -> bool:
        """Use a token another process (the Gemini CLI, another replica) already wrote."""
        try:
            disk = await token_store.read_async(self.path)
        except (OSError, orjson.JSONDecodeError):
            return False
        if not isinstance(disk, dict) or not disk.get("refresh_token"):
            return False
        current_rt = self._data.get("refresh_token")
        token = disk.get("access_token")
        expiry = disk.get("expiry_date")
        newer = (isinstance(token, str) and token and token != self.access_token and token != rejected_token
                 and isinstance(expiry, (int, float)) and expiry > time.time() * 1000 + EAGER_REFRESH_MS)
        if disk.get("refresh_token") != current_rt:
            # Another login in the file: a new one is taken whole, as the file watcher takes it
            # (reload); an older refresh token of this login (rotated since) is nothing to take.
            if not self.reload(disk):
                return False
            log.info("credential %s: picked up a new login from %s", self.id, self.path)
            if not newer:
                return False
        elif not newer:
            return False
        else:
            self._data = dict(disk)
        self._set_headers()
        log.info("credential %s: adopted a fresh token written by another process", self.id)
        return True

    async def _refresh_from_endpoint(self) -> None:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": str(self._data.get("refresh_token", "")),
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        reply = await self._request_token(form)
        now_ms = int(time.time() * 1000)
        sent = self._data.get("refresh_token")
        # No headers until the file holds the new token: meanwhile callers join this flight, so
        # none is served with a token that a crash would lose and that readers of the file lack.
        self._headers = None
        self._data = token_store.merge_token_reply(self._data, reply, now_ms)
        if self._data.get("refresh_token") != sent:
            self._lineage = (self._lineage + [self.fingerprint()])[-_LINEAGE:]
        log.info("credential %s: access token refreshed", self.id)
        try:
            replaced = await self._persist()
        except OSError as exc:
            # The token works from memory; the next refresh will try to write again.
            log.warning("credential %s: could not write %s: %s", self.id, self.path, exc)
            replaced = False
        if replaced and self.needs_refresh():
            await self._refresh_from_endpoint()  # the new login's own token, for the callers waiting
            return
        self._set_headers()

    def _dead_detail(self, error: str, description: str) -> str:
        if error == "invalid_grant":
            return (f"refresh token expired or revoked (invalid_grant: {description or 'no description'}); "
                    f"log in again with the Gemini CLI and replace {self.path}")
        return f"token endpoint refused the refresh ({error}: {description or 'no description'})"

    async def _persist(self) -> bool:
        """Write the refreshed token to the file; True (nothing written) when a new login
        replaced the file meanwhile, which this credential has then taken up instead."""
        # Keep what is on disk that we do not manage (fields written by the CLI since we loaded).
        try:
            disk = await token_store.read_async(self.path)
        except (OSError, orjson.JSONDecodeError):
            disk = None
        if looks_like_oauth_creds(disk) and self.reload(disk):
            # A new login (the Gemini CLI's /auth) landed while this refresh ran: it wins; the
            # token just refreshed belongs to the login it replaced and is dropped, not written.
            log.info("credential %s: a new login reached %s during a refresh; it is kept", self.id, self.path)
            return True
        data = dict(disk) if isinstance(disk, dict) and disk.get("refresh_token") == self._data.get("refresh_token") else {}
        data.update(self._data)
        await token_store.write_async(self.path, data)
        return False

    def _set_headers(self) -> None:
        self._headers = {"Authorization": f"Bearer {self.access_token}"}


def looks_like_oauth_creds(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("refresh_token"), str) and bool(data["refresh_token"])


def scan_credential_files(path: Path) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Credential files at `path` (a file, or a directory of *.json) and notes on skipped ones."""
    found: list[tuple[Path, dict[str, Any]]] = []
    notes: list[str] = []
    if path.is_dir():
        candidates = sorted(p for p in path.glob("*.json") if p.is_file())
        if not candidates:
            notes.append(f"no *.json file in directory {path}")
    elif path.is_file():
        candidates = [path]
    else:
        return [], [f"{path} does not exist"]
    for file in candidates:
        try:
            data = token_store.read_json(file)
        except (OSError, orjson.JSONDecodeError) as exc:
            notes.append(f"{file}: unreadable ({type(exc).__name__})")
            continue
        if not looks_like_oauth_creds(data):
            notes.append(f"{file}: not a Gemini CLI oauth_creds file (no refresh_token)")
            continue
        found.append((file, data))
    return found, notes
