"""Code Assist as one pool backend: the `v1internal` client behind the common interface.

Code Assist's own model ids apply here only (the Gemini CLI's CCPA_AI_MODEL_MAPPINGS:
gemini-3.5-flash is gemini-3-flash on this backend, not on AI Studio or Vertex). Requests
carry `session_id` inside `request`, as the CLI sends it. An account the backend refuses
(licence, tier, verification, client no longer supported) makes the credential DEAD with a
reason an operator can act on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

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

    def account_problem(self, err: BackendError) -> str | None:
        reason = ineligible_reason(err)
        if reason is None:
            return None
        action = action_for(reason)
        return f"Code Assist refused the account ({reason}): {err.message}" + (f" — {action}" if action else "")
