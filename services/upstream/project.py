"""Which Code Assist project a credential sends its calls with.

Flow of the Gemini CLI's setup (protocol notes §3): loadCodeAssist; an onboarded account
(`currentTier`) has its `cloudaicompanionProject`; a new account is onboarded with
onboardUser on its default tier and the long-running operation is polled (GET
`/v1internal/{name}`) every ONBOARD_POLL_INTERVAL seconds, at most ONBOARD_MAX_POLLS times.
An account the backend will not serve (VALIDATION_REQUIRED, ineligible tiers, a licence
missing) raises a permanent ProjectError with the reason, and the pool marks it DEAD.

A project set for the credential (its file's `project_id`, else GOOGLE_CLOUD_PROJECT) wins
and skips discovery. The answer is cached on the credential; discovery runs once at a time
per credential.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping

import orjson

from .code_assist import SETUP_METADATA, CodeAssistClient
from .credentials import Credential
from .errors import BackendError, ProjectError, TransportError
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

# 403 reasons (ErrorInfo.reason, or words of the message) that concern the account itself:
# another credential may well work.
INELIGIBLE_REASONS = ("SUBSCRIPTION_REQUIRED", "VALIDATION_REQUIRED", "CONSUMER_INVALID", "TOS_VIOLATION",
                      "SERVICE_DISABLED", "ACCOUNT_DISABLED", "UNSUPPORTED_CLIENT")
INELIGIBLE_MESSAGES = ("has not been used in project", "it is disabled", "lack a gemini code assist license",
                       "account suspended", "is not enabled")


def ineligible_reason(err: BackendError) -> str | None:
    """Why a 403 is this credential's own problem (None: a generic refusal)."""
    if err.http_status != 403:
        return None
    if err.reason.upper() in INELIGIBLE_REASONS:
        return err.reason.upper()
    message = err.message.lower()
    for phrase in INELIGIBLE_MESSAGES:
        if phrase in message:
            return "API_NOT_ENABLED" if "not been used" in phrase or "disabled" in phrase or "not enabled" in phrase \
                else "INELIGIBLE"
    return None


def describe_ineligible(load: Mapping[str, Any]) -> str | None:
    """A readable reason from loadCodeAssist's ineligibleTiers, or None."""
    tiers = load.get("ineligibleTiers")
    if not isinstance(tiers, list):
        return None
    parts = []
    for tier in tiers:
        if not isinstance(tier, dict):
            continue
        code = str(tier.get("reasonCode") or "UNKNOWN")
        text = str(tier.get("reasonMessage") or "").strip()
        url = tier.get("validationUrl")
        piece = f"{code}" + (f": {text}" if text else "")
        if code == "VALIDATION_REQUIRED" and url:
            piece += f" — verify the account at {url}, then rewrite its credential file (or wait for the re-check)"
        elif code == "UNSUPPORTED_CLIENT":
            piece += (" — Code Assist no longer serves this tier: use a Standard/Enterprise seat, or AI Studio / "
                      "Vertex AI keys")
        parts.append(piece)
    return "; ".join(parts) or None


