"""A pool member's bookkeeping (cool-downs, learned models, quota, weights) and its report."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from .backends import Backend
from .code_assist_backend import caller_models, reset_seconds
from .credentials import Credential, CredentialState
from .members import MemberSpec

_LEARNED_PER_MEMBER = 256
QUOTA_SPENT = "quota spent (retrieveUserQuota) until its reset"


def cooldown_seconds(retry_delay_s: float | None, strikes: int, default: float, maximum: float) -> float:
    """How long a (member, model) rests after a 429.

    The backend's own delay wins; without one the default doubles with each consecutive 429
    (strikes ≥ 1). Never longer than `maximum`, so a far-off quota reset hint cannot block a
    member long after it recovered: once the cap passes, one call probes it again."""
    if retry_delay_s is not None and retry_delay_s >= 0:
        base = retry_delay_s
    else:
        base = default * (2 ** max(0, min(strikes, 32) - 1))
    return max(0.0, min(base, maximum))


@dataclass(eq=False)
class Entry:
    """A member (credential, backend, routing facts) and the pool's bookkeeping about it."""

    cred: Credential
    spec: MemberSpec = field(default_factory=lambda: MemberSpec(kind="code-assist"))
    backend: Backend | None = None
    identity: str = ""
    cooling: dict[str, float] = field(default_factory=dict)   # model → unix time the rest ends
    strikes: dict[str, int] = field(default_factory=dict)     # model → consecutive 429s
    cooling_reason: dict[str, str] = field(default_factory=dict)
    unsupported: dict[str, float] = field(default_factory=dict)  # model → unix time to ask again
    served: set[str] = field(default_factory=set)             # models it answered
    blocked_until: float = 0.0                                # every model (transient trouble)
    blocked_detail: str = ""
    last_error: str = ""
    quota: dict[str, tuple[float, str]] = field(default_factory=dict)  # model → (fraction, reset time)
    quota_next: float = 0.0                                   # when to poll the quota again
    requests: int = 0
    failures: int = 0
    current: int = 0                                          # smooth weighted round-robin

    def allows(self, model: str) -> bool:
        patterns = self.spec.models
        return not patterns or any(fnmatch.fnmatchcase(model, p) for p in patterns)

    def wait(self, model: str, now: float) -> float:
        """Seconds before this entry can serve `model` (0: now; inf: never)."""
        if self.cred.state is not CredentialState.READY or self.unsupported.get(model, 0.0) > now:
            return float("inf")
        return max(0.0, self.blocked_until - now, self.cooling.get(model, 0.0) - now)

    def cool(self, model: str, seconds: float, reason: str, now: float) -> None:
        self.cooling[model] = now + seconds
        self.cooling_reason[model] = reason

    def block(self, seconds: float, detail: str, now: float) -> None:
        self.blocked_until = now + seconds
        self.blocked_detail = detail

    def learn_unsupported(self, model: str, seconds: float, now: float) -> None:
        if len(self.unsupported) >= _LEARNED_PER_MEMBER:
            self.unsupported = {m: t for m, t in self.unsupported.items() if t > now}
            if len(self.unsupported) >= _LEARNED_PER_MEMBER:
                return
        self.unsupported[model] = now + seconds

    def succeeded(self, model: str) -> None:
        self.served.add(model)
        if self.strikes:
            self.strikes.pop(model, None)
        if self.cooling:
            self.cooling.pop(model, None)
            self.cooling_reason.pop(model, None)


@dataclass
class CredentialReport:
    id: str
    kind: str
    state: str            # READY, COOLING, DEAD, DISABLED
    project: str
    detail: str
    cooling_until: dict[str, float]
    requests: int
    failures: int
    auth: str = ""
    priority: int = 0
    weight: int = 1
    location: str = ""
    models: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()
    last_error: str = ""
    proxy: bool = False
    tier: str = ""
    quota: dict[str, tuple[float, str]] = field(default_factory=dict)


def apply_quota(entry: Entry, quota: dict[str, tuple[float, str]], now: float) -> None:
    """Take a retrieveUserQuota answer: a model at 0 rests until its reset time (the next poll
    may lift it sooner); a model that has quota again stops resting for that reason."""
    entry.quota = quota
    for model, (fraction, reset) in quota.items():
        left = reset_seconds(reset, now) if fraction <= 0 else None
        for asked in caller_models(model):
            if left is not None:
                entry.cool(asked, left, QUOTA_SPENT, now)
            elif entry.cooling_reason.get(asked) == QUOTA_SPENT:
                entry.cooling.pop(asked, None)
                entry.cooling_reason.pop(asked, None)


def build_report(entries: list[Entry], now: float) -> list[CredentialReport]:
    """What ListModels shows of every member."""
    out = []
    for e in entries:
        cooling = {m: until for m, until in e.cooling.items() if until > now}
        state = e.cred.state.value
        detail = e.cred.detail
        if state == "READY":
            if e.blocked_until > now:
                state, detail = "COOLING", e.blocked_detail
                cooling["*"] = e.blocked_until
            elif cooling and not (e.served - cooling.keys()):
                state = "COOLING"
                detail = "; ".join(f"{m}: {e.cooling_reason.get(m, '429')}" for m in cooling)
        out.append(CredentialReport(
            e.cred.id, e.cred.kind, state, e.cred.project or "", detail, cooling, e.requests, e.failures,
            auth=e.cred.auth, priority=e.spec.priority, weight=e.spec.weight,
            location=e.spec.location if e.cred.kind == "vertex-ai" else "", models=e.spec.models,
            unsupported=tuple(sorted(m for m, t in e.unsupported.items() if t > now)),
            last_error=e.last_error, proxy=bool(e.spec.proxy), quota=dict(e.quota), tier=e.cred.tier))
    return out
