"""The Upstream RPCs' messages as the servicer reads and writes them: a request's model id and
body checked, a chunk (or a batch of them) as a GenerateResponse, a credential's report as a
CredentialStatus."""
from __future__ import annotations

import re
from typing import Any

from google.api import httpbody_pb2

from gemini_cli.upstream.v1 import upstream_pb2

from .code_assist import Chunk
from .errors import InvalidRequest
from .pool import Entry
from .pool_entry import CredentialReport

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_STATES = {"READY": upstream_pb2.CredentialStatus.READY, "COOLING": upstream_pb2.CredentialStatus.COOLING,
           "DEAD": upstream_pb2.CredentialStatus.DEAD, "DISABLED": upstream_pb2.CredentialStatus.DISABLED}
_USAGE_FIELDS = (("promptTokenCount", "prompt_tokens"), ("candidatesTokenCount", "candidates_tokens"),
                 ("thoughtsTokenCount", "thoughts_tokens"), ("totalTokenCount", "total_tokens"),
                 ("cachedContentTokenCount", "cached_tokens"), ("toolUsePromptTokenCount", "tool_use_prompt_tokens"))


def model_id(raw: str) -> str:
    model = raw.strip().removeprefix("models/")
    if not _MODEL_ID.match(model):
        # Never echo a long id: the message travels in gRPC metadata, which has a size limit.
        shown = raw if len(raw) <= 64 else raw[:64] + "…"
        raise InvalidRequest(f"invalid model id {shown!r}" if raw else "model is required")
    return model


def request_body(body: httpbody_pb2.HttpBody) -> bytes:
    if not body.data:
        raise InvalidRequest("request body is required (a Gemini request as JSON)")
    return body.data


def usage_proto(usage: dict[str, Any]) -> upstream_pb2.Usage:
    values = {}
    for src, dst in _USAGE_FIELDS:
        value = usage.get(src)
        if isinstance(value, int) and not isinstance(value, bool):
            values[dst] = value
    return upstream_pb2.Usage(**values)


def response_message(chunk: Chunk, entry: Entry | None) -> upstream_pb2.GenerateResponse:
    msg = upstream_pb2.GenerateResponse()
    # Set in place: chunk=HttpBody(...) would copy the payload twice.
    msg.chunk.content_type = "application/json"
    msg.chunk.data = chunk.data
    if chunk.usage is not None:
        msg.usage.CopyFrom(usage_proto(chunk.usage))
    if entry is not None:  # first message only
        msg.trace_id = chunk.trace_id
        msg.credential_id = entry.cred.id
        msg.credential_kind = entry.cred.kind
    return msg


def credential_status(r: CredentialReport) -> upstream_pb2.CredentialStatus:
    status = upstream_pb2.CredentialStatus(
        id=r.id, kind=r.kind, state=_STATES[r.state], project=r.project, detail=r.detail,
        cooling_until=r.cooling_until, requests=r.requests, failures=r.failures, auth=r.auth,
        priority=r.priority, weight=r.weight, location=r.location, models=list(r.models),
        unsupported_models=list(r.unsupported), last_error=r.last_error, proxied=r.proxy, tier=r.tier)
    for model, (fraction, reset) in sorted(r.quota.items()):
        status.quota.add(model=model, remaining_fraction=fraction, reset_time=reset)
    return status


def batch_message(batch: list[Chunk], entry: Entry | None) -> upstream_pb2.GenerateResponse:
    """One message for the chunks that arrived together (GenerateRequest.coalesce): each in
    `chunks`, in order; the usage of the last chunk that had one (Gemini's is cumulative)."""
    msg = upstream_pb2.GenerateResponse()
    usage = None
    add = msg.chunks.add
    for chunk in batch:
        body = add()
        body.content_type = "application/json"
        body.data = chunk.data
        if chunk.usage is not None:
            usage = chunk.usage
    if usage is not None:
        msg.usage.CopyFrom(usage_proto(usage))
    if entry is not None:  # first message only
        msg.trace_id = batch[0].trace_id
        msg.credential_id = entry.cred.id
        msg.credential_kind = entry.cred.kind
    return msg