def _project_id(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return value["id"]
    return None


def _default_tier(load: Mapping[str, Any]) -> dict[str, Any]:
    tiers = load.get("allowedTiers")
    if isinstance(tiers, list):
        for tier in tiers:
            if isinstance(tier, dict) and tier.get("isDefault"):
                return tier
    return {"id": "legacy-tier", "userDefinedCloudaicompanionProject": True}


class ProjectResolver:
    def __init__(self, client: CodeAssistClient, *, poll_interval: float, max_polls: int) -> None:
        self._client = client
        self._poll_interval = poll_interval
        self._max_polls = max_polls
        self._flights: dict[str, SingleFlight[str]] = {}
        self.discoveries = 0

    async def resolve(self, cred: Credential) -> str | None:
        if not cred.project_unknown:
            return cred.project
        flight = self._flights.setdefault(cred.id, SingleFlight())
        return await flight.run(lambda: self._discover_and_keep(cred))

    async def _discover_and_keep(self, cred: Credential) -> str:
        if cred.project:
            return cred.project
        shared = cred.shared  # several replicas: one may have found it already
        found = await shared.project_of(cred) if shared is not None else None
        if found is not None:
            cred.discovered_project, cred.tier = found
            return found[0]
        project = await self._discover(cred)
        cred.discovered_project = project
        log.info("credential %s: Code Assist project %s", cred.id, project)
        if shared is not None:
            await shared.keep_project(cred, project)
        return project

    async def _authed(self, cred: Credential, call: Callable[[Mapping[str, str]], Awaitable[Any]]) -> Any:
        """Run a setup call; a 401 refreshes the token once. Backend answers → ProjectError."""
        headers = await cred.auth_headers()
        try:
            try:
                return await call(headers)
            except BackendError as err:
                if err.http_status != 401:
                    raise
                await cred.refresh(rejected=headers)
                return await call(await cred.auth_headers())
        except BackendError as err:
            raise self._classify(err) from None
        except TransportError as err:
            raise ProjectError(f"project discovery failed: {err.message}", permanent=False) from None

    @staticmethod
    def _classify(err: BackendError) -> ProjectError:
        if err.http_status == 403:
            why = ineligible_reason(err) or err.reason or "PERMISSION_DENIED"
            return ProjectError(f"Code Assist refused the account ({why}): {err.message}",
                                permanent=True, ineligible=True)
        if err.http_status in (408, 429) or err.http_status >= 500:
            return ProjectError(f"project discovery failed for now: {err}", permanent=False)
        if err.http_status == 401:
            return ProjectError(f"Code Assist rejected the refreshed token: {err.message}", permanent=False)
        return ProjectError(f"project discovery failed: {err}", permanent=True, ineligible=True)

    async def _discover(self, cred: Credential) -> str:
        self.discoveries += 1
        body = orjson.dumps({"metadata": SETUP_METADATA})
        load = await self._authed(cred, lambda h: self._client.call("loadCodeAssist", h, body))
        if not isinstance(load, dict):
            raise ProjectError("loadCodeAssist answered something that is not an object", permanent=False)

        if load.get("currentTier"):
            paid, current = load.get("paidTier"), load.get("currentTier")
            cred.tier = str((paid.get("id") if isinstance(paid, dict) else None)
                            or (current.get("id") if isinstance(current, dict) else None) or "")
            project = _project_id(load.get("cloudaicompanionProject"))
            if project:
                return project
            why = describe_ineligible(load)
            raise ProjectError(
                f"account is onboarded but has no Code Assist project ({why})" if why else
                "account's tier needs a Google Cloud project: set `project_id` in its credential file "
                "or GOOGLE_CLOUD_PROJECT", permanent=True, ineligible=True)

        tier = _default_tier(load)
        if not load.get("allowedTiers"):
            why = describe_ineligible(load)
            if why:
                raise ProjectError(f"account is not eligible for Code Assist: {why}", permanent=True, ineligible=True)
        tier_id = str(tier.get("id") or "legacy-tier")
        if tier_id != "free-tier" and tier.get("userDefinedCloudaicompanionProject"):
            raise ProjectError(f"tier {tier_id} needs a Google Cloud project: set `project_id` in the credential "
                               "file or GOOGLE_CLOUD_PROJECT", permanent=True, ineligible=True)
        cred.tier = tier_id
        return await self._onboard(cred, tier_id)

    async def _onboard(self, cred: Credential, tier_id: str) -> str:
        # The free tier runs on a Google-managed project: no project may be sent.
        body = orjson.dumps({"tierId": tier_id, "metadata": SETUP_METADATA})
        log.info("credential %s: onboarding on %s", cred.id, tier_id)
        lro = await self._authed(cred, lambda h: self._client.call("onboardUser", h, body))
        polls = 0
        while not (isinstance(lro, dict) and lro.get("done")):
            if polls >= self._max_polls:
                raise ProjectError(f"onboarding did not finish after {polls} polls", permanent=False)
            await asyncio.sleep(self._poll_interval)
            polls += 1
            name = lro.get("name") if isinstance(lro, dict) else None
            if isinstance(name, str) and name:
                lro = await self._authed(cred, lambda h: self._client.get_operation(name, h))
            else:
                # Backends without getOperation: the CLI used to re-send onboardUser.
                lro = await self._authed(cred, lambda h: self._client.call("onboardUser", h, body))
        error = lro.get("error")
        if isinstance(error, dict):
            raise ProjectError(f"onboarding failed: {error.get('message') or error}", permanent=True, ineligible=True)
        response = lro.get("response")
        project = _project_id(response.get("cloudaicompanionProject")) if isinstance(response, dict) else None
        if not project:
            raise ProjectError("onboarding finished without a project: set `project_id` in the credential file "
                               "or GOOGLE_CLOUD_PROJECT", permanent=True, ineligible=True)
        return project
