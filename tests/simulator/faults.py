"""Scripted faults: a table of rules matched against each protocol request.

A rule matches on the caller's refresh token (or "*"), the operation (or "*") and, when
given, the model. The first matching rule in insertion order fires and uses up one of its
`times` (-1 = forever).
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

from .errors import parse_duration

OPS = ("refresh", "load", "onboard", "operation", "generate", "stream", "count", "quota", "embed")
STATUS_KINDS = {"400": 400, "401": 401, "403": 403, "429": 429, "500": 500, "503": 503}
KINDS = (*STATUS_KINDS, "invalid_grant", "cut", "slow", "hang", "hold")


class FaultError(ValueError):
    """A fault spec that cannot be applied."""


@dataclass
class Fault:
    id: str
    kind: str
    account: str = "*"
    op: str = "*"
    model: str | None = None
    times: int = 1
    retry_delay: float | None = None
    after_chunks: int = 1
    delay: float = 0.0
    reason: str | None = None
    message: str | None = None

    @property
    def status(self) -> int | None:
        return STATUS_KINDS.get(self.kind)

    def matches(self, account: str | None, op: str, model: str | None) -> bool:
        if self.account != "*" and self.account != account:
            return False
        if self.op != "*" and self.op != op:
            return False
        if self.model is not None and self.model != model:
            return False
        # invalid_grant only exists at the token endpoint.
        return self.kind != "invalid_grant" or op == "refresh"

    def public(self) -> dict[str, Any]:
        return asdict(self)


def _number(spec: dict[str, Any], key: str, default: float, minimum: float) -> float:
    value = spec.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise FaultError(f"{key} must be a number >= {minimum}")
    return float(value)


def parse_fault(fault_id: str, spec: Any) -> Fault:
    if not isinstance(spec, dict):
        raise FaultError("a fault is a JSON object")
    allowed = {"account", "op", "model", "kind", "times", "retry_delay", "after_chunks", "delay", "reason",
               "message"}
    unknown = set(spec) - allowed
    if unknown:
        raise FaultError(f"unknown fault fields: {sorted(unknown)}")
    kind = str(spec.get("kind", ""))
    if kind not in KINDS:
        raise FaultError(f"kind must be one of {list(KINDS)}")
    op = spec.get("op", "*")
    if op != "*" and op not in OPS:
        raise FaultError(f"op must be '*' or one of {list(OPS)}")
    if kind == "invalid_grant" and op not in ("*", "refresh"):
        raise FaultError("invalid_grant applies to op 'refresh' only")
    account = spec.get("account", "*")
    if not isinstance(account, str) or not account:
        raise FaultError("account must be a refresh token or '*'")
    model = spec.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise FaultError("model must be a string")
    times = spec.get("times", 1)
    if isinstance(times, bool) or not isinstance(times, int) or (times < 1 and times != -1):
        raise FaultError("times must be a positive integer or -1 (forever)")
    retry_delay = None
    if spec.get("retry_delay") is not None:
        try:
            retry_delay = parse_duration(spec["retry_delay"])
        except ValueError as exc:
            raise FaultError(str(exc)) from None
    for key in ("reason", "message"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise FaultError(f"{key} must be a string")
    after = spec.get("after_chunks", 1)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise FaultError("after_chunks must be an integer >= 0")
    delay = _number(spec, "delay", 1.0 if kind == "slow" else 0.0, 0.0)
    return Fault(id=fault_id, kind=kind, account=account, op=op, model=model, times=times,
                 retry_delay=retry_delay, after_chunks=after, delay=delay, reason=spec.get("reason"),
                 message=spec.get("message"))


class FaultTable:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: Any) -> Fault:
        fault = parse_fault(f"f{next(self._ids)}", spec)
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def remove(self, fault_id: str) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        return len(self._faults) != before

    def list(self) -> list[dict[str, Any]]:
        return [f.public() for f in self._faults]

    def take(self, account: str | None, op: str, model: str | None) -> Fault | None:
        """The first matching fault, with one use consumed; None when nothing matches."""
        if not self._faults:
            return None
        for fault in self._faults:
            if fault.matches(account, op, model):
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
        return None
