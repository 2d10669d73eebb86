"""Simulated Google accounts: refresh tokens, access tokens, Code Assist projects, onboarding LROs.

Everything lives in memory and is touched only from the event loop, so no locks.
"""
from __future__ import annotations

import hashlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .errors import google_error

TIERS = {
    "free-tier": {
        "id": "free-tier",
        "name": "Gemini Code Assist for individuals",
        "description": "Use Gemini Code Assist for free.",
        "userDefinedCloudaicompanionProject": False,
    },
    "standard-tier": {
        "id": "standard-tier",
        "name": "Gemini Code Assist Standard",
        "description": "Gemini Code Assist with a Google Cloud project.",
        "userDefinedCloudaicompanionProject": True,
    },
}
SCOPE = ("https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email "
         "https://www.googleapis.com/auth/userinfo.profile openid")
POLLS_UNTIL_DONE = 2
# Access tokens kept per account; older ones are forgotten (a long benchmark must not grow memory).
TOKENS_PER_ACCOUNT = 64


class AccountError(ValueError):
    """A control-API account spec that cannot be applied."""


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_project(refresh_token: str) -> str:
    return f"sim-project-{short_hash(refresh_token)}"


@dataclass
class Account:
    refresh_token: str
    email: str
    onboarded: bool = True
    tier: str = "free-tier"
    # The project this account may use once onboarded; for an explicit spec it is fixed up front.
    project: str | None = None
    token_ttl: float = 3600.0
    revoked: bool = False
    tokens: deque[str] = field(default_factory=deque)
    # retrieveUserQuota: model → remaining fraction (models not named: 1.0).
    quota: dict[str, float] = field(default_factory=dict)
    # loadCodeAssist refuses the account with this ineligible-tier reason code (e.g. UNSUPPORTED_CLIENT).
    ineligible: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "refresh_token": self.refresh_token,
            "email": self.email,
            "onboarded": self.onboarded,
            "tier": self.tier,
            "project": self.project if self.onboarded else None,
            "token_ttl": self.token_ttl,
            "revoked": self.revoked,
            "quota": self.quota,
            "ineligible": self.ineligible,
        }


@dataclass
class Operation:
    name: str
    refresh_token: str
    project: str
    polls: int = 0

    @property
    def done(self) -> bool:
        return self.polls >= POLLS_UNTIL_DONE


@dataclass
class Token:
    refresh_token: str
    expires_at: float


