"""Code Assist as one pool backend: the `v1internal` client behind the common interface.

Code Assist's own model ids apply here only (the Gemini CLI's CCPA_AI_MODEL_MAPPINGS:
gemini-3.5-flash is gemini-3-flash on this backend, not on AI Studio or Vertex). Requests
carry `session_id` inside `request`, as the CLI sends it. An account the backend refuses
(licence, tier, verification, client no longer supported) makes the credential DEAD with a
reason an operator can act on.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Mapping

import orjson

from .backends import Backend, ChunkStream
from .code_assist import Chunk, CodeAssistClient, EventStream, build_count_body, envelope_parts
from .errors import BackendError
from .project import ineligible_reason

if TYPE_CHECKING:
    from .pool import Entry

# GC packages/core/src/config/models.ts CCPA_AI_MODEL_MAPPINGS.
MODEL_MAPPINGS = {"gemini-3.5-flash": "gemini-3-flash"}

ACTIONS = {
    "SUBSCRIPTION_REQUIRED": "the account has no Gemini Code Assist Standard/Enterprise licence; assign one, "
                             "or use AI Studio / Vertex AI keys",
    "VALIDATION_REQUIRED": "Google asks the account owner to verify the account (see the message's link), "
                           "then rewrite the credential file",
    "UNSUPPORTED_CLIENT": "Code Assist no longer serves this account's tier (individual/free/AI Pro/Ultra since "
                          "2026-06-18); use a Standard/Enterprise seat or AI Studio / Vertex AI keys",
    "TOS_VIOLATION": "Google suspended the account for a terms-of-service violation",
    "API_NOT_ENABLED": "the Gemini for Google Cloud API is not enabled in the account's project",
}


def backend_model(model: str) -> str:
    return MODEL_MAPPINGS.get(model, model)


def caller_models(backend_id: str) -> list[str]:
    """The ids callers use for a Code Assist model id (itself, and what maps onto it)."""
    return [backend_id, *(k for k, v in MODEL_MAPPINGS.items() if v == backend_id)]


def reset_seconds(reset: str, now: float) -> float | None:
    """Seconds until an RFC 3339 reset time, None when it is not a future time."""
    try:
        when = dt.datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    return when - now if when > now else None


def parse_quota(reply: Any) -> dict[str, tuple[float, str]]:
    """retrieveUserQuota's buckets as model → (remaining fraction, reset time)."""
    out: dict[str, tuple[float, str]] = {}
    buckets = reply.get("buckets") if isinstance(reply, dict) else None
    for bucket in buckets if isinstance(buckets, list) else []:
        if not isinstance(bucket, dict):
            continue
        model, fraction = bucket.get("modelId"), bucket.get("remainingFraction")
        if isinstance(model, str) and isinstance(fraction, (int, float)) and not isinstance(fraction, bool):
            out[model] = (float(fraction), str(bucket.get("resetTime") or ""))
    return out


def action_for(reason: str) -> str:
    return ACTIONS.get(reason, "")


class CodeAssistBackend(Backend):
    kind = "gemini-cli-oauth"

    def __init__(self, client: CodeAssistClient) -> None:
        self.client = client

    async def generate(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes | memoryview,
                       request_id: str) -> Chunk:
        target = backend_model(model)
        return await self.client.generate(headers, target, envelope_parts(target, entry.cred.project, request_id,
                                                                          body, request_id))

    async def open_stream(self, entry: "Entry", headers: Mapping[str, str], model: str,
                          body: bytes | memoryview, request_id: str) -> ChunkStream:
        target = backend_model(model)
        events: EventStream = await self.client.open_stream(
            headers, target, envelope_parts(target, entry.cred.project, request_id, body, request_id))
        return events  # type: ignore[return-value]  # same next()/aclose() shape

    async def count_tokens(self, entry: "Entry", headers: Mapping[str, str], model: str, body: bytes) -> Any:
        target = backend_model(model)
        return await self.client.count_tokens(headers, target, build_count_body(target, body))

    async def quota(self, entry: "Entry", headers: Mapping[str, str]) -> dict[str, tuple[float, str]]:
        """What retrieveUserQuota says is left per model (as the Gemini CLI polls it)."""
        body = orjson.dumps({"project": entry.cred.project})
        return parse_quota(await self.client.call("retrieveUserQuota", headers, body))

    def account_problem(self, err: BackendError) -> str | None:
        reason = ineligible_reason(err)
        if reason is None:
            return None
        action = action_for(reason)
        return f"Code Assist refused the account ({reason}): {err.message}" + (f" — {action}" if action else "")