class AccountStore:
    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, Token] = {}
        self.operations: dict[str, Operation] = {}
        self._token_seq = itertools.count(1)
        self._op_seq = itertools.count(1)

    # --- registry -------------------------------------------------------------------------

    def upsert(self, spec: dict[str, Any]) -> Account:
        rt = spec.get("refresh_token")
        if not isinstance(rt, str) or not rt:
            raise AccountError("refresh_token (non-empty string) is required")
        unknown = set(spec) - {"refresh_token", "email", "onboarded", "tier", "project", "token_ttl", "revoked",
                               "quota", "ineligible"}
        if unknown:
            raise AccountError(f"unknown account fields: {sorted(unknown)}")
        tier = spec.get("tier", "free-tier")
        if tier not in TIERS:
            raise AccountError(f"tier must be one of {sorted(TIERS)}")
        ttl = spec.get("token_ttl", 3600)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0:
            raise AccountError("token_ttl must be a number of seconds >= 0")
        project = spec.get("project")
        if project is not None and (not isinstance(project, str) or not project):
            raise AccountError("project must be a non-empty string")
        for flag in ("onboarded", "revoked"):
            if flag in spec and not isinstance(spec[flag], bool):
                raise AccountError(f"{flag} must be a boolean")
        acct = self.accounts.get(rt) or self._new(rt)
        acct.email = spec.get("email", acct.email)
        acct.onboarded = spec.get("onboarded", True)
        acct.tier = tier
        acct.project = project or (default_project(rt) if tier == "free-tier" or acct.onboarded else None)
        acct.token_ttl = float(ttl)
        acct.revoked = spec.get("revoked", False)
        quota = spec.get("quota", {})
        if not isinstance(quota, dict) or not all(isinstance(v, (int, float)) for v in quota.values()):
            raise AccountError("quota must map model ids to remaining fractions")
        acct.quota = {str(k): float(v) for k, v in quota.items()}
        ineligible = spec.get("ineligible")
        if ineligible is not None and not isinstance(ineligible, str):
            raise AccountError("ineligible must be a reason code")
        acct.ineligible = ineligible
        if acct.revoked:
            self._expire_tokens(acct)
        self.accounts[rt] = acct
        return acct

    def _new(self, rt: str) -> Account:
        return Account(refresh_token=rt, email=f"sim-{short_hash(rt)}@example.com", project=default_project(rt))

    def lookup(self, refresh_token: str) -> Account | None:
        """The account for a refresh token, created (onboarded) on first use unless strict."""
        acct = self.accounts.get(refresh_token)
        if acct is None and not self.strict:
            acct = self.accounts[refresh_token] = self._new(refresh_token)
        return acct

    def revoke(self, refresh_token: str) -> Account | None:
        acct = self.accounts.get(refresh_token)
        if acct is not None:
            acct.revoked = True
            self._expire_tokens(acct)
        return acct

    def expire(self, refresh_token: str) -> Account | None:
        acct = self.accounts.get(refresh_token)
        if acct is not None:
            self._expire_tokens(acct)
        return acct

    def _expire_tokens(self, acct: Account) -> None:
        for tok in acct.tokens:
            entry = self.tokens.get(tok)
            if entry is not None:
                entry.expires_at = 0.0

    # --- OAuth ----------------------------------------------------------------------------

    def refresh(self, refresh_token: str) -> dict[str, Any] | None:
        """A token response, or None for invalid_grant (unknown or revoked)."""
        acct = self.lookup(refresh_token)
        if acct is None or acct.revoked:
            return None
        n = next(self._token_seq)
        token = f"ya29.sim-{short_hash(refresh_token)}-{n:06d}"  # counter last: masks stay distinct
        self.tokens[token] = Token(refresh_token, time.time() + acct.token_ttl)
        acct.tokens.append(token)
        if len(acct.tokens) > TOKENS_PER_ACCOUNT:
            self.tokens.pop(acct.tokens.popleft(), None)
        ttl = acct.token_ttl
        return {"access_token": token, "expires_in": int(ttl) if ttl == int(ttl) else ttl,
                "scope": SCOPE, "token_type": "Bearer"}

    def identify(self, authorization: str | None) -> tuple[Account | None, str | None]:
        """(account the bearer token belongs to, 401 reason or None when the token is valid)."""
        if not authorization:
            return None, "CREDENTIALS_MISSING"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "CREDENTIALS_MISSING"
        entry = self.tokens.get(token.strip())
        if entry is None:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        acct = self.accounts.get(entry.refresh_token)
        if acct is None:
            return None, "ACCESS_TOKEN_TYPE_UNSUPPORTED"
        if entry.expires_at <= time.time():
            return acct, "ACCESS_TOKEN_EXPIRED"
        return acct, None

    # --- Code Assist setup ----------------------------------------------------------------

    def load(self, acct: Account) -> dict[str, Any]:
        tier = dict(TIERS[acct.tier], isDefault=True)
        if acct.ineligible:
            # Since 2026-06-18 individual tiers get UNSUPPORTED_CLIENT (backends.md §3).
            return {"ineligibleTiers": [{
                "reasonCode": acct.ineligible, "tierId": acct.tier, "tierName": tier["name"],
                "reasonMessage": "This client is no longer supported for Gemini Code Assist for individuals. To "
                                 "continue using Gemini, please migrate to the Antigravity suite of products: "
                                 "https://antigravity.google"}]}
        if acct.onboarded:
            return {"currentTier": dict(tier, hasOnboardedPreviously=True, hasAcceptedTos=True),
                    "allowedTiers": [tier], "cloudaicompanionProject": acct.project}
        return {"allowedTiers": [tier]}

    def onboard(self, acct: Account, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(200, LRO) or (http status, Google error body)."""
        tier_id = body.get("tierId")
        if tier_id not in TIERS:
            return 400, google_error(400, f"Invalid tierId {tier_id!r}.")
        if tier_id != acct.tier:
            return 403, google_error(403, f"The caller is not eligible for tier {tier_id}.")
        requested = body.get("cloudaicompanionProject")
        if acct.tier == "free-tier":
            if requested:
                # The free tier runs on a Google-managed project; the real backend refuses a project.
                return 400, google_error(400, "Precondition check failed.", "FAILED_PRECONDITION")
            project = acct.project or default_project(acct.refresh_token)
        else:
            if not isinstance(requested, str) or not requested:
                return 400, google_error(400, "cloudaicompanionProject is required for tier standard-tier.")
            if acct.project and requested != acct.project:
                return 403, google_error(403)
            project = requested
        if acct.onboarded:
            return 200, {"name": f"operations/onboard-{short_hash(acct.refresh_token)}-done", "done": True,
                         "response": self._onboard_response(project)}
        # Older CLIs re-POST onboardUser instead of polling: that advances the same operation.
        for op in self.operations.values():
            if op.refresh_token == acct.refresh_token and not op.done:
                return 200, self.poll(acct, op.name) or {}
        name = f"operations/onboard-{short_hash(acct.refresh_token)}-{next(self._op_seq)}"
        self.operations[name] = Operation(name, acct.refresh_token, project)
        return 200, {"name": name, "done": False}

    def poll(self, acct: Account, name: str) -> dict[str, Any] | None:
        op = self.operations.get(name)
        if op is None or op.refresh_token != acct.refresh_token:
            return None
        op.polls += 1
        if not op.done:
            return {"name": op.name, "done": False}
        acct.onboarded = True
        acct.project = op.project
        return {"name": op.name, "done": True, "response": self._onboard_response(op.project)}

    @staticmethod
    def _onboard_response(project: str) -> dict[str, Any]:
        return {"@type": "type.googleapis.com/google.internal.cloud.code.v1internal.OnboardUserResponse",
                "cloudaicompanionProject": {"id": project, "name": project}}
